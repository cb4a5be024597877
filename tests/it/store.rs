//! Store tests: every operation runs against SQLite (temp file) and the real PostgreSQL
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`), each test in its
//! own database so tests run in parallel. PostgreSQL being unreachable fails the tests
//! unless `TIMPROXY_SKIP_PG=1`.

use std::future::Future;
use std::time::Duration;

use sqlx::Connection;
use timproxy::store::{NewOutboxItem, NewSnapshot, RoomDecision, Store, StoreError};

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_admin_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

pub fn skip_pg() -> bool {
    std::env::var("TIMPROXY_SKIP_PG").is_ok_and(|v| v == "1")
}

/// Run `body` once against a fresh SQLite file and once against a fresh PostgreSQL
/// database (dropped afterwards, also when the body panics). The store is not migrated.
pub async fn each_backend<F, Fut>(body: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/db/timproxy.db", dir.path().display());
    let store = Store::connect_url(&url, 4).await.unwrap();
    let result = tokio::spawn(body(store.clone())).await;
    store.close().await;
    if let Err(e) = result {
        eprintln!("failed on sqlite");
        std::panic::resume_unwind(e.into_panic());
    }

    if skip_pg() {
        return;
    }
    with_pg_database(|db_url| async move {
        let store = Store::connect_url(&db_url, 4).await.unwrap();
        let result = tokio::spawn(body(store.clone())).await;
        store.close().await;
        if let Err(e) = result {
            eprintln!("failed on postgres");
            std::panic::resume_unwind(e.into_panic());
        }
    })
    .await;
}

/// Run `body` with the URL of a fresh, empty PostgreSQL database that is dropped afterwards
/// (also when the body panics).
pub async fn with_pg_database<F, Fut>(body: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures_util::FutureExt;
    let admin_url = pg_admin_url();
    let mut admin = match tokio::time::timeout(
        Duration::from_secs(10),
        sqlx::PgConnection::connect(&admin_url),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "PostgreSQL at {admin_url} is unreachable ({e}); start it, point DATABASE_URL at it, or set TIMPROXY_SKIP_PG=1"
        ),
        Err(_) => panic!(
            "PostgreSQL at {admin_url} did not answer within 10s; start it, point DATABASE_URL at it, or set TIMPROXY_SKIP_PG=1"
        ),
    };
    let name = format!("tp_{:016x}", rand::random::<u64>());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let mut db_url = url::Url::parse(&admin_url).unwrap();
    db_url.set_path(&format!("/{name}"));
    let result = std::panic::AssertUnwindSafe(body(db_url.to_string()))
        .catch_unwind()
        .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&mut admin)
    .await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// [`each_backend`] with the schema migrated.
pub async fn each_migrated_backend<F, Fut>(body: F)
where
    F: Fn(Store) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    each_backend(|store| {
        let fut = body(store.clone());
        async move {
            store.migrate().await.unwrap();
            fut.await;
        }
    })
    .await;
}

#[tokio::test]
async fn migrate_applies_once_and_status_reports_applied() {
    each_backend(|store| async move {
        let before = store.migration_status().await.unwrap();
        assert!(!before.is_empty());
        assert!(before.iter().all(|m| !m.applied && m.applied_at.is_none()));
        let applied = store.migrate().await.unwrap();
        assert_eq!(applied.len(), before.len(), "{}", store.kind());
        assert!(applied.iter().all(|m| m.applied));
        let again = store.migrate().await.unwrap();
        assert!(again.is_empty(), "second migrate applied {again:?}");
        let after = store.migration_status().await.unwrap();
        assert!(
            after.iter().all(|m| m.applied && m.applied_at.is_some()),
            "{after:?}"
        );
        store.ping().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn database_with_unknown_newer_migration_is_refused() {
    each_migrated_backend(|store| async move {
        timproxy::store::Store::ping(&store).await.unwrap();
        let insert = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
                      VALUES (99990101000000, 'from the future', TRUE, $1, 0)";
        match store.backend() {
            timproxy::store::Backend::Sqlite(pool) => {
                sqlx::query(insert).bind(vec![0u8; 48]).execute(pool).await.unwrap();
            }
            timproxy::store::Backend::Postgres(pool) => {
                sqlx::query(insert).bind(vec![0u8; 48]).execute(pool).await.unwrap();
            }
        }
        let err = store.migration_status().await.unwrap_err();
        assert!(matches!(err, StoreError::UnknownMigrations { .. }), "{err}");
        assert!(err.to_string().contains("99990101000000"), "{err}");
        let err = store.migrate().await.unwrap_err();
        assert!(matches!(err, StoreError::UnknownMigrations { .. }), "{err}");
    })
    .await;
}

#[tokio::test]
async fn unreachable_postgres_is_reported_as_unreachable() {
    let err = Store::connect_url("postgres://127.0.0.1:1/x", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    let err = Store::connect_url("mysql://127.0.0.1/x", 1)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
}

#[tokio::test]
async fn sqlite_creates_missing_directory_and_uses_wal() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/a/b/t.db", dir.path().display());
    let store = Store::connect_url(&url, 1).await.unwrap();
    assert!(dir.path().join("a/b/t.db").exists());
    let timproxy::store::Backend::Sqlite(pool) = store.backend() else {
        panic!("not sqlite")
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "wal");
}

fn snapshot(version: i64, fetched_at: i64, source: &str) -> NewSnapshot {
    NewSnapshot {
        version,
        fetched_at,
        source: source.to_owned(),
        raw_payload: format!("{{\"version\":{version}}}").into_bytes(),
        verified: version % 2 == 0,
    }
}

#[tokio::test]
async fn latest_snapshot_orders_by_version_then_fetch_time_and_prunes() {
    each_migrated_backend(|store| async move {
        assert_eq!(store.latest_federation_snapshot().await.unwrap(), None);
        store
            .save_federation_snapshot(&snapshot(5, 1_000, "rs"))
            .await
            .unwrap();
        store
            .save_federation_snapshot(&snapshot(7, 500, "vzd"))
            .await
            .unwrap();
        store
            .save_federation_snapshot(&snapshot(7, 2_000, "rs"))
            .await
            .unwrap();
        store
            .save_federation_snapshot(&snapshot(6, 9_000, "rs"))
            .await
            .unwrap();
        let latest = store.latest_federation_snapshot().await.unwrap().unwrap();
        assert_eq!(
            (latest.version, latest.fetched_at, latest.source.as_str()),
            (7, 2_000, "rs")
        );
        assert_eq!(latest.raw_payload, b"{\"version\":7}");
        assert!(!latest.verified);
        assert_eq!(store.prune_federation_snapshots(2).await.unwrap(), 2);
        let again = store.latest_federation_snapshot().await.unwrap().unwrap();
        assert_eq!(again.id, latest.id);
        assert_eq!(store.prune_federation_snapshots(2).await.unwrap(), 0);
    })
    .await;
}

fn item(key: &str, created_at: i64) -> NewOutboxItem {
    NewOutboxItem {
        idempotency_key: key.to_owned(),
        created_at,
        payload: format!("{{\"k\":\"{key}\"}}"),
    }
}

#[tokio::test]
async fn outbox_enqueue_is_idempotent_on_key() {
    each_migrated_backend(|store| async move {
        let n = store
            .enqueue_reports(&[item("a", 10), item("b", 10), item("a", 11)])
            .await
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(store.enqueue_reports(&[item("b", 12)]).await.unwrap(), 0);
        assert_eq!(store.outbox_depth().await.unwrap(), 2);
        let a = store.outbox_report("a").await.unwrap().unwrap();
        assert_eq!((a.created_at, a.attempts, a.next_attempt_at), (10, 0, 10));
    })
    .await;
}

#[tokio::test]
async fn outbox_claim_leases_rows_and_failures_back_off() {
    each_migrated_backend(|store| async move {
        store
            .enqueue_reports(&[item("a", 100), item("b", 100), item("c", 100)])
            .await
            .unwrap();
        let lease = Duration::from_secs(60);
        let batch = store.claim_due_reports(1_000, 2, lease).await.unwrap();
        let keys: Vec<&str> = batch.iter().map(|r| r.idempotency_key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        // Leased rows are not claimed again; the third one is.
        let second = store.claim_due_reports(1_000, 10, lease).await.unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].idempotency_key, "c");
        assert!(
            store
                .claim_due_reports(1_000, 10, lease)
                .await
                .unwrap()
                .is_empty()
        );

        store
            .mark_report_delivered(batch[0].id, 1_100)
            .await
            .unwrap();
        store
            .mark_report_failed(batch[1].id, "collector answered 503", 5_000)
            .await
            .unwrap();
        store.release_report(second[0].id, 2_000).await.unwrap();
        assert_eq!(store.outbox_depth().await.unwrap(), 2);

        let b = store.outbox_report("b").await.unwrap().unwrap();
        assert_eq!(b.attempts, 1);
        assert_eq!(b.last_error.as_deref(), Some("collector answered 503"));
        // At 3000 only c (released to 2000) is due; b waits until 5000.
        let due = store.claim_due_reports(3_000, 10, lease).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].idempotency_key, "c");
        assert_eq!(due[0].attempts, 0);
        let due = store.claim_due_reports(5_000, 10, lease).await.unwrap();
        assert_eq!(due[0].idempotency_key, "b");
        // Delivered rows are never claimed.
        let a = store.outbox_report("a").await.unwrap().unwrap();
        assert_eq!(a.delivered_at, Some(1_100));
    })
    .await;
}

#[tokio::test]
async fn outbox_retention_drops_only_old_undelivered_rows() {
    each_migrated_backend(|store| async move {
        store
            .enqueue_reports(&[
                item("old", 100),
                item("old-delivered", 100),
                item("new", 5_000),
            ])
            .await
            .unwrap();
        let delivered = store.outbox_report("old-delivered").await.unwrap().unwrap();
        store
            .mark_report_delivered(delivered.id, 200)
            .await
            .unwrap();
        assert_eq!(store.drop_expired_reports(1_000).await.unwrap(), 1);
        assert!(store.outbox_report("old").await.unwrap().is_none());
        assert_eq!(store.outbox_depth().await.unwrap(), 1);
        assert_eq!(store.prune_delivered_reports(1_000).await.unwrap(), 1);
        assert!(
            store
                .outbox_report("old-delivered")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.outbox_report("new").await.unwrap().is_some());
    })
    .await;
}

#[tokio::test]
async fn room_decisions_keep_first_seen_and_record_deletion() {
    each_migrated_backend(|store| async move {
        let room = "!abc:home.de";
        store
            .record_room_decision(room, RoomDecision::Keep, "room has messages", 1_000)
            .await
            .unwrap();
        store
            .record_room_decision(room, RoomDecision::Delete, "orphaned", 2_000)
            .await
            .unwrap();
        store.mark_room_deleted(room, 2_500).await.unwrap();
        let row = store.orphaned_room(room).await.unwrap().unwrap();
        assert_eq!(row.first_seen, 1_000);
        assert_eq!(row.last_checked, 2_000);
        assert_eq!(row.decision, "delete");
        assert_eq!(row.reason, "orphaned");
        assert_eq!(row.deleted_at, Some(2_500));
        assert_eq!(store.orphaned_rooms().await.unwrap().len(), 1);
        assert!(
            store
                .orphaned_room("!other:home.de")
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn lock_is_exclusive_until_released() {
    each_migrated_backend(|store| async move {
        let guard = store.try_lock("job").await.unwrap().expect("first lock");
        assert_eq!(guard.name(), "job");
        assert!(store.try_lock("job").await.unwrap().is_none());
        let other = store.try_lock("other-job").await.unwrap();
        assert!(other.is_some());
        guard.release().await.unwrap();
        let again = store.try_lock("job").await.unwrap();
        assert!(again.is_some());
        drop(again);
        // Drop releases too (asynchronously on PostgreSQL).
        let mut reacquired = None;
        for _ in 0..50 {
            reacquired = store.try_lock("job").await.unwrap();
            if reacquired.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(reacquired.is_some(), "lock not released on drop");
    })
    .await;
}
