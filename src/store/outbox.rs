//! The raw-data outbox: reports are written here on the request path (cheaply, batched) and
//! delivered by a background sender, so a slow or absent collector never slows requests and
//! back-pressure lives in the database, not in memory.

use std::time::Duration;

use super::{Store, StoreError, duration_ms, on_pool};

/// A report to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxItem {
    /// Unique per report; enqueueing the same key twice stores it once.
    pub idempotency_key: String,
    /// Unix epoch milliseconds.
    pub created_at: i64,
    /// The JSON body to POST.
    pub payload: String,
}

/// A stored report.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: i64,
    pub idempotency_key: String,
    pub created_at: i64,
    pub payload: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

const ROW_COLUMNS: &str =
    "id, idempotency_key, created_at, payload, attempts, next_attempt_at, delivered_at, last_error";

impl Store {
    /// Insert reports in one transaction, due immediately; keys already present are skipped.
    /// Returns how many were new.
    pub async fn enqueue_reports(&self, items: &[NewOutboxItem]) -> Result<u64, StoreError> {
        let inserted = on_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut inserted = 0;
            for item in items {
                inserted += sqlx::query(
                    "INSERT INTO rawdata_outbox (idempotency_key, created_at, payload, next_attempt_at) \
                     VALUES ($1, $2, $3, $2) ON CONFLICT (idempotency_key) DO NOTHING",
                )
                .bind(&item.idempotency_key)
                .bind(item.created_at)
                .bind(&item.payload)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
            inserted
        });
        Ok(inserted)
    }

    /// Claim up to `limit` undelivered reports due at `now` (ms). Claimed rows are leased:
    /// their `next_attempt_at` moves to `now + lease`, so a sender that dies mid-batch does
    /// not lose them and a concurrent claimer does not take them. The outer predicate is
    /// re-checked per row, so on PostgreSQL two concurrent claims never share a row.
    pub async fn claim_due_reports(
        &self,
        now: i64,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let until = now.saturating_add(duration_ms(lease));
        let mut rows = on_pool!(self, pool => {
            sqlx::query_as::<_, OutboxRow>(sqlx::AssertSqlSafe(format!(
                "UPDATE rawdata_outbox SET next_attempt_at = $2 \
                 WHERE delivered_at IS NULL AND next_attempt_at <= $1 AND id IN (\
                   SELECT id FROM rawdata_outbox WHERE delivered_at IS NULL AND next_attempt_at <= $1 \
                   ORDER BY next_attempt_at, id LIMIT $3) \
                 RETURNING {ROW_COLUMNS}"
            )))
            .bind(now)
            .bind(until)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    /// The collector accepted the report.
    pub async fn mark_report_delivered(&self, id: i64, at: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE rawdata_outbox SET delivered_at = $2, attempts = attempts + 1, last_error = NULL WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// A delivery attempt failed; retry at `next_attempt_at` (ms).
    pub async fn mark_report_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE rawdata_outbox SET attempts = attempts + 1, last_error = $2, next_attempt_at = $3 \
                 WHERE id = $1 AND delivered_at IS NULL",
            )
            .bind(id)
            .bind(error)
            .bind(next_attempt_at)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Give a claimed report back without counting an attempt (it was not tried, e.g. the
    /// collector was already found unreachable in this round).
    pub async fn release_report(&self, id: i64, next_attempt_at: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE rawdata_outbox SET next_attempt_at = $2 WHERE id = $1 AND delivered_at IS NULL")
                .bind(id)
                .bind(next_attempt_at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Undelivered reports.
    pub async fn outbox_depth(&self) -> Result<u64, StoreError> {
        let (n,): (i64,) = on_pool!(self, pool => {
            sqlx::query_as("SELECT COUNT(*) FROM rawdata_outbox WHERE delivered_at IS NULL")
                .fetch_one(pool)
                .await?
        });
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Drop undelivered reports created before `cutoff` (ms): past retention they are no
    /// longer worth sending. Returns how many were dropped.
    pub async fn drop_expired_reports(&self, cutoff: i64) -> Result<u64, StoreError> {
        let n = on_pool!(self, pool => {
            sqlx::query("DELETE FROM rawdata_outbox WHERE delivered_at IS NULL AND created_at < $1")
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// Delete delivered reports delivered before `cutoff` (ms); they are kept a while only
    /// so an operator can inspect recent deliveries.
    pub async fn prune_delivered_reports(&self, cutoff: i64) -> Result<u64, StoreError> {
        let n = on_pool!(self, pool => {
            sqlx::query("DELETE FROM rawdata_outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1")
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n)
    }

    /// One report by idempotency key (inspection and tests).
    pub async fn outbox_report(&self, key: &str) -> Result<Option<OutboxRow>, StoreError> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, OutboxRow>(sqlx::AssertSqlSafe(format!(
                "SELECT {ROW_COLUMNS} FROM rawdata_outbox WHERE idempotency_key = $1"
            )))
            .bind(key)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}
