//! Persistence of accepted federation lists, behind a small trait so the refresher does not
//! depend on SQL. The SQL store (table `federation_snapshots`) implements it; tests use
//! [`MemoryStore`].
//!
//! Snapshots hold the exact bytes that were fetched (`raw`), not a re-serialisation: a
//! restarted or second replica re-parses — and for a JWS re-verifies — what the source sent,
//! so a tampered row cannot smuggle in an unsigned list.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use time::OffsetDateTime;

/// One persisted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// List version.
    pub version: i64,
    /// When the list was fetched from (or last confirmed by) its source; drives expiry.
    pub fetched_at: OffsetDateTime,
    /// Source kind: `registration_service`, `vzd_jws`, `file` or `url`.
    pub source: String,
    /// The exact payload fetched (JSON body or compact JWS).
    pub raw: Vec<u8>,
    /// True when the payload is a JWS whose signature and chain verified.
    pub verified: bool,
}

/// A snapshot store failure (unreachable database, constraint error, …).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No store is configured for this operation.
    #[error("no snapshot store is available: {0}")]
    Unavailable(String),
    /// The backend failed.
    #[error("snapshot store: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Held while this process owns a named background job; dropping it releases the lock.
pub type LockGuard = Box<dyn Send>;

/// Where accepted lists are persisted.
pub trait SnapshotStore: Send + Sync {
    /// Append a snapshot (older rows may be pruned by the implementation; `latest` must
    /// return the row with the highest `(version, fetched_at)`).
    fn save<'a>(&'a self, snapshot: &'a SnapshotRecord) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The newest snapshot, if any.
    fn latest(&self) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>>;
    /// Try to take the cluster-wide lock `name` without waiting (PostgreSQL: advisory lock).
    /// `None` = another replica holds it.
    fn try_lock<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<LockGuard>, StoreError>>;
}

/// An in-process store: tests, and single-process setups without a database.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    inner: Arc<Mutex<MemoryInner>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    rows: Vec<SnapshotRecord>,
    locks: HashSet<String>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// All saved rows, oldest first.
    pub fn rows(&self) -> Vec<SnapshotRecord> {
        self.inner
            .lock()
            .map(|g| g.rows.clone())
            .unwrap_or_default()
    }
}

struct MemoryLock {
    store: Arc<Mutex<MemoryInner>>,
    name: String,
}

impl Drop for MemoryLock {
    fn drop(&mut self) {
        if let Ok(mut g) = self.store.lock() {
            g.locks.remove(&self.name);
        }
    }
}

fn poisoned() -> StoreError {
    StoreError::Backend("memory store lock poisoned".into())
}

impl SnapshotStore for MemoryStore {
    fn save<'a>(&'a self, snapshot: &'a SnapshotRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.inner
                .lock()
                .map_err(|_| poisoned())?
                .rows
                .push(snapshot.clone());
            Ok(())
        })
    }

    fn latest(&self) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        Box::pin(async move {
            let g = self.inner.lock().map_err(|_| poisoned())?;
            Ok(g.rows
                .iter()
                .max_by_key(|r| (r.version, r.fetched_at))
                .cloned())
        })
    }

    fn try_lock<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<LockGuard>, StoreError>> {
        Box::pin(async move {
            let mut g = self.inner.lock().map_err(|_| poisoned())?;
            if !g.locks.insert(name.to_owned()) {
                return Ok(None);
            }
            Ok(Some(Box::new(MemoryLock {
                store: self.inner.clone(),
                name: name.to_owned(),
            }) as LockGuard))
        })
    }
}

/// The SQL store (`federation_snapshots`, advisory locks) behind the refresher's seam.
impl SnapshotStore for crate::store::Store {
    fn save<'a>(&'a self, snapshot: &'a SnapshotRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let row = crate::store::NewSnapshot {
                version: snapshot.version,
                fetched_at: unix_millis(snapshot.fetched_at),
                source: snapshot.source.clone(),
                raw_payload: snapshot.raw.clone(),
                verified: snapshot.verified,
            };
            self.save_federation_snapshot(&row).await.map_err(backend)?;
            // Keep a short history for operators; the newest row is all a restart needs.
            self.prune_federation_snapshots(10).await.map_err(backend)?;
            Ok(())
        })
    }

    fn latest(&self) -> BoxFuture<'_, Result<Option<SnapshotRecord>, StoreError>> {
        Box::pin(async move {
            let row = self.latest_federation_snapshot().await.map_err(backend)?;
            Ok(row.map(|row| SnapshotRecord {
                version: row.version,
                fetched_at: from_unix_millis(row.fetched_at),
                source: row.source,
                raw: row.raw_payload,
                verified: row.verified,
            }))
        })
    }

    fn try_lock<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<LockGuard>, StoreError>> {
        Box::pin(async move {
            let guard = crate::store::Store::try_lock(self, name)
                .await
                .map_err(backend)?;
            Ok(guard.map(|g| Box::new(g) as LockGuard))
        })
    }
}

fn backend(e: crate::store::StoreError) -> StoreError {
    StoreError::Backend(Box::new(e))
}

fn unix_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_unix_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: i64, secs: i64) -> SnapshotRecord {
        SnapshotRecord {
            version,
            fetched_at: OffsetDateTime::from_unix_timestamp(secs).unwrap(),
            source: "file".to_owned(),
            raw: b"{}".to_vec(),
            verified: false,
        }
    }

    #[tokio::test]
    async fn latest_is_highest_version_then_newest() {
        let store = MemoryStore::new();
        assert_eq!(store.latest().await.unwrap(), None);
        store.save(&record(2, 10)).await.unwrap();
        store.save(&record(3, 5)).await.unwrap();
        store.save(&record(3, 7)).await.unwrap();
        store.save(&record(1, 99)).await.unwrap();
        assert_eq!(store.latest().await.unwrap(), Some(record(3, 7)));
    }

    #[tokio::test]
    async fn lock_is_exclusive_until_dropped() {
        let store = MemoryStore::new();
        let guard = store.try_lock("refresh").await.unwrap();
        assert!(guard.is_some());
        assert!(store.try_lock("refresh").await.unwrap().is_none());
        assert!(store.try_lock("other").await.unwrap().is_some());
        drop(guard);
        assert!(store.try_lock("refresh").await.unwrap().is_some());
    }
}
