//! The in-memory federation list: an immutable snapshot behind an atomic pointer.
//!
//! Readers (every federation check on every listener) load the current `Arc` without locks;
//! a refresh builds a whole new snapshot and swaps it in, so readers never block and never see
//! a half-updated list.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// One federated domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainEntry {
    /// The domain as listed (lower-cased).
    pub domain: String,
    /// Health-insurance domain for insured persons (TI-M ePA).
    pub is_insurance: bool,
    /// Telematik-ID of the organisation.
    pub telematik_id: Option<String>,
    /// IK numbers (VZD lists only).
    pub ik: Vec<String>,
}

/// Where a snapshot came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListSource {
    RegistrationService,
    VzdJws,
    File,
    Store,
}

/// An immutable federation list with O(1) lookups.
#[derive(Debug, Clone)]
pub struct FederationList {
    pub version: i64,
    /// When the list was fetched from its source (not when it was loaded from the store).
    pub fetched_at: OffsetDateTime,
    /// True when a signature over the list was verified (VZD JWS).
    pub verified: bool,
    pub source: ListSource,
    domains: HashMap<String, DomainEntry>,
    by_ik: HashMap<String, String>,
}

impl FederationList {
    pub fn new(
        version: i64,
        fetched_at: OffsetDateTime,
        verified: bool,
        source: ListSource,
        entries: impl IntoIterator<Item = DomainEntry>,
    ) -> Self {
        let mut domains = HashMap::new();
        let mut by_ik = HashMap::new();
        for mut entry in entries {
            entry.domain = entry.domain.trim().to_ascii_lowercase();
            for ik in &entry.ik {
                by_ik
                    .entry(ik.clone())
                    .or_insert_with(|| entry.domain.clone());
            }
            domains.insert(entry.domain.clone(), entry);
        }
        Self {
            version,
            fetched_at,
            verified,
            source,
            domains,
            by_ik,
        }
    }

    /// Look up a Matrix server name: case-insensitive, port stripped (`hs1.test:8448` →
    /// `hs1.test`), IPv6 literals kept in brackets.
    pub fn get(&self, server_name: &str) -> Option<&DomainEntry> {
        let host = domain_of(server_name);
        if host.bytes().any(|b| b.is_ascii_uppercase()) {
            self.domains.get(&host.to_ascii_lowercase())
        } else {
            self.domains.get(host)
        }
    }

    pub fn contains(&self, server_name: &str) -> bool {
        self.get(server_name).is_some()
    }

    /// The domain that lists an IK number.
    pub fn find_by_ik(&self, ik: &str) -> Option<&DomainEntry> {
        self.by_ik.get(ik).and_then(|d| self.domains.get(d))
    }

    pub fn len(&self) -> usize {
        self.domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    pub fn insurance_count(&self) -> usize {
        self.domains.values().filter(|d| d.is_insurance).count()
    }

    pub fn entries(&self) -> impl Iterator<Item = &DomainEntry> {
        self.domains.values()
    }

    /// Age of the list at `now`.
    pub fn age(&self, now: OffsetDateTime) -> Duration {
        let age = now - self.fetched_at;
        Duration::try_from(age).unwrap_or(Duration::ZERO)
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The host part of a server name: port stripped, IPv6 brackets kept.
pub fn domain_of(server_name: &str) -> &str {
    let s = server_name.trim();
    if s.starts_with('[') {
        return match s.find(']') {
            Some(end) => &s[..=end],
            None => s,
        };
    }
    match s.rfind(':') {
        Some(idx) if s[idx + 1..].bytes().all(|b| b.is_ascii_digit()) => &s[..idx],
        _ => s,
    }
}

/// Result of a membership check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Membership {
    /// Listed; `is_insurance` from the list.
    Member { is_insurance: bool },
    /// Not listed in a valid, fresh list.
    NotMember,
    /// No usable list (never loaded, or expired): fail closed.
    Unavailable(String),
}

/// Triggers a refresh when a domain is missing (A_25537). Implemented by the refresher.
pub trait RefreshOnMiss: Send + Sync {
    /// Refresh now if allowed by the rate limit; resolves when done (or skipped).
    fn refresh(&self) -> futures_util::future::BoxFuture<'_, ()>;
}

/// State of the list, for readiness and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListState {
    pub ready: bool,
    pub reason: String,
    pub version: Option<i64>,
    pub domains: usize,
    pub age_seconds: Option<u64>,
}

struct Inner {
    current: ArcSwapOption<FederationList>,
    /// Why there is no list although there was one (its signer was revoked).
    withdrawn: ArcSwapOption<String>,
    /// `federation.max_age` in milliseconds; a reload may change it.
    max_age_ms: AtomicU64,
    refresher: ArcSwapOption<Box<dyn RefreshOnMiss>>,
}

/// Shared handle to the current list; cheap to clone.
#[derive(Clone)]
pub struct FederationHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FederationHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FederationHandle")
            .field("state", &self.state())
            .finish()
    }
}

