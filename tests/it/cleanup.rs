//! Orphaned-room cleanup (A_28564-01) against a fake Synapse admin API that pages both the
//! room list and room histories.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use timproxy::cleanup::{CleanupSummary, run_once};
use timproxy::config::Config;
use timproxy::metrics::Metrics;

use crate::store::each_migrated_backend;

const TOKEN: &str = "admin-secret";
const DAY_MS: i64 = 24 * 3600 * 1000;
/// The fake pages small so that paging is exercised.
const PAGE: usize = 2;

#[derive(Clone)]
struct FakeRoom {
    joined_members: u64,
    creator: String,
    /// Newest first, as `dir=b` returns them.
    history: Vec<Value>,
    state: Vec<Value>,
}

#[derive(Clone, Default)]
struct Fake {
    rooms: Arc<Mutex<Vec<(String, FakeRoom)>>>,
    deleted: Arc<Mutex<Vec<(String, Value)>>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"errcode": "M_UNKNOWN_TOKEN"})),
    )
        .into_response()
}

async fn list_rooms(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let from: usize = q.get("from").and_then(|f| f.parse().ok()).unwrap_or(0);
    let rooms = fake.rooms.lock().unwrap().clone();
    let page: Vec<Value> = rooms
        .iter()
        .skip(from)
        .take(PAGE)
        .map(|(id, r)| json!({"room_id": id, "joined_members": r.joined_members, "creator": r.creator}))
        .collect();
    let mut body = json!({"rooms": page, "offset": from, "total_rooms": rooms.len()});
    if from + PAGE < rooms.len() {
        body["next_batch"] = json!(from + PAGE);
    }
    Json(body).into_response()
}

fn find(fake: &Fake, id: &str) -> Option<FakeRoom> {
    fake.rooms
        .lock()
        .unwrap()
        .iter()
        .find(|(r, _)| r == id)
        .map(|(_, r)| r.clone())
}

