//! Federation list end to end: a local fake registration service / VZD (axum on 127.0.0.1:0)
//! serving the vectors in `tests/data/federation-list`, the refresher, the store seam and
//! the `fetch-federation` command.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use timproxy::config::{Config, FederationSource};
use timproxy::federation::source::parse_list_json;
use timproxy::federation::{
    FederationError, FederationHandle, FederationList, FetchOutcome, ListSource, Membership,
    MemoryStore, Refresher, SnapshotStore,
};
use timproxy::metrics::Metrics;
use url::Url;

const TIMEOUT: Duration = Duration::from_secs(10);
const VZD_TOKEN: &str = "vzd-test-token";

pub fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/federation-list")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap()
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What the fake serves: the registration-service body and the VZD JWS (file names).
struct FakeState {
    registration: Mutex<&'static str>,
    vzd: Mutex<&'static str>,
    requests: AtomicUsize,
}

#[derive(serde::Deserialize)]
struct VersionQuery {
    version: Option<i64>,
}

/// The version inside a vector file (JWS payload read without verification: the fake does
/// what a server would do, the client must still verify).
fn version_of(name: &str) -> i64 {
    let raw = read(name);
    if name.ends_with(".jws") {
        let payload = read(&name.replace(".jws", ".payload.json"));
        serde_json::from_slice::<serde_json::Value>(&payload).unwrap()["version"]
            .as_i64()
            .unwrap()
    } else {
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap()["version"]
            .as_i64()
            .unwrap()
    }
}

