//! Federation list snapshots: the last accepted lists, so a restart serves the last good
//! list before the first fetch completes and other replicas pick up a new list.

use super::{Store, StoreError, on_pool};

/// A list to store. Only accepted lists are stored (rejected ones are logged, not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSnapshot {
    /// Version reported by the source (registration service `version`, VZD list version).
    pub version: i64,
    /// When it was fetched, Unix epoch milliseconds.
    pub fetched_at: i64,
    /// Where it came from, e.g. the source URL or `file:…`.
    pub source: String,
    /// The payload exactly as received (JSON or JWS), re-parsed on load.
    pub raw_payload: Vec<u8>,
    /// Whether a signature and certificate chain were verified (VZD JWS).
    pub verified: bool,
}

/// A stored snapshot.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SnapshotRow {
    pub id: i64,
    pub version: i64,
    pub fetched_at: i64,
    pub source: String,
    pub raw_payload: Vec<u8>,
    pub verified: bool,
}

impl Store {
    /// Store an accepted list; returns its row id.
    pub async fn save_federation_snapshot(&self, snap: &NewSnapshot) -> Result<i64, StoreError> {
        let (id,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as(
                "INSERT INTO federation_snapshots (version, fetched_at, source, raw_payload, verified) \
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(snap.version)
            .bind(snap.fetched_at)
            .bind(&snap.source)
            .bind(&snap.raw_payload)
            .bind(snap.verified)
            .fetch_one(pool)
            .await?
        });
        Ok(id)
    }

    /// The newest stored list: highest version, then most recently fetched.
    pub async fn latest_federation_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, SnapshotRow>(
                "SELECT id, version, fetched_at, source, raw_payload, verified \
                 FROM federation_snapshots ORDER BY version DESC, fetched_at DESC, id DESC LIMIT 1",
            )
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Delete all but the newest `keep` snapshots (by the same order as
    /// [`Store::latest_federation_snapshot`]); returns how many were deleted.
    pub async fn prune_federation_snapshots(&self, keep: u32) -> Result<u64, StoreError> {
        let keep = i64::from(keep);
        let done = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM federation_snapshots WHERE id NOT IN (\
                   SELECT id FROM federation_snapshots \
                   ORDER BY version DESC, fetched_at DESC, id DESC LIMIT $1)",
            )
            .bind(keep)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done)
    }
}