async fn messages(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    assert_eq!(q.get("dir").map(String::as_str), Some("b"));
    let Some(room) = find(&fake, &id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let from: usize = q
        .get("from")
        .and_then(|f| f.strip_prefix('t'))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    let chunk: Vec<Value> = room.history.iter().skip(from).take(PAGE).cloned().collect();
    let mut body = json!({"chunk": chunk, "start": format!("t{from}")});
    if from + PAGE < room.history.len() {
        body["end"] = json!(format!("t{}", from + PAGE));
    }
    Json(body).into_response()
}

async fn state(State(fake): State<Fake>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match find(&fake, &id) {
        Some(room) => Json(json!({"state": room.state})).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn delete_room(
    State(fake): State<Fake>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    fake.deleted.lock().unwrap().push((id.clone(), body));
    fake.rooms.lock().unwrap().retain(|(r, _)| *r != id);
    Json(json!({"delete_id": "del-1"})).into_response()
}

async fn start_fake(fake: Fake) -> url::Url {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/_synapse/admin/v1/rooms", get(list_rooms))
        .route("/_synapse/admin/v1/rooms/{id}/messages", get(messages))
        .route("/_synapse/admin/v1/rooms/{id}/state", get(state))
        .route("/_synapse/admin/v2/rooms/{id}", delete(delete_room))
        .with_state(fake);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/").parse().unwrap()
}

fn now_ms() -> i64 {
    timproxy::store::now_ms()
}

fn ev(kind: &str, state_key: Option<&str>, sender: &str, content: Value, ts: i64) -> Value {
    let mut e = json!({"type": kind, "sender": sender, "content": content, "origin_server_ts": ts});
    if let Some(k) = state_key {
        e["state_key"] = json!(k);
    }
    e
}

/// State of a room created by `creator` at `ts`, with the given (user, membership) pairs.
fn room_state(creator: &str, ts: i64, members: &[(&str, &str)]) -> Vec<Value> {
    let mut state = vec![
        ev(
            "m.room.create",
            Some(""),
            creator,
            json!({"creator": creator}),
            ts,
        ),
        ev("m.room.power_levels", Some(""), creator, json!({}), ts),
        ev(
            "m.room.join_rules",
            Some(""),
            creator,
            json!({"join_rule": "invite"}),
            ts,
        ),
    ];
    for (user, membership) in members {
        state.push(ev(
            "m.room.member",
            Some(user),
            user,
            json!({"membership": membership}),
            ts,
        ));
    }
    state
}

/// One room of each kind; returns the fake and the ids that must be purged.
fn rooms() -> Vec<(String, FakeRoom)> {
    let old = now_ms() - 30 * DAY_MS;
    let recent = now_ms() - DAY_MS;
    let creator = "@alice:home.de";
    let state_only_history = |state: &Vec<Value>| state.iter().rev().cloned().collect::<Vec<_>>();
    let mut out = Vec::new();

    let s = room_state(creator, old, &[(creator, "join"), ("@bob:home.de", "join")]);
    out.push((
        "!active:home.de".to_owned(),
        FakeRoom {
            joined_members: 2,
            creator: creator.into(),
            history: state_only_history(&s),
            state: s,
        },
    ));

    let s = room_state(creator, old, &[(creator, "join")]);
    out.push((
        "!orphan-creator:home.de".to_owned(),
        FakeRoom {
            joined_members: 1,
            creator: creator.into(),
            history: state_only_history(&s),
            state: s,
        },
    ));

    let s = room_state(creator, old, &[(creator, "leave")]);
    out.push((
        "!orphan-empty:home.de".to_owned(),
        FakeRoom {
            joined_members: 0,
            creator: creator.into(),
            history: state_only_history(&s),
            state: s,
        },
    ));

    // A message hidden beyond the first pages of history (the reference saw only 50 events).
    let s = room_state(creator, old, &[(creator, "join")]);
    let mut history = state_only_history(&s);
    history.push(ev(
        "m.room.message",
        None,
        creator,
        json!({"body": "hi"}),
        old,
    ));
    out.push((
        "!old-message:home.de".to_owned(),
        FakeRoom {
            joined_members: 1,
            creator: creator.into(),
            history,
            state: s,
        },
    ));

    let mut s = room_state(creator, old, &[(creator, "join")]);
    s.push(ev(
        "m.room.name",
        Some(""),
        creator,
        json!({"name": "fresh"}),
        recent,
    ));
    out.push((
        "!recent-state:home.de".to_owned(),
        FakeRoom {
            joined_members: 1,
            creator: creator.into(),
            history: state_only_history(&s),
            state: s,
        },
    ));

    let s = room_state(
        creator,
        old,
        &[(creator, "leave"), ("@carol:home.de", "join")],
    );
    out.push((
        "!non-creator:home.de".to_owned(),
        FakeRoom {
            joined_members: 1,
            creator: creator.into(),
            history: state_only_history(&s),
            state: s,
        },
    ));
    out
}

fn config(base: url::Url, dry_run: bool) -> Config {
    let mut config = Config::default();
    config.homeserver.admin_url = Some(base);
    config.homeserver.admin_token = Some(TOKEN.to_owned());
    config.cleanup.min_age = Duration::from_secs(14 * 24 * 3600);
    config.cleanup.dry_run = dry_run;
    config
}

#[tokio::test]
async fn cleanup_purges_only_orphaned_rooms_and_records_decisions() {
    each_migrated_backend(|store| async move {
        let fake = Fake::default();
        *fake.rooms.lock().unwrap() = rooms();
        let base = start_fake(fake.clone()).await;
        let metrics = Metrics::new();
        let summary = run_once(&config(base, false), &store, &metrics)
            .await
            .unwrap();
        assert_eq!(
            summary,
            CleanupSummary {
                scanned: 6,
                active: 1,
                kept: 3,
                deleted: 2,
                would_delete: 0,
                errors: 0
            }
        );
        let mut deleted: Vec<String> = fake
            .deleted
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        deleted.sort();
        assert_eq!(
            deleted,
            ["!orphan-creator:home.de", "!orphan-empty:home.de"]
        );
        for (_, body) in fake.deleted.lock().unwrap().iter() {
            assert_eq!(body, &json!({"purge": true, "block": false}));
        }
        let row = store
            .orphaned_room("!orphan-empty:home.de")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.decision, "delete");
        assert!(row.deleted_at.is_some());
        let row = store
            .orphaned_room("!old-message:home.de")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.decision.as_str(), row.reason.as_str()),
            ("keep", "room has messages")
        );
        let row = store
            .orphaned_room("!recent-state:home.de")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.decision, "keep");
        assert!(row.reason.contains("min_age"), "{}", row.reason);
        let row = store
            .orphaned_room("!non-creator:home.de")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.decision, "keep");
        assert!(
            store
                .orphaned_room("!active:home.de")
                .await
                .unwrap()
                .is_none()
        );
        let text = metrics.encode();
        assert!(
            text.contains("timproxy_cleanup_rooms_total{outcome=\"deleted\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("timproxy_cleanup_rooms_total{outcome=\"kept\"} 3"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn dry_run_deletes_nothing_but_records_would_delete() {
    each_migrated_backend(|store| async move {
        let fake = Fake::default();
        *fake.rooms.lock().unwrap() = rooms();
        let base = start_fake(fake.clone()).await;
        let summary = run_once(&config(base, true), &store, &Metrics::new())
            .await
            .unwrap();
        assert_eq!(summary.would_delete, 2);
        assert_eq!(summary.deleted, 0);
        assert!(fake.deleted.lock().unwrap().is_empty());
        let row = store
            .orphaned_room("!orphan-creator:home.de")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.decision, "would_delete");
        assert_eq!(row.deleted_at, None);
    })
    .await;
}

#[tokio::test]
async fn wrong_token_fails_the_run_without_deleting() {
    each_migrated_backend(|store| async move {
        let fake = Fake::default();
        *fake.rooms.lock().unwrap() = rooms();
        let base = start_fake(fake.clone()).await;
        let mut config = config(base, false);
        config.homeserver.admin_token = Some("wrong".to_owned());
        let err = run_once(&config, &store, &Metrics::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("401"), "{err}");
        assert!(
            !err.to_string().contains("wrong"),
            "token leaked into {err}"
        );
        assert!(fake.deleted.lock().unwrap().is_empty());
        config.homeserver.admin_token = None;
        let err = run_once(&config, &store, &Metrics::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, timproxy::cleanup::CleanupError::NoToken),
            "{err}"
        );
    })
    .await;
}
