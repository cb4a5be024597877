//! Keeps the in-memory federation list current.
//!
//! - Polls the configured source every `federation.refresh_interval` plus a random share of
//!   `federation.refresh_jitter` (so replicas do not hit the source in lock-step).
//! - A fetch that fails, does not parse, does not verify or is older than the held list
//!   changes nothing: the previous good list keeps serving (logged, counted in
//!   `timproxy_federation_fetches_total{outcome}`).
//! - A "not modified" answer (304 / 204 / same version) *confirms* the held list, which
//!   restarts its age: `federation.max_age` bounds how long a list may go unconfirmed, not
//!   how long the publisher may go without changing it.
//! - Refresh-on-miss (A_25537): a lookup of an unknown domain may trigger one fetch before
//!   the domain is refused, at most once per `federation.min_refresh_gap`; concurrent misses
//!   wait for the same fetch instead of starting their own.
//! - With a [`SnapshotStore`]: accepted lists are persisted (exact bytes), loaded on start so a
//!   restart serves the last good list at once, and only the holder of the store lock
//!   `federation_refresh` fetches; other replicas pick new snapshots up from the store.
//! - The signer of a signed list is checked with OCSP (`federation.ocsp`, [`super::ocsp`])
//!   before the list is taken or confirmed: `revoked` refuses it and withdraws a held list from
//!   the same signer at once (fail closed: federation refused, readiness false); `unknown`, an
//!   unreachable responder or an answer that does not verify refuse it, and the last good list
//!   serves until `federation.max_age` (it is not confirmed meanwhile). A snapshot loaded from
//!   the store was checked when it was fetched: only `revoked` keeps it out.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use rand::Rng as _;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::FederationError;
use super::jws::{JwsVerifier, TrustAnchors, VerifiedJws};
use super::list::{FederationHandle, FederationList, ListSource, RefreshOnMiss};
use super::ocsp::{CertStatus, OcspChecker};
use super::source::{FetchResult, ListFetcher, SourceSpec, decode, list_source};
use super::store::{SnapshotRecord, SnapshotStore};
use crate::config::{Config, FederationSource};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// Name of the store lock that elects the fetching replica.
pub const LOCK_NAME: &str = "federation_refresh";

/// What one refresh did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchOutcome {
    /// A newer list was fetched, verified and swapped in.
    Updated { version: i64, domains: usize },
    /// The source has nothing newer; the held list (if any) was confirmed.
    NotModified { version: Option<i64> },
    /// Another replica's snapshot was taken over from the store.
    PickedUp { version: i64 },
    /// The store had nothing newer than the held list.
    Unchanged,
    /// Refresh-on-miss skipped: rate-limited, or a concurrent fetch already answered it.
    Skipped,
}

impl FetchOutcome {
    fn label(&self) -> &'static str {
        match self {
            FetchOutcome::Updated { .. } => "updated",
            FetchOutcome::NotModified { .. } => "not_modified",
            FetchOutcome::PickedUp { .. } => "picked_up",
            FetchOutcome::Unchanged => "unchanged",
            FetchOutcome::Skipped => "skipped",
        }
    }
}

/// The bytes behind the held list, kept so a confirmation can be persisted for other
/// replicas (their copy would otherwise expire while the list does not change).
#[derive(Clone)]
struct HeldRaw {
    version: i64,
    source: String,
    raw: Vec<u8>,
    verified: bool,
    /// Who signed it (signed lists), for the revocation check on confirmation.
    signer: Option<Signer>,
}

/// The certificate that signed a list and its issuer (DER), as the JWS verification found them.
#[derive(Clone, PartialEq, Eq)]
struct Signer {
    subject: String,
    der: Vec<u8>,
    issuer_der: Vec<u8>,
}

impl Signer {
    fn of(verified: &VerifiedJws) -> Self {
        Self {
            subject: verified.signer.clone(),
            der: verified.signer_der.clone(),
            issuer_der: verified.issuer_der.clone(),
        }
    }
}

#[derive(Default)]
struct FetchState {
    /// Start of the last fetch attempt (periodic or on miss).
    last_attempt: Option<Instant>,
    /// `fetched_at` of the last row this process wrote.
    last_persisted: Option<OffsetDateTime>,
    held: Option<HeldRaw>,
}

/// Background refresher of one [`FederationHandle`].
pub struct Refresher {
    fetcher: ListFetcher,
    verifier: JwsVerifier,
    /// `None` when `federation.ocsp.enabled` is off.
    ocsp: Option<OcspChecker>,
    handle: FederationHandle,
    store: Option<Arc<dyn SnapshotStore>>,
    metrics: Arc<Metrics>,
    interval: Duration,
    jitter: Duration,
    min_refresh_gap: Duration,
    max_age: Duration,
    /// Serialises fetches; waiting on it is how concurrent misses coalesce.
    state: Mutex<FetchState>,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("source", self.fetcher.spec())
            .field("interval", &self.interval)
            .finish()
    }
}

