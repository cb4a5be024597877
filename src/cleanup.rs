//! Orphaned-room cleanup (A_28564-01; digest §3.2, fix §12 item 11).
//!
//! Rooms that nobody uses any more — at most one joined member (and that one the creator),
//! no message ever sent, and no state change for `cleanup.min_age` — are purged through the
//! Synapse admin API. Unlike the reference this scans the whole room history (not only the
//! last 50 events), defaults to 14 days, and uses the v2 delete API. Every decision is
//! recorded in the store's `orphaned_rooms` table; with `cleanup.dry_run` nothing is
//! deleted. With several replicas an advisory lock makes one of them run the job.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::task::JoinHandle;
use url::Url;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::{RoomDecision, Store, StoreError, duration_ms, now_ms};

/// Name of the advisory lock held while a cleanup run is in progress.
pub const CLEANUP_LOCK: &str = "orphaned-room-cleanup";
/// Rooms per page of the room list, events per page of a room's history.
const PAGE_SIZE: u32 = 100;
/// Upper bound of history pages read per room, so a pathological room cannot stall the job.
const MAX_HISTORY_PAGES: usize = 100_000;
/// Timeout of one admin API call.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a cleanup run failed as a whole (per-room failures are counted, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error(
        "no homeserver admin token configured (homeserver.admin_token or homeserver.admin_token_file)"
    )]
    NoToken,
    #[error("homeserver admin API base URL {0} cannot carry a path")]
    BadBaseUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("admin API {what} unreachable: {reason}")]
    Unreachable { what: String, reason: String },
    #[error("admin API {what} answered {status}")]
    Status { what: String, status: u16 },
    #[error("admin API {what} returned an unexpected body: {reason}")]
    BadBody { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CleanupSummary {
    /// Rooms listed by the homeserver.
    pub scanned: u64,
    /// Rooms with more than one joined member (not inspected further).
    pub active: u64,
    /// Inspected rooms that stay.
    pub kept: u64,
    /// Rooms purged.
    pub deleted: u64,
    /// Rooms that would have been purged (dry run).
    pub would_delete: u64,
    /// Rooms whose inspection or purge failed (retried next run).
    pub errors: u64,
}

#[derive(Debug, Deserialize)]
struct RoomList {
    #[serde(default)]
    rooms: Vec<RoomEntry>,
    #[serde(default)]
    next_batch: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct RoomEntry {
    room_id: String,
    #[serde(default)]
    joined_members: u64,
    #[serde(default)]
    creator: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessagesPage {
    #[serde(default)]
    chunk: Vec<Value>,
    #[serde(default)]
    end: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StateResponse {
    #[serde(default)]
    state: Vec<Value>,
}

/// The admin API client of one run.
struct Admin {
    client: reqwest::Client,
    base: Url,
    token: String,
}

impl Admin {
    /// `base` + path segments, each percent-encoded (room ids contain `!` and `:`).
    fn url(&self, segments: &[&str]) -> Result<Url, CleanupError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| CleanupError::BadBaseUrl(self.base.to_string()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        url: Url,
    ) -> Result<T, CleanupError> {
        let response = self
            .client
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CleanupError::Unreachable {
                what: what.to_owned(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(CleanupError::Status {
                what: what.to_owned(),
                status: status.as_u16(),
            });
        }
        response.json().await.map_err(|e| CleanupError::BadBody {
            what: what.to_owned(),
            reason: e.without_url().to_string(),
        })
    }

    async fn list_rooms(&self, from: u64) -> Result<RoomList, CleanupError> {
        let mut url = self.url(&["_synapse", "admin", "v1", "rooms"])?;
        url.query_pairs_mut()
            .append_pair("from", &from.to_string())
            .append_pair("limit", &PAGE_SIZE.to_string())
            .append_pair("order_by", "name")
            .append_pair("dir", "f");
        self.get("room list", url).await
    }

    /// Whether the room's history holds any non-state event, reading every page.
    async fn has_non_state_event(&self, room_id: &str) -> Result<bool, CleanupError> {
        let mut from: Option<String> = None;
        for _ in 0..MAX_HISTORY_PAGES {
            let mut url = self.url(&["_synapse", "admin", "v1", "rooms", room_id, "messages"])?;
            {
                let mut query = url.query_pairs_mut();
                query
                    .append_pair("dir", "b")
                    .append_pair("limit", &PAGE_SIZE.to_string());
                if let Some(token) = &from {
                    query.append_pair("from", token);
                }
            }
            let page: MessagesPage = self.get("room messages", url).await?;
            if page.chunk.iter().any(|e| e.get("state_key").is_none()) {
                return Ok(true);
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() && from.as_deref() != Some(end.as_str()) => {
                    from = Some(end);
                }
                _ => return Ok(false),
            }
        }
        // Too long a history to be an orphan worth purging: keep it.
        Ok(true)
    }

    async fn state(&self, room_id: &str) -> Result<Vec<Value>, CleanupError> {
        let url = self.url(&["_synapse", "admin", "v1", "rooms", room_id, "state"])?;
        let state: StateResponse = self.get("room state", url).await?;
        Ok(state.state)
    }

    async fn delete(&self, room_id: &str) -> Result<(), CleanupError> {
        let url = self.url(&["_synapse", "admin", "v2", "rooms", room_id])?;
        let what = "room delete";
        let response = self
            .client
            .delete(url)
            .bearer_auth(&self.token)
            .json(&serde_json::json!({ "purge": true, "block": false }))
            .send()
            .await
            .map_err(|e| CleanupError::Unreachable {
                what: what.to_owned(),
                reason: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(CleanupError::Status {
                what: what.to_owned(),
                status: status.as_u16(),
            })
        }
    }
}

/// The verdict on one candidate room, with the reason recorded in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Keep(String),
    Orphaned(String),
}

/// Judge a room from its state (the history was already found to hold only state events).
fn judge_state(state: &[Value], creator_hint: Option<&str>, now: i64, min_age_ms: i64) -> Verdict {
    let creator = state
        .iter()
        .find(|e| e.get("type").and_then(Value::as_str) == Some("m.room.create"))
        .and_then(|e| {
            e.pointer("/content/creator")
                .or_else(|| e.get("sender"))
                .and_then(Value::as_str)
        })
        .or(creator_hint);
    let joined: Vec<&str> = state
        .iter()
        .filter(|e| e.get("type").and_then(Value::as_str) == Some("m.room.member"))
        .filter(|e| e.pointer("/content/membership").and_then(Value::as_str) == Some("join"))
        .filter_map(|e| e.get("state_key").and_then(Value::as_str))
        .collect();
    match joined.as_slice() {
        [] => {}
        [only] if Some(*only) == creator => {}
        [_] => return Verdict::Keep("the one joined member is not the creator".to_owned()),
        _ => return Verdict::Keep(format!("{} joined members", joined.len())),
    }
    let newest = state
        .iter()
        .filter_map(|e| e.get("origin_server_ts").and_then(Value::as_i64))
        .max();
    match newest {
        Some(ts) if now.saturating_sub(ts) < min_age_ms => {
            Verdict::Keep("state changed within cleanup.min_age".to_owned())
        }
        None => Verdict::Keep("room state has no timestamps".to_owned()),
        Some(_) => Verdict::Orphaned(if joined.is_empty() {
            "no joined members, no messages, state older than cleanup.min_age".to_owned()
        } else {
            "only the creator joined, no messages, state older than cleanup.min_age".to_owned()
        }),
    }
}

/// Run the cleanup once over all rooms. Does not take the advisory lock; [`spawn`] does.
pub async fn run_once(
    config: &Config,
    store: &Store,
    metrics: &Metrics,
) -> Result<CleanupSummary, CleanupError> {
    let token = config
        .homeserver
        .admin_token()
        .ok_or(CleanupError::NoToken)?;
    let client = reqwest::Client::builder()
        .timeout(ADMIN_TIMEOUT)
        .connect_timeout(config.homeserver.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| CleanupError::Client(e.to_string()))?;
    let admin = Admin {
        client,
        base: config.homeserver.admin_base().clone(),
        token,
    };
    let min_age_ms = duration_ms(config.cleanup.min_age);
    let dry_run = config.cleanup.dry_run;
    let mut summary = CleanupSummary::default();
    // List every room first: purging while paging by offset would shift later pages and
    // skip rooms.
    let mut rooms = Vec::new();
    let mut from = 0u64;
    loop {
        let page = admin.list_rooms(from).await?;
        let empty = page.rooms.is_empty();
        rooms.extend(page.rooms);
        // `next_batch` is a number in Synapse; tolerate a string too.
        let next = match &page.next_batch {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        match next {
            Some(n) if n > from && !empty => from = n,
            _ => break,
        }
    }
    for room in &rooms {
        summary.scanned += 1;
        if room.joined_members > 1 {
            summary.active += 1;
            Metrics::outcome(&metrics.cleanup_rooms, "active");
            continue;
        }
        match inspect_and_act(&admin, store, room, min_age_ms, dry_run).await {
            Ok(RoomDecision::Keep) => {
                summary.kept += 1;
                Metrics::outcome(&metrics.cleanup_rooms, "kept");
            }
            Ok(RoomDecision::Delete) => {
                summary.deleted += 1;
                Metrics::outcome(&metrics.cleanup_rooms, "deleted");
            }
            Ok(RoomDecision::WouldDelete) => {
                summary.would_delete += 1;
                Metrics::outcome(&metrics.cleanup_rooms, "would_delete");
            }
            Ok(RoomDecision::DeleteFailed) | Err(_) => {
                summary.errors += 1;
                Metrics::outcome(&metrics.cleanup_rooms, "error");
            }
        }
    }
    tracing::info!(
        scanned = summary.scanned,
        active = summary.active,
        kept = summary.kept,
        deleted = summary.deleted,
        would_delete = summary.would_delete,
        errors = summary.errors,
        dry_run,
        "orphaned-room cleanup finished (A_28564-01)"
    );
    Ok(summary)
}

async fn inspect_and_act(
    admin: &Admin,
    store: &Store,
    room: &RoomEntry,
    min_age_ms: i64,
    dry_run: bool,
) -> Result<RoomDecision, CleanupError> {
    let room_id = room.room_id.as_str();
    let verdict = match admin.has_non_state_event(room_id).await {
        Ok(true) => Verdict::Keep("room has messages".to_owned()),
        Ok(false) => match admin.state(room_id).await {
            Ok(state) => judge_state(&state, room.creator.as_deref(), now_ms(), min_age_ms),
            Err(e) => return Err(log_room_error(room_id, e)),
        },
        Err(e) => return Err(log_room_error(room_id, e)),
    };
    let now = now_ms();
    match verdict {
        Verdict::Keep(reason) => {
            store
                .record_room_decision(room_id, RoomDecision::Keep, &reason, now)
                .await?;
            tracing::debug!(room_id, reason, "room kept");
            Ok(RoomDecision::Keep)
        }
        Verdict::Orphaned(reason) if dry_run => {
            store
                .record_room_decision(room_id, RoomDecision::WouldDelete, &reason, now)
                .await?;
            tracing::info!(room_id, reason, "orphaned room (dry run: not deleted)");
            Ok(RoomDecision::WouldDelete)
        }
        Verdict::Orphaned(reason) => {
            store
                .record_room_decision(room_id, RoomDecision::Delete, &reason, now)
                .await?;
            match admin.delete(room_id).await {
                Ok(()) => {
                    store.mark_room_deleted(room_id, now_ms()).await?;
                    tracing::info!(room_id, reason, "orphaned room purged (A_28564-01)");
                    Ok(RoomDecision::Delete)
                }
                Err(e) => {
                    let why = format!("{reason}; purge failed: {e}");
                    store
                        .record_room_decision(room_id, RoomDecision::DeleteFailed, &why, now)
                        .await?;
                    tracing::warn!(room_id, error = %e, "purging an orphaned room failed");
                    Ok(RoomDecision::DeleteFailed)
                }
            }
        }
    }
}

fn log_room_error(room_id: &str, e: CleanupError) -> CleanupError {
    tracing::warn!(room_id, error = %e, "inspecting a room failed; retried next run");
    e
}

/// Run the cleanup now and then every `cleanup.interval` until shutdown, in whichever
/// replica holds [`CLEANUP_LOCK`]. Returns a finished task when `cleanup.enabled` is false.
pub fn spawn(
    config: Arc<Config>,
    store: Store,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        if !config.cleanup.enabled {
            tracing::info!("orphaned-room cleanup disabled");
            return;
        }
        let mut stop = shutdown.clone();
        while !shutdown.is_triggered() {
            match store.try_lock(CLEANUP_LOCK).await {
                Ok(Some(guard)) => {
                    let run = run_once(&config, &store, &metrics);
                    tokio::select! {
                        result = run => {
                            if let Err(e) = result {
                                tracing::warn!(error = %e, "orphaned-room cleanup failed; next run at the next interval");
                            }
                        }
                        () = stop.wait() => {}
                    }
                    if let Err(e) = guard.release().await {
                        tracing::warn!(error = %e, "releasing the cleanup lock failed");
                    }
                }
                Ok(None) => tracing::debug!("another replica runs the orphaned-room cleanup"),
                Err(e) => tracing::warn!(error = %e, "orphaned-room cleanup: store unavailable"),
            }
            tokio::select! {
                () = tokio::time::sleep(config.cleanup.interval) => {}
                () = stop.wait() => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY: i64 = 24 * 3600 * 1000;

    fn member(user: &str, membership: &str, ts: i64) -> Value {
        json!({"type": "m.room.member", "state_key": user, "sender": user,
               "content": {"membership": membership}, "origin_server_ts": ts})
    }

    fn create(creator: &str, ts: i64) -> Value {
        json!({"type": "m.room.create", "state_key": "", "sender": creator,
               "content": {"creator": creator}, "origin_server_ts": ts})
    }

    #[test]
    fn old_room_with_only_creator_is_orphaned() {
        let now = 100 * DAY;
        let state = [
            create("@a:hs", now - 20 * DAY),
            member("@a:hs", "join", now - 20 * DAY),
        ];
        assert!(matches!(
            judge_state(&state, None, now, 14 * DAY),
            Verdict::Orphaned(_)
        ));
    }

    #[test]
    fn recent_state_keeps_the_room() {
        let now = 100 * DAY;
        let state = [
            create("@a:hs", now - 20 * DAY),
            member("@a:hs", "leave", now - DAY),
        ];
        assert!(matches!(
            judge_state(&state, None, now, 14 * DAY),
            Verdict::Keep(_)
        ));
    }

    #[test]
    fn single_non_creator_member_keeps_the_room() {
        let now = 100 * DAY;
        let state = [
            create("@a:hs", now - 20 * DAY),
            member("@a:hs", "leave", now - 20 * DAY),
            member("@b:hs", "join", now - 20 * DAY),
        ];
        assert!(matches!(
            judge_state(&state, None, now, 14 * DAY),
            Verdict::Keep(_)
        ));
    }
}