async fn registration(
    State(state): State<Arc<FakeState>>,
    Query(q): Query<VersionQuery>,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let file = *state.registration.lock().unwrap();
    if file == "500" {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    if q.version == Some(version_of(file)) {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    ([("content-type", "application/json")], read(file)).into_response()
}

async fn vzd(
    State(state): State<Arc<FakeState>>,
    Query(q): Query<VersionQuery>,
    headers: HeaderMap,
) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let expected = format!("Bearer {VZD_TOKEN}");
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let file = *state.vzd.lock().unwrap();
    if q.version.is_some_and(|v| v >= version_of(file)) {
        return StatusCode::NO_CONTENT.into_response();
    }
    ([("content-type", "application/octet-stream")], read(file)).into_response()
}

struct Fake {
    state: Arc<FakeState>,
    base: String,
}

impl Fake {
    async fn start() -> Self {
        let state = Arc::new(FakeState {
            registration: Mutex::new("registration-service-v1.json"),
            vzd: Mutex::new("vzd-list.jws"),
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/backend/federation", get(registration))
            .route(
                "/tim-provider-services/FederationList/federationList.jws",
                get(vzd),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            state,
            base: format!("http://{addr}"),
        }
    }

    fn serve_registration(&self, file: &'static str) {
        *self.state.registration.lock().unwrap() = file;
    }

    fn serve_vzd(&self, file: &'static str) {
        *self.state.vzd.lock().unwrap() = file;
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn registration_config(&self) -> Config {
        let mut config = Config::default();
        config.federation.source = FederationSource::RegistrationService;
        config.registration_service.url = Url::parse(&self.base).unwrap();
        config.registration_service.timeout = Duration::from_secs(5);
        // A registration service may hand out the VZD JWS too; its signer names no responder.
        config.federation.ocsp.enabled = false;
        config
    }

    fn vzd_config(&self) -> Config {
        let mut config = Config::default();
        config.federation.source = FederationSource::VzdJws;
        config.federation.vzd_url = Some(
            Url::parse(&format!(
                "{}/tim-provider-services/FederationList/federationList.jws",
                self.base
            ))
            .unwrap(),
        );
        config.federation.vzd_token = Some(VZD_TOKEN.to_owned());
        config.federation.trust_anchors = vec![data("trust-anchor.pem")];
        config.registration_service.timeout = Duration::from_secs(5);
        // These signers name no OCSP responder (which fails closed); OCSP has its own tests
        // with a real responder (tests/it/ocsp.rs).
        config.federation.ocsp.enabled = false;
        config
    }
}

fn handle() -> FederationHandle {
    FederationHandle::new(Duration::from_secs(72 * 3600))
}

const ADDED_IN_V2: &str = "tim.pflegedienst-sonnenschein.example.com";
const REMOVED_IN_V2: &str = "chat.mvz-sued.example.org";

#[tokio::test]
async fn registration_service_list_is_fetched_confirmed_by_304_and_updated() {
    install_crypto();
    let fake = Fake::start().await;
    let metrics = Metrics::new();
    let handle = handle();
    let r = Refresher::new(
        &fake.registration_config(),
        handle.clone(),
        None,
        metrics.clone(),
    )
    .unwrap();

    let first = r.fetch_once().await.unwrap();
    assert_eq!(
        first,
        FetchOutcome::Updated {
            version: 1650,
            domains: 9
        }
    );
    assert!(matches!(
        handle.lookup(REMOVED_IN_V2),
        Membership::Member { .. }
    ));
    let list = handle.snapshot().unwrap();
    assert_eq!(list.source, ListSource::RegistrationService);
    assert!(!list.verified);

    assert_eq!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::NotModified {
            version: Some(1650)
        }
    );

    fake.serve_registration("registration-service-v2.json");
    assert_eq!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::Updated {
            version: 1651,
            domains: 9
        }
    );
    assert_eq!(handle.lookup(REMOVED_IN_V2), Membership::NotMember);
    assert!(matches!(
        handle.lookup(ADDED_IN_V2),
        Membership::Member { .. }
    ));

    let text = metrics.encode();
    assert!(
        text.contains("timproxy_federation_list_version 1651"),
        "{text}"
    );
    assert!(
        text.contains("timproxy_federation_list_domains 9"),
        "{text}"
    );
    assert!(
        text.contains(r#"timproxy_federation_fetches_total{outcome="updated"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"timproxy_federation_fetches_total{outcome="not_modified"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn failed_or_older_fetches_keep_the_previous_list() {
    install_crypto();
    let fake = Fake::start().await;
    let metrics = Metrics::new();
    let handle = handle();
    fake.serve_registration("registration-service-v2.json");
    let r = Refresher::new(
        &fake.registration_config(),
        handle.clone(),
        None,
        metrics.clone(),
    )
    .unwrap();
    r.fetch_once().await.unwrap();

    fake.serve_registration("registration-service-v1.json");
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(
            err,
            FederationError::NotNewer {
                got: 1650,
                have: 1651
            }
        ),
        "{err}"
    );
    fake.serve_registration("500");
    let err = r.fetch_once().await.unwrap_err();
    assert!(!err.is_rejection(), "{err}");

    assert_eq!(handle.snapshot().unwrap().version, 1651);
    let text = metrics.encode();
    assert!(text.contains(r#"outcome="rejected"} 1"#), "{text}");
    assert!(text.contains(r#"outcome="error"} 1"#), "{text}");
}

#[tokio::test]
async fn vzd_jws_is_verified_and_a_bad_signature_never_replaces_the_list() {
    install_crypto();
    let fake = Fake::start().await;
    let handle = handle();
    let r = Refresher::new(&fake.vzd_config(), handle.clone(), None, Metrics::new()).unwrap();

    assert_eq!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::Updated {
            version: 1650,
            domains: 9
        }
    );
    let list = handle.snapshot().unwrap();
    assert!(list.verified);
    assert_eq!(list.source, ListSource::VzdJws);
    // VZD lists carry IK numbers.
    assert!(list.find_by_ik("109912340").is_some());
    // 204: nothing newer.
    assert_eq!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::NotModified {
            version: Some(1650)
        }
    );

    // A list from a rogue hierarchy that copies the genuine names. The fake answers 204 to a
    // client holding 1650, so ask with a second refresher that holds nothing yet.
    fake.serve_vzd("vzd-list-wrong-anchor.jws");
    let fresh = handle_with_refresher(&fake.vzd_config());
    let err = fresh.1.fetch_once().await.unwrap_err();
    assert!(matches!(err, FederationError::Verify(_)), "{err}");
    assert!(fresh.0.snapshot().is_none());

    fake.serve_vzd("vzd-list-v2.jws");
    assert_eq!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::Updated {
            version: 1651,
            domains: 9
        }
    );
}

fn handle_with_refresher(config: &Config) -> (FederationHandle, Arc<Refresher>) {
    let h = handle();
    let r = Refresher::new(config, h.clone(), None, Metrics::new()).unwrap();
    (h, r)
}

#[tokio::test]
async fn every_invalid_vector_is_rejected_when_served_by_the_vzd() {
    install_crypto();
    let fake = Fake::start().await;
    for file in [
        "vzd-list-tampered.jws",
        "vzd-list-wrong-anchor.jws",
        "vzd-list-expired-signer.jws",
        "vzd-list-alg-none.jws",
        "vzd-list-signer-only-x5c.jws",
        "registration-service-v1.json",
    ] {
        fake.serve_vzd(file);
        let (h, r) = handle_with_refresher(&fake.vzd_config());
        let err = r.fetch_once().await.unwrap_err();
        assert!(err.is_rejection(), "{file}: {err}");
        assert!(h.snapshot().is_none(), "{file}");
    }
}

#[tokio::test]
async fn vzd_without_the_bearer_token_is_a_source_error() {
    install_crypto();
    let fake = Fake::start().await;
    let mut config = fake.vzd_config();
    config.federation.vzd_token = None;
    let (_, r) = handle_with_refresher(&config);
    let err = r.fetch_once().await.unwrap_err();
    assert!(matches!(err, FederationError::Source { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
}

#[tokio::test]
async fn vzd_source_without_trust_anchors_is_a_config_error() {
    install_crypto();
    let fake = Fake::start().await;
    let mut config = fake.vzd_config();
    config.federation.trust_anchors.clear();
    let err = Refresher::new(&config, handle(), None, Metrics::new()).unwrap_err();
    assert!(matches!(err, FederationError::Config(_)), "{err}");
}

#[tokio::test]
async fn restart_serves_the_persisted_list_before_the_first_fetch() {
    install_crypto();
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let first = handle();
    let r = Refresher::new(
        &fake.vzd_config(),
        first.clone(),
        Some(store.clone() as Arc<dyn SnapshotStore>),
        Metrics::new(),
    )
    .unwrap();
    r.fetch_once().await.unwrap();
    let rows = store.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].raw,
        read("vzd-list.jws"),
        "the exact payload is stored"
    );
    assert!(rows[0].verified);

    // "Restart": the source is gone (closed port), the store still has the list.
    let mut config = fake.vzd_config();
    config.federation.vzd_url = Some(Url::parse("http://127.0.0.1:9/gone").unwrap());
    let restarted = handle();
    let r2 = Refresher::new(
        &config,
        restarted.clone(),
        Some(store.clone() as Arc<dyn SnapshotStore>),
        Metrics::new(),
    )
    .unwrap();
    assert_eq!(r2.load_persisted().await.unwrap(), Some(1650));
    assert!(matches!(
        restarted.lookup(REMOVED_IN_V2),
        Membership::Member { .. }
    ));
    let list = restarted.snapshot().unwrap();
    assert_eq!(list.source, ListSource::Store);
    assert_eq!(
        list.fetched_at, rows[0].fetched_at,
        "age survives the restart"
    );
    assert!(r2.fetch_once().await.is_err());
    assert_eq!(restarted.snapshot().unwrap().version, 1650);
}

#[tokio::test]
async fn a_tampered_store_row_is_not_loaded() {
    install_crypto();
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    store
        .save(&timproxy::federation::SnapshotRecord {
            version: 1650,
            fetched_at: time::OffsetDateTime::now_utc(),
            source: "vzd_jws".to_owned(),
            raw: read("vzd-list-tampered.jws"),
            verified: true,
        })
        .await
        .unwrap();
    let h = handle();
    let r = Refresher::new(
        &fake.vzd_config(),
        h.clone(),
        Some(store as Arc<dyn SnapshotStore>),
        Metrics::new(),
    )
    .unwrap();
    assert!(r.load_persisted().await.unwrap_err().is_rejection());
    assert!(h.snapshot().is_none());
}

#[tokio::test]
async fn only_the_lock_holder_fetches_other_replicas_pick_up_from_the_store() {
    install_crypto();
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let shared = || Some(store.clone() as Arc<dyn SnapshotStore>);
    let config = fake.registration_config();
    let (ha, hb) = (handle(), handle());
    let a = Refresher::new(&config, ha.clone(), shared(), Metrics::new()).unwrap();
    let b = Refresher::new(&config, hb.clone(), shared(), Metrics::new()).unwrap();

    assert_eq!(
        a.run_round().await.unwrap(),
        FetchOutcome::Updated {
            version: 1650,
            domains: 9
        }
    );
    assert_eq!(fake.requests(), 1);

    // Replica A is mid-round (holds the lock): B must not fetch, it reads the store.
    let guard = store
        .try_lock(timproxy::federation::refresh::LOCK_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.run_round().await.unwrap(),
        FetchOutcome::PickedUp { version: 1650 }
    );
    assert_eq!(fake.requests(), 1, "B did not contact the source");
    assert!(matches!(
        hb.lookup(REMOVED_IN_V2),
        Membership::Member { .. }
    ));
    assert_eq!(b.run_round().await.unwrap(), FetchOutcome::Unchanged);
    drop(guard);

    // Lock free: B fetches itself (and gets 304 for the version it picked up).
    assert_eq!(
        b.run_round().await.unwrap(),
        FetchOutcome::NotModified {
            version: Some(1650)
        }
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn misses_coalesce_into_one_fetch_and_are_rate_limited() {
    install_crypto();
    let fake = Fake::start().await;
    fake.serve_registration("registration-service-v2.json");
    let mut config = fake.registration_config();
    config.federation.min_refresh_gap = Duration::from_secs(3600);
    let v1 = parse_list_json(&read("registration-service-v1.json")).unwrap();
    let h = FederationHandle::with_list(
        Duration::from_secs(72 * 3600),
        FederationList::new(
            v1.version,
            time::OffsetDateTime::now_utc(),
            false,
            ListSource::File,
            v1.entries,
        ),
    );
    let _r = Refresher::new(&config, h.clone(), None, Metrics::new()).unwrap();

    let checks = (0..16).map(|_| {
        let h = h.clone();
        tokio::spawn(async move { h.check(ADDED_IN_V2).await })
    });
    for check in checks {
        let m = tokio::time::timeout(TIMEOUT, check).await.unwrap().unwrap();
        assert_eq!(
            m,
            Membership::Member {
                is_insurance: false
            }
        );
    }
    assert_eq!(fake.requests(), 1, "16 concurrent misses, one fetch");

    assert_eq!(h.check("unknown.example").await, Membership::NotMember);
    assert_eq!(
        fake.requests(),
        1,
        "within min_refresh_gap: no second fetch"
    );
}

#[tokio::test]
async fn refresh_on_miss_can_be_disabled() {
    install_crypto();
    let fake = Fake::start().await;
    let mut config = fake.registration_config();
    config.federation.refresh_on_miss = false;
    let h = FederationHandle::with_list(
        Duration::from_secs(3600),
        FederationList::new(
            1,
            time::OffsetDateTime::now_utc(),
            false,
            ListSource::File,
            [],
        ),
    );
    let _r = Refresher::new(&config, h.clone(), None, Metrics::new()).unwrap();
    assert_eq!(h.check(ADDED_IN_V2).await, Membership::NotMember);
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn spawned_loop_polls_and_stops_on_shutdown() {
    install_crypto();
    let fake = Fake::start().await;
    let mut config = fake.registration_config();
    config.federation.refresh_interval = Duration::from_millis(20);
    config.federation.refresh_jitter = Duration::from_millis(5);
    let h = handle();
    let r = Refresher::new(&config, h.clone(), None, Metrics::new()).unwrap();
    let (trigger, shutdown) = timproxy::shutdown::channel();
    let task = r.spawn(shutdown);
    tokio::time::timeout(TIMEOUT, async {
        while fake.requests() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(h.snapshot().unwrap().version, 1650);
    trigger.trigger();
    tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
}

// ---- `timproxy fetch-federation` -------------------------------------------------------

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn fetch_federation(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_timproxy"));
    cmd.arg("fetch-federation")
        .args(args)
        .current_dir(dir.path())
        .env_remove("TIMPROXY_LOG");
    // On a blocking thread, so that the test's servers keep running meanwhile (tokio's process
    // driver is left out of the build: it would run on every park of the proxy's runtime).
    let output = tokio::time::timeout(TIMEOUT, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn cli_fetches_registration_json_over_http() {
    let fake = Fake::start().await;
    let url = format!("{}/backend/federation", fake.base);
    let run = fetch_federation(&["--source", &url]).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("version:   1650"), "{}", run.stdout);
    assert!(run.stdout.contains("insurance: 3"), "{}", run.stdout);
    assert!(run.stdout.contains("signature: unsigned"), "{}", run.stdout);
}

#[tokio::test]
async fn cli_verifies_a_jws_over_http_and_writes_json_output() {
    let fake = Fake::start().await;
    fake.serve_vzd("vzd-list-v2.jws");
    // The fake VZD wants its token; --source URL never sends one, so serve the file via the
    // registration route instead (same bytes, content decides the format).
    fake.serve_registration("vzd-list-v2.jws");
    let url = format!("{}/backend/federation", fake.base);
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("list.json");
    let anchor = data("trust-anchor.pem");
    let run = fetch_federation(&[
        "--source",
        &url,
        "--trust-anchor",
        anchor.to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
        "--format",
        "json",
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["version"], 1651);
    assert_eq!(summary["domains"], 9);
    assert_eq!(summary["signature"]["status"], "verified");
    assert_eq!(summary["signature"]["alg"], "BP256R1");
    let written = parse_list_json(&std::fs::read(&out_file).unwrap()).unwrap();
    assert_eq!(written.version, 1651);
    assert!(written.entries.iter().any(|e| e.domain == ADDED_IN_V2));
    assert!(
        written.entries.iter().any(|e| !e.ik.is_empty()),
        "IK numbers kept"
    );
}

#[tokio::test]
async fn cli_exit_codes_distinguish_rejected_lists_from_unreachable_sources() {
    let fake = Fake::start().await;
    fake.serve_registration("vzd-list-tampered.jws");
    let url = format!("{}/backend/federation", fake.base);
    let anchor = data("trust-anchor.pem");
    let rejected =
        fetch_federation(&["--source", &url, "--trust-anchor", anchor.to_str().unwrap()]).await;
    assert_eq!(rejected.code, 1, "{}", rejected.stderr);
    assert!(
        rejected.stderr.contains("error: list signature rejected"),
        "{}",
        rejected.stderr
    );
    assert!(rejected.stdout.is_empty());

    let gone = fetch_federation(&["--source", "http://127.0.0.1:9/backend/federation"]).await;
    assert_eq!(gone.code, 3, "{}", gone.stderr);
    assert!(
        gone.stderr.starts_with("error: ") || gone.stderr.contains("\nerror: "),
        "{}",
        gone.stderr
    );

    fake.serve_registration("500");
    let failing = fetch_federation(&["--source", &url]).await;
    assert_eq!(failing.code, 3, "{}", failing.stderr);

    let usage = fetch_federation(&["--store", "--out", "x.json"]).await;
    assert_eq!(usage.code, 2, "{}", usage.stderr);
}

#[tokio::test]
async fn confirmations_reach_the_store_so_reading_replicas_do_not_expire() {
    install_crypto();
    let fake = Fake::start().await;
    let store = Arc::new(MemoryStore::new());
    let shared = || Some(store.clone() as Arc<dyn SnapshotStore>);
    let mut config = fake.registration_config();
    // Confirmations are persisted once a quarter of max_age has passed.
    config.federation.max_age = Duration::from_millis(400);
    let (ha, hb) = (handle(), handle());
    let a = Refresher::new(&config, ha.clone(), shared(), Metrics::new()).unwrap();
    let b = Refresher::new(&config, hb.clone(), shared(), Metrics::new()).unwrap();
    a.fetch_once().await.unwrap();
    assert_eq!(store.rows().len(), 1);

    // Until a quarter of max_age has passed since the stored fetch, by the clock the refresher
    // reads.
    let stored_at = store.rows()[0].fetched_at;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while time::OffsetDateTime::now_utc() - stored_at <= config.federation.max_age / 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "the clock stands still"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        a.fetch_once().await.unwrap(),
        FetchOutcome::NotModified {
            version: Some(1650)
        }
    );
    let rows = store.rows();
    assert_eq!(rows.len(), 2, "the 304 confirmation was persisted");
    assert!(rows[1].fetched_at > rows[0].fetched_at);
    assert_eq!(rows[1].raw, rows[0].raw);

    let _guard = store
        .try_lock(timproxy::federation::refresh::LOCK_NAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        b.run_round().await.unwrap(),
        FetchOutcome::PickedUp { version: 1650 }
    );
    assert_eq!(hb.snapshot().unwrap().fetched_at, rows[1].fetched_at);
    assert_eq!(ha.snapshot().unwrap().fetched_at, rows[1].fetched_at);
}