impl FederationHandle {
    pub fn new(max_age: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                current: ArcSwapOption::empty(),
                withdrawn: ArcSwapOption::empty(),
                max_age_ms: AtomicU64::new(duration_ms(max_age)),
                refresher: ArcSwapOption::empty(),
            }),
        }
    }

    /// A handle already holding `list` (tests, file sources).
    pub fn with_list(max_age: Duration, list: FederationList) -> Self {
        let handle = Self::new(max_age);
        handle.replace(list);
        handle
    }

    /// Install the refresh-on-miss hook.
    pub fn set_refresher(&self, refresher: Box<dyn RefreshOnMiss>) {
        self.inner.refresher.store(Some(Arc::new(refresher)));
    }

    /// Remove the refresh-on-miss hook (a reload turned `federation.refresh_on_miss` off).
    pub fn clear_refresher(&self) {
        self.inner.refresher.store(None);
    }

    /// How old a list may get before federation fails closed.
    pub fn max_age(&self) -> Duration {
        Duration::from_millis(self.inner.max_age_ms.load(Ordering::Relaxed))
    }

    /// Change `federation.max_age` (a reload); the next check uses it.
    pub fn set_max_age(&self, max_age: Duration) {
        self.inner
            .max_age_ms
            .store(duration_ms(max_age), Ordering::Relaxed);
    }

    /// The current snapshot, if any (may be expired; see `fresh`).
    pub fn snapshot(&self) -> Option<Arc<FederationList>> {
        self.inner.current.load_full()
    }

    /// The current snapshot if it is within `max_age`.
    pub fn fresh(&self) -> Result<Arc<FederationList>, String> {
        match self.snapshot() {
            None => Err(match self.inner.withdrawn.load_full() {
                Some(reason) => format!("federation list withdrawn: {reason}"),
                None => "no federation list loaded yet".to_owned(),
            }),
            Some(list) => {
                let age = list.age(OffsetDateTime::now_utc());
                let max_age = self.max_age();
                if age > max_age {
                    Err(format!(
                        "federation list version {} is expired ({}s old, max {}s)",
                        list.version,
                        age.as_secs(),
                        max_age.as_secs()
                    ))
                } else {
                    Ok(list)
                }
            }
        }
    }

    /// Swap in a new list; readers see either the old or the new one.
    pub fn replace(&self, list: FederationList) {
        self.replace_shared(Arc::new(list));
    }

    /// [`FederationHandle::replace`] with a list that is already shared.
    pub fn replace_shared(&self, list: Arc<FederationList>) {
        self.inner.current.store(Some(list));
        self.inner.withdrawn.store(None);
    }

    /// Drop the current list (fail closed), e.g. because its signer was revoked; federation
    /// is refused and readiness is false, saying `reason`, until a new list arrives.
    pub fn withdraw(&self, reason: String) {
        self.inner.withdrawn.store(Some(Arc::new(reason)));
        self.inner.current.store(None);
    }

    /// Membership without refresh-on-miss (hot path).
    pub fn lookup(&self, server_name: &str) -> Membership {
        match self.fresh() {
            Err(reason) => Membership::Unavailable(reason),
            Ok(list) => match list.get(server_name) {
                Some(entry) => Membership::Member {
                    is_insurance: entry.is_insurance,
                },
                None => Membership::NotMember,
            },
        }
    }

    /// Membership with one rate-limited refresh before refusing an unknown domain (A_25537).
    pub async fn check(&self, server_name: &str) -> Membership {
        let first = self.lookup(server_name);
        if matches!(first, Membership::Member { .. }) {
            return first;
        }
        let refresher = self.inner.refresher.load_full();
        match refresher {
            Some(refresher) => {
                refresher.refresh().await;
                self.lookup(server_name)
            }
            None => first,
        }
    }

    pub fn state(&self) -> ListState {
        let snapshot = self.snapshot();
        let (ready, reason) = match self.fresh() {
            Ok(list) => (true, format!("version {} loaded", list.version)),
            Err(reason) => (false, reason),
        };
        let now = OffsetDateTime::now_utc();
        ListState {
            ready,
            reason,
            version: snapshot.as_ref().map(|l| l.version),
            domains: snapshot.as_ref().map(|l| l.len()).unwrap_or(0),
            age_seconds: snapshot.as_ref().map(|l| l.age(now).as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(domain: &str, insurance: bool, ik: &[&str]) -> DomainEntry {
        DomainEntry {
            domain: domain.to_owned(),
            is_insurance: insurance,
            telematik_id: None,
            ik: ik.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn list_at(fetched_at: OffsetDateTime) -> FederationList {
        FederationList::new(
            7,
            fetched_at,
            false,
            ListSource::File,
            vec![
                entry("HS1.test", false, &[]),
                entry("kasse.example", true, &["101575519"]),
            ],
        )
    }

    #[test]
    fn lookup_is_case_insensitive_and_strips_the_port() {
        let list = list_at(OffsetDateTime::now_utc());
        assert!(list.contains("hs1.test"));
        assert!(list.contains("HS1.Test:8448"));
        assert!(!list.contains("hs1.test.evil"));
        assert!(!list.contains("evil.hs1.test"));
        assert_eq!(
            list.find_by_ik("101575519").unwrap().domain,
            "kasse.example"
        );
        assert_eq!(list.insurance_count(), 1);
    }

    #[test]
    fn domain_of_handles_ports_and_ipv6() {
        assert_eq!(domain_of("a.b:8448"), "a.b");
        assert_eq!(domain_of("a.b"), "a.b");
        assert_eq!(domain_of("[::1]:8448"), "[::1]");
        assert_eq!(domain_of("[::1]"), "[::1]");
    }

    #[test]
    fn expired_list_fails_closed() {
        let old = OffsetDateTime::now_utc() - time::Duration::hours(73);
        let handle = FederationHandle::with_list(Duration::from_secs(72 * 3600), list_at(old));
        assert!(matches!(
            handle.lookup("hs1.test"),
            Membership::Unavailable(_)
        ));
        assert!(!handle.state().ready);
        let fresh = FederationHandle::with_list(
            Duration::from_secs(72 * 3600),
            list_at(OffsetDateTime::now_utc()),
        );
        assert_eq!(
            fresh.lookup("kasse.example:443"),
            Membership::Member { is_insurance: true }
        );
        assert_eq!(fresh.lookup("other.example"), Membership::NotMember);
    }

    #[test]
    fn empty_handle_is_unavailable() {
        let handle = FederationHandle::new(Duration::from_secs(60));
        assert!(matches!(handle.lookup("x"), Membership::Unavailable(_)));
    }
}