impl Refresher {
    /// Build from the configuration and, when `federation.refresh_on_miss` is set, install
    /// the refresh-on-miss hook on `handle`.
    pub fn new(
        config: &Config,
        handle: FederationHandle,
        store: Option<Arc<dyn SnapshotStore>>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, FederationError> {
        let spec = SourceSpec::from_config(config)?;
        let fed = &config.federation;
        if fed.source == FederationSource::VzdJws && fed.trust_anchors.is_empty() {
            return Err(FederationError::Config(
                "federation.trust_anchors must name at least one PEM file for source vzd_jws"
                    .to_owned(),
            ));
        }
        let anchors = TrustAnchors::from_pem_files(&fed.trust_anchors)?;
        let fetcher = ListFetcher::new(spec, config.registration_service.timeout)?;
        let ocsp = if fed.ocsp.enabled {
            Some(OcspChecker::new(&fed.ocsp)?)
        } else {
            None
        };
        let refresher = Arc::new(Self {
            fetcher,
            verifier: JwsVerifier::new(anchors, fed.allow_es256),
            ocsp,
            handle: handle.clone(),
            store,
            metrics,
            interval: fed.refresh_interval,
            jitter: fed.refresh_jitter,
            min_refresh_gap: fed.min_refresh_gap,
            max_age: fed.max_age,
            state: Mutex::new(FetchState::default()),
        });
        if fed.refresh_on_miss {
            handle.set_refresher(Box::new(MissHook(Arc::downgrade(&refresher))));
        }
        Ok(refresher)
    }

    /// Load the newest persisted snapshot (re-parsed and, for a JWS, re-verified now), so a
    /// restart serves the last good list before the first fetch. Returns its version.
    pub async fn load_persisted(&self) -> Result<Option<i64>, FederationError> {
        let mut state = self.state.lock().await;
        let outcome = self.pick_up(&mut state).await?;
        self.update_gauges();
        Ok(match outcome {
            FetchOutcome::PickedUp { version } => Some(version),
            _ => None,
        })
    }

    /// Fetch from the source now (ignoring the store lock and the miss rate limit).
    pub async fn fetch_once(&self) -> Result<FetchOutcome, FederationError> {
        let mut state = self.state.lock().await;
        let result = self.fetch_locked(&mut state).await;
        self.record(&result);
        result
    }

    /// Run the polling loop until `shutdown` fires. The first round runs immediately.
    pub fn spawn(self: &Arc<Self>, mut shutdown: Shutdown) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = this.run_round() => {}
                }
                let delay = this.interval + this.jitter_delay();
                tokio::select! {
                    _ = shutdown.wait() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            tracing::debug!("federation refresher stopped");
        })
    }

    fn jitter_delay(&self) -> Duration {
        let max = u64::try_from(self.jitter.as_millis()).unwrap_or(u64::MAX);
        if max == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(rand::rng().random_range(0..=max))
    }

    /// One polling round as the loop runs it: the store-lock holder fetches, other replicas
    /// read the store. Outcomes are logged and counted; the result is returned for callers
    /// that want it (tests, a manual refresh).
    pub async fn run_round(&self) -> Result<FetchOutcome, FederationError> {
        let mut state = self.state.lock().await;
        let result = self.round_locked(&mut state).await;
        self.record(&result);
        result
    }

    /// Refresh-on-miss: coalesced and rate-limited.
    async fn refresh_on_miss(&self) {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        // A fetch that started after we asked answered us too; an older one within the gap
        // is recent enough.
        if let Some(last) = state.last_attempt
            && (last >= asked || last.elapsed() < self.min_refresh_gap)
        {
            self.record(&Ok(FetchOutcome::Skipped));
            return;
        }
        let result = self.round_locked(&mut state).await;
        self.record(&result);
    }

    /// One round: the store-lock holder fetches, the others read the store.
    async fn round_locked(&self, state: &mut FetchState) -> Result<FetchOutcome, FederationError> {
        let Some(store) = &self.store else {
            return self.fetch_locked(state).await;
        };
        match store.try_lock(LOCK_NAME).await {
            Ok(Some(guard)) => {
                let result = self.fetch_locked(state).await;
                drop(guard);
                result
            }
            Ok(None) => {
                state.last_attempt = Some(Instant::now());
                self.pick_up(state).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "federation: store lock unavailable; fetching without coordination");
                self.fetch_locked(state).await
            }
        }
    }

    async fn fetch_locked(&self, state: &mut FetchState) -> Result<FetchOutcome, FederationError> {
        state.last_attempt = Some(Instant::now());
        let current = self.handle.snapshot();
        let have = current.as_ref().map(|l| l.version);
        let download = match self.fetcher.fetch(have).await? {
            FetchResult::NotModified => {
                let now = OffsetDateTime::now_utc();
                // Vouched for again only while its signer is not revoked.
                if let Some(signer) = state.held.as_ref().and_then(|h| h.signer.clone()) {
                    self.check_signer(state, &signer, now).await?;
                }
                self.confirm(state, now).await;
                return Ok(FetchOutcome::NotModified { version: have });
            }
            FetchResult::Fetched(download) => download,
        };
        let now = OffsetDateTime::now_utc();
        let spec = self.fetcher.spec();
        let decoded = decode(
            &download.raw,
            &self.verifier,
            spec.requires_signature(),
            now,
        )?;
        let signer = decoded.signature.as_ref().map(Signer::of);
        if let Some(signer) = &signer {
            self.check_signer(state, signer, now).await?;
        }
        let version = decoded.list.version;
        if let Some(have) = have {
            if version < have {
                return Err(FederationError::NotNewer { got: version, have });
            }
            if version == have {
                self.confirm(state, now).await;
                return Ok(FetchOutcome::NotModified {
                    version: Some(version),
                });
            }
        }
        let verified = decoded.signature.is_some();
        if let Some(sig) = &decoded.signature {
            tracing::info!(version, alg = %sig.alg, signer = %sig.signer, anchor = %sig.anchor, "federation: list signature verified");
        }
        let domains = decoded.list.entries.len();
        let list = FederationList::new(
            version,
            now,
            verified,
            list_source(spec.kind(), download.format),
            decoded.list.entries,
        );
        self.handle.replace(list);
        tracing::info!(version, domains, source = %spec.describe(), "federation: list updated");
        let held = HeldRaw {
            version,
            source: spec.kind().to_owned(),
            raw: download.raw,
            verified,
            signer,
        };
        self.persist(state, &held, now).await;
        state.held = Some(held);
        Ok(FetchOutcome::Updated { version, domains })
    }

    /// The source vouched for the held list again: restart its age (and tell the store
    /// now and then, so replicas that only read the store do not see it expire).
    async fn confirm(&self, state: &mut FetchState, now: OffsetDateTime) {
        let Some(current) = self.handle.snapshot() else {
            return;
        };
        let mut confirmed = (*current).clone();
        confirmed.fetched_at = now;
        self.handle.replace(confirmed);
        let due = state
            .last_persisted
            .is_none_or(|last| now - last >= self.max_age / 4);
        if due
            && let Some(held) = state.held.clone()
            && held.version == current.version
        {
            self.persist(state, &held, now).await;
        }
    }

    async fn persist(&self, state: &mut FetchState, held: &HeldRaw, now: OffsetDateTime) {
        let Some(store) = &self.store else {
            return;
        };
        let record = SnapshotRecord {
            version: held.version,
            fetched_at: now,
            source: held.source.clone(),
            raw: held.raw.clone(),
            verified: held.verified,
        };
        match store.save(&record).await {
            Ok(()) => state.last_persisted = Some(now),
            Err(e) => {
                tracing::warn!(error = %e, version = held.version, "federation: could not persist the list; it is still served from memory")
            }
        }
    }

    /// Adopt the store's newest snapshot when it is newer than (or confirms) the held list.
    async fn pick_up(&self, state: &mut FetchState) -> Result<FetchOutcome, FederationError> {
        let Some(store) = &self.store else {
            return Ok(FetchOutcome::Unchanged);
        };
        let Some(record) = store.latest().await? else {
            return Ok(FetchOutcome::Unchanged);
        };
        let current = self.handle.snapshot();
        if let Some(current) = &current {
            if record.version < current.version
                || (record.version == current.version && record.fetched_at <= current.fetched_at)
            {
                return Ok(FetchOutcome::Unchanged);
            }
            if record.version == current.version {
                let mut confirmed = (**current).clone();
                confirmed.fetched_at = record.fetched_at;
                self.handle.replace(confirmed);
                return Ok(FetchOutcome::PickedUp {
                    version: record.version,
                });
            }
        }
        let (list, signer) = self.adopt(&record)?;
        if let Some(signer) = &signer {
            self.check_stored_signer(signer).await?;
        }
        let version = list.version;
        tracing::info!(
            version,
            domains = list.len(),
            "federation: list loaded from the store"
        );
        self.handle.replace(list);
        state.held = Some(HeldRaw {
            version,
            source: record.source,
            raw: record.raw,
            verified: record.verified,
            signer,
        });
        state.last_persisted = Some(record.fetched_at);
        Ok(FetchOutcome::PickedUp { version })
    }

    /// Re-parse (and for a JWS re-verify, as of now) a persisted snapshot.
    fn adopt(
        &self,
        record: &SnapshotRecord,
    ) -> Result<(FederationList, Option<Signer>), FederationError> {
        let require_signature = record.verified || record.source == "vzd_jws";
        let decoded = decode(
            &record.raw,
            &self.verifier,
            require_signature,
            OffsetDateTime::now_utc(),
        )?;
        if decoded.list.version != record.version {
            return Err(FederationError::Parse(format!(
                "stored snapshot says version {} but its payload has {}",
                record.version, decoded.list.version
            )));
        }
        let signer = decoded.signature.as_ref().map(Signer::of);
        let list = FederationList::new(
            decoded.list.version,
            record.fetched_at,
            decoded.signature.is_some(),
            ListSource::Store,
            decoded.list.entries,
        );
        Ok((list, signer))
    }

    /// The OCSP verdict on a list's signer before the list is taken or confirmed. `revoked`
    /// also withdraws the held list when the same signer signed it (fail closed).
    async fn check_signer(
        &self,
        state: &mut FetchState,
        signer: &Signer,
        now: OffsetDateTime,
    ) -> Result<(), FederationError> {
        let Some(ocsp) = &self.ocsp else {
            return Ok(());
        };
        let answer = match ocsp.status(&signer.der, &signer.issuer_der, now).await {
            Ok(answer) => answer,
            Err(e) => {
                Metrics::outcome(&self.metrics.federation_ocsp, "error");
                return Err(FederationError::Ocsp(e));
            }
        };
        let label = if answer.cached {
            "cached"
        } else {
            answer.status.label()
        };
        Metrics::outcome(&self.metrics.federation_ocsp, label);
        match answer.status {
            CertStatus::Good => {
                tracing::debug!(signer = %signer.subject, responder = %answer.responder, cached = answer.cached, valid_until = %answer.valid_until, "federation: OCSP says the list signer is good");
                Ok(())
            }
            CertStatus::Revoked { at, reason } => {
                let error = FederationError::SignerRevoked {
                    signer: signer.subject.clone(),
                    at,
                    responder: answer.responder.clone(),
                };
                if state
                    .held
                    .as_ref()
                    .is_some_and(|held| held.signer.as_ref() == Some(signer))
                {
                    tracing::error!(signer = %signer.subject, revoked_at = %at, reason = ?reason, "federation: the held list's signer is revoked; list withdrawn, federation refused until a list from a valid signer arrives");
                    self.handle.withdraw(error.to_string());
                    state.held = None;
                }
                Err(error)
            }
            CertStatus::Unknown => Err(FederationError::SignerUnknown {
                signer: signer.subject.clone(),
                responder: answer.responder,
            }),
        }
    }

    /// A stored snapshot was checked when it was fetched; a revoked signer still keeps it
    /// out, anything short of an answer does not (it is the last good list).
    async fn check_stored_signer(&self, signer: &Signer) -> Result<(), FederationError> {
        let Some(ocsp) = &self.ocsp else {
            return Ok(());
        };
        match ocsp
            .status(&signer.der, &signer.issuer_der, OffsetDateTime::now_utc())
            .await
        {
            Ok(answer) => {
                Metrics::outcome(&self.metrics.federation_ocsp, answer.status.label());
                if let CertStatus::Revoked { at, .. } = answer.status {
                    return Err(FederationError::SignerRevoked {
                        signer: signer.subject.clone(),
                        at,
                        responder: answer.responder,
                    });
                }
                Ok(())
            }
            Err(e) => {
                Metrics::outcome(&self.metrics.federation_ocsp, "error");
                tracing::warn!(error = %e, signer = %signer.subject, "federation: stored list's signer not checked now; it was checked when fetched");
                Ok(())
            }
        }
    }

    fn record(&self, result: &Result<FetchOutcome, FederationError>) {
        let label = match result {
            Ok(outcome) => outcome.label(),
            Err(e) => {
                if e.is_rejection() {
                    tracing::error!(error = %e, source = %self.fetcher.spec().describe(), "federation: list rejected; keeping the previous list");
                } else {
                    tracing::warn!(error = %e, source = %self.fetcher.spec().describe(), "federation: fetch failed; keeping the previous list");
                }
                e.outcome()
            }
        };
        Metrics::outcome(&self.metrics.federation_fetches, label);
        self.update_gauges();
    }

    /// Refresh the list gauges (also called on every poll so the age keeps moving).
    pub fn update_gauges(&self) {
        self.metrics.observe_federation_list(&self.handle.state());
    }
}

/// The hook installed on the handle; weak so the handle does not keep the refresher alive.
struct MissHook(Weak<Refresher>);

impl RefreshOnMiss for MissHook {
    fn refresh(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(refresher) = self.0.upgrade() {
                refresher.refresh_on_miss().await;
            }
        })
    }
}
