//! Orphaned-room cleanup bookkeeping (A_28564-01): the last decision per room, so operators
//! can see why a room was kept or purged, and when.

use super::{Store, StoreError, on_pool};

/// The outcome of inspecting one room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomDecision {
    /// The room stays (it has messages, members or recent state).
    Keep,
    /// The room is orphaned and was (or is being) purged.
    Delete,
    /// The room is orphaned but `cleanup.dry_run` is set: only logged.
    WouldDelete,
    /// Purging was attempted and failed; retried on the next run.
    DeleteFailed,
}

impl RoomDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            RoomDecision::Keep => "keep",
            RoomDecision::Delete => "delete",
            RoomDecision::WouldDelete => "would_delete",
            RoomDecision::DeleteFailed => "delete_failed",
        }
    }
}

/// One row of `orphaned_rooms`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OrphanedRoomRow {
    pub room_id: String,
    pub first_seen: i64,
    pub last_checked: i64,
    pub decision: String,
    pub reason: String,
    pub deleted_at: Option<i64>,
}

impl Store {
    /// Record the decision for a room checked at `now` (ms); `first_seen` keeps the time
    /// the room was first inspected.
    pub async fn record_room_decision(
        &self,
        room_id: &str,
        decision: RoomDecision,
        reason: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO orphaned_rooms (room_id, first_seen, last_checked, decision, reason) \
                 VALUES ($1, $2, $2, $3, $4) \
                 ON CONFLICT (room_id) DO UPDATE SET \
                   last_checked = excluded.last_checked, decision = excluded.decision, reason = excluded.reason",
            )
            .bind(room_id)
            .bind(now)
            .bind(decision.as_str())
            .bind(reason)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Note that a room was purged at `at` (ms).
    pub async fn mark_room_deleted(&self, room_id: &str, at: i64) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE orphaned_rooms SET deleted_at = $2, decision = 'delete' WHERE room_id = $1")
                .bind(room_id)
                .bind(at)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The bookkeeping row of one room.
    pub async fn orphaned_room(
        &self,
        room_id: &str,
    ) -> Result<Option<OrphanedRoomRow>, StoreError> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, OrphanedRoomRow>(
                "SELECT room_id, first_seen, last_checked, decision, reason, deleted_at \
                 FROM orphaned_rooms WHERE room_id = $1",
            )
            .bind(room_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// All bookkeeping rows, ordered by room id.
    pub async fn orphaned_rooms(&self) -> Result<Vec<OrphanedRoomRow>, StoreError> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, OrphanedRoomRow>(
                "SELECT room_id, first_seen, last_checked, decision, reason, deleted_at \
                 FROM orphaned_rooms ORDER BY room_id",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }
}
