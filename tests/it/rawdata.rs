//! Raw-data outbox end to end: reports go through the writer into the store and are
//! delivered by the sender to a local collector that is killed and restarted mid-burst.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::post;
use http_body_util::BodyExt;
use timproxy::config::{Config, RawDataConfig};
use timproxy::inbound::RequestObserver;
use timproxy::metrics::Metrics;
use timproxy::rawdata::{
    IDEMPOTENCY_HEADER, Measurement, Observer, Operation, RawDataReport, Reporter, UserAgent,
    spawn_sender,
};
use timproxy::shutdown;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::store::{each_migrated_backend, skip_pg, with_pg_database};
use crate::support::FaultyRelay;

/// Idempotency keys the collector received, with how often each arrived.
type Received = Arc<Mutex<HashMap<String, u32>>>;

struct Collector {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn collect(State(received): State<Received>, headers: HeaderMap, body: String) -> StatusCode {
    let Some(key) = headers
        .get(IDEMPOTENCY_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return StatusCode::BAD_REQUEST;
    };
    let Ok(report) = serde_json::from_str::<RawDataReport>(&body) else {
        return StatusCode::UNPROCESSABLE_ENTITY;
    };
    assert_eq!(report.message.inst_id, "inst-1");
    *received.lock().unwrap().entry(key.to_owned()).or_default() += 1;
    StatusCode::OK
}

/// Start the collector on `addr` (port 0 for a fresh one), retrying while a just-closed
/// listener still holds the port.
async fn start_collector(addr: SocketAddr, received: Received) -> (SocketAddr, Collector) {
    let mut listener = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let listener = listener.expect("collector port stays taken");
    let bound = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/add-performance-data", post(collect))
        .with_state(received);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (bound, Collector { stop, task })
}

fn report(config: &Config, i: u64) -> RawDataReport {
    RawDataReport::build(
        config,
        &Measurement {
            operation: Operation::MpExchangeEventWithinOrganisation,
            start: time::OffsetDateTime::now_utc(),
            duration: Duration::from_millis(i),
            status: 200,
            user_agent: UserAgent::parse(Some(
                br#"{"Auspraegung":"Messenger-Client","client_id":"c1"}"#,
            ))
            .agent,
            size_in: i,
            size_out: 2 * i,
        },
    )
}

/// Reports the pipeline counted with `outcome` (`timproxy_outbox_reports_total`).
fn outcome_count(metrics: &Metrics, outcome: &str) -> u64 {
    let prefix = format!("timproxy_outbox_reports_total{{outcome=\"{outcome}\"}} ");
    metrics
        .encode()
        .lines()
        .find_map(|line| line.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_until<F: Fn() -> bool>(what: &str, timeout: Duration, done: F) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Writer and sender over `store`, delivering to the collector at `addr` with short retries.
struct Pipeline {
    config: Config,
    metrics: Arc<Metrics>,
    reporter: Reporter,
    trigger: shutdown::ShutdownTrigger,
    writer: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl Pipeline {
    fn start(
        store: &timproxy::store::Store,
        addr: SocketAddr,
        tweak: impl FnOnce(&mut RawDataConfig),
    ) -> Pipeline {
        let mut raw_data = RawDataConfig {
            enabled: true,
            url: format!("http://{addr}/add-performance-data")
                .parse()
                .unwrap(),
            instance_id: "inst-1".to_owned(),
            batch_size: 16,
            retry_initial: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            ..RawDataConfig::default()
        };
        tweak(&mut raw_data);
        let config = Config {
            raw_data,
            ..Config::default()
        };
        let metrics = Metrics::new();
        let (trigger, signal) = shutdown::channel();
        let (reporter, writer) = Reporter::spawn(
            store.clone(),
            &config.raw_data,
            metrics.clone(),
            signal.clone(),
        );
        let sender = spawn_sender(
            store.clone(),
            config.raw_data.clone(),
            metrics.clone(),
            signal,
        );
        Pipeline {
            config,
            metrics,
            reporter,
            trigger,
            writer,
            sender,
        }
    }

    fn report(&self, i: u64) {
        self.reporter.report(report(&self.config, i));
    }

    /// Shut down and wait (bounded) for the writer and the sender to end.
    async fn stop(self) {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.writer)
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(Duration::from_secs(15), self.sender)
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_arrives_once_across_a_collector_outage() {
    each_migrated_backend(|store| async move {
        let received: Received = Arc::default();
        let (addr, collector) =
            start_collector("127.0.0.1:0".parse().unwrap(), received.clone()).await;
        let pipeline = Pipeline::start(&store, addr, |_| {});
        const TOTAL: u64 = 150;
        for i in 0..50 {
            pipeline.report(i);
        }
        // Kill the collector mid-burst, once reports reach it; reports keep coming while it
        // is down.
        wait_until(
            "the first reports at the collector",
            Duration::from_secs(10),
            || !received.lock().unwrap().is_empty(),
        )
        .await;
        collector.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), collector.task)
            .await
            .unwrap()
            .unwrap();
        let failed_before = outcome_count(&pipeline.metrics, "failed");
        for i in 50..120 {
            pipeline.report(i);
        }
        // The collector comes back once the sender has found it down twice (a retry after a
        // failed delivery).
        wait_until(
            "two failed deliveries while the collector is down",
            Duration::from_secs(10),
            || outcome_count(&pipeline.metrics, "failed") >= failed_before + 2,
        )
        .await;
        let (_, collector) = start_collector(addr, received.clone()).await;
        for i in 120..TOTAL {
            pipeline.report(i);
        }

        wait_until(
            "all reports at the collector",
            Duration::from_secs(30),
            || received.lock().unwrap().len() as u64 == TOTAL,
        )
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.outbox_depth().await.unwrap() > 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "outbox never drained"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let received = received.lock().unwrap().clone();
        let duplicates: Vec<_> = received.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicates.is_empty(),
            "keys delivered more than once: {duplicates:?}"
        );
        assert_eq!(received.len() as u64, TOTAL);

        let text = pipeline.metrics.encode();
        assert!(
            text.contains(&format!(
                "timproxy_outbox_reports_total{{outcome=\"delivered\"}} {TOTAL}"
            )),
            "{text}"
        );
        assert!(
            text.contains("timproxy_outbox_reports_total{outcome=\"failed\"}"),
            "{text}"
        );
        assert!(!text.contains("outcome=\"dropped\""), "{text}");

        pipeline.stop().await;
        collector.stop.send(()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), collector.task).await;
    })
    .await;
}

#[tokio::test]
async fn reports_past_retention_are_dropped_and_counted() {
    each_migrated_backend(|store| async move {
        // Nothing listens on the collector port: every delivery fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let pipeline = Pipeline::start(&store, addr, |c| {
            c.retry_initial = Duration::from_millis(10);
            c.retry_max = Duration::from_millis(20);
            c.retention = Duration::from_millis(300);
        });
        for i in 0..5 {
            pipeline.report(i);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = pipeline.metrics.encode();
            if text.contains("timproxy_outbox_reports_total{outcome=\"expired\"} 5") {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never expired: {text}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(store.outbox_depth().await.unwrap(), 0);
        pipeline.stop().await;
    })
    .await;
}

/// PostgreSQL restarting mid-run (every connection dropped, new ones refused for a while):
/// the store reconnects by itself, the writer holds reports until it can write them, the
/// sender re-takes its lock, and every report reaches the collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_report_arrives_across_a_postgres_restart() {
    if skip_pg() {
        return;
    }
    with_pg_database(|db_url| async move {
        let mut url = url::Url::parse(&db_url).unwrap();
        let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
        let target = tokio::net::lookup_host(target)
            .await
            .unwrap()
            .next()
            .unwrap();
        let relay = FaultyRelay::start(target).await;
        url.set_port(Some(relay.addr.port())).unwrap();
        let store = timproxy::store::Store::connect_url(url.as_str(), 4)
            .await
            .unwrap();
        store.migrate().await.unwrap();

        let received: Received = Arc::default();
        let (addr, collector) =
            start_collector("127.0.0.1:0".parse().unwrap(), received.clone()).await;
        let pipeline = Pipeline::start(&store, addr, |c| {
            // Reports claimed the moment the database vanished come back after this.
            c.claim_lease = Duration::from_secs(2);
        });
        const TOTAL: u64 = 150;
        for i in 0..50 {
            pipeline.report(i);
        }
        // The database goes away mid-run, once reports reach the collector.
        wait_until(
            "the first reports at the collector",
            Duration::from_secs(10),
            || !received.lock().unwrap().is_empty(),
        )
        .await;
        relay.cut();
        assert!(
            store.ping().await.is_err(),
            "the store still answers while PostgreSQL is down"
        );
        // Reports keep coming while the database is away; it comes back once the store has
        // been refused a few more times (the writer and the sender retrying).
        let refused_before = relay.refused();
        for i in 50..120 {
            pipeline.report(i);
        }
        wait_until(
            "reconnections refused while PostgreSQL is down",
            Duration::from_secs(30),
            || relay.refused() >= refused_before + 3,
        )
        .await;
        relay.restore();
        for i in 120..TOTAL {
            pipeline.report(i);
        }
        wait_until(
            "all reports at the collector after the restart",
            Duration::from_secs(60),
            || received.lock().unwrap().len() as u64 == TOTAL,
        )
        .await;
        store.ping().await.expect("store reconnected");
        let text = pipeline.metrics.encode();
        assert!(!text.contains("outcome=\"dropped\""), "{text}");

        pipeline.stop().await;
        collector.stop.send(()).unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), collector.task).await;
        store.close().await;
    })
    .await;
}

/// The raw-data pipeline as `serve` wires it, up to the outbox: an [`Observer`] for the
/// listeners, a writer into a migrated SQLite file. Tests read back what was stored.
pub(crate) struct ReportSink {
    pub(crate) observer: Arc<dyn RequestObserver>,
    pub(crate) metrics: Arc<Metrics>,
    store: timproxy::store::Store,
    trigger: shutdown::ShutdownTrigger,
    writer: JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl ReportSink {
    /// Reports for `server_name`, with `Inst-ID` `inst-1`.
    pub(crate) async fn start(server_name: &str) -> ReportSink {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/timproxy.db", dir.path().display());
        let store = timproxy::store::Store::connect_url(&url, 2).await.unwrap();
        store.migrate().await.unwrap();
        let mut config = Config::default();
        config.homeserver.server_name = server_name.to_owned();
        config.raw_data.enabled = true;
        config.raw_data.instance_id = "inst-1".to_owned();
        config.raw_data.telematik_id = "1-2-3".to_owned();
        config.raw_data.profession_oid = "1.2.276.0.76.4.50".to_owned();
        let metrics = Metrics::new();
        let (trigger, signal) = shutdown::channel();
        let (reporter, writer) =
            Reporter::spawn(store.clone(), &config.raw_data, metrics.clone(), signal);
        ReportSink {
            observer: Arc::new(Observer::new(Arc::new(config), reporter)),
            metrics,
            store,
            trigger,
            writer,
            _dir: dir,
        }
    }

    /// Wait (bounded) until the outbox holds `n` reports, and return them. Claiming them also
    /// shows that no more than `n` arrive: a later call sees only new ones.
    pub(crate) async fn take(&self, n: usize) -> Vec<RawDataReport> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut reports = Vec::new();
        loop {
            let rows = self
                .store
                .claim_due_reports(i64::MAX / 2, 100, Duration::from_secs(3600))
                .await
                .unwrap();
            reports.extend(
                rows.iter()
                    .map(|row| serde_json::from_str::<RawDataReport>(&row.payload).unwrap()),
            );
            if reports.len() >= n {
                return reports;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} reports arrived: {reports:?}",
                reports.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stop the writer after it stored what it holds; the reports stored since the last
    /// [`ReportSink::take`].
    pub(crate) async fn finish(self) -> Vec<RawDataReport> {
        self.trigger.trigger();
        tokio::time::timeout(Duration::from_secs(10), self.writer)
            .await
            .unwrap()
            .unwrap();
        let rows = self
            .store
            .claim_due_reports(i64::MAX / 2, 100, Duration::from_secs(3600))
            .await
            .unwrap();
        self.store.close().await;
        rows.iter()
            .map(|row| serde_json::from_str(&row.payload).unwrap())
            .collect()
    }
}

const FULL_USERAGENT: &str = r#"{"Auspraegung":"Messenger-Client","Plattform":"stationaer","OS":"Windows","OS-Version":"11","Produkttypversion":"1.1","Produktversion":"2.4.0","client_id":"cid-9","Matrix-Domain":"hs1.test"}"#;

/// Issue 16: the `useragent` header reaches the stored report through the inbound listener,
/// a malformed one costs only its fields (counted by reason), and what the proxy refused
/// itself is not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_reports_carry_the_clients_useragent_and_survive_a_malformed_one() {
    let sink = ReportSink::start("hs1.test").await;
    let h = crate::inbound::start_observed(|_| {}, Some(sink.observer.clone())).await;

    let body = r#"{"type":"m.login.password","user":"alice","password":"x"}"#;
    let response = h
        .send_body(
            Method::POST,
            "/_matrix/client/v3/login",
            &[("useragent", FULL_USERAGENT), ("user-agent", "Mozilla/5.0")],
            timproxy::inbound::forward::full(body),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let relayed = response.into_body().collect().await.unwrap().to_bytes();
    let reports = sink.take(1).await;
    let login = &reports[0];
    assert_eq!(login.operation, Operation::MpClientLoginRequestAccessToken);
    assert_eq!(login.status, 200);
    let m = &login.message;
    assert_eq!(
        [
            m.ua_a.as_str(),
            &m.ua_p,
            &m.ua_os,
            &m.ua_os_version,
            &m.ua_ptv,
            &m.ua_pv,
            &m.ua_cid
        ],
        [
            "Messenger-Client",
            "stationaer",
            "Windows",
            "11",
            "1.1",
            "2.4.0",
            "cid-9"
        ]
    );
    assert_eq!(m.inst_id, "inst-1");
    assert_eq!(m.m_dom, "hs1.test");
    assert_eq!(m.t_id, "1-2-3");
    assert_eq!(m.prof_oid, "1.2.276.0.76.4.50");
    assert_eq!(m.res, 200);
    assert_eq!(m.size_in, body.len() as u64);
    assert_eq!(m.size_out, relayed.len() as u64);

    // Not JSON (a browser's User-Agent string sent under the wrong name): defaults, counted.
    let (status, _) = h
        .send(
            Method::GET,
            "/_matrix/client/v3/login",
            &[("useragent", "Mozilla/5.0 (X11; Linux x86_64)")],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // Wrong type and an undefined Plattform: only those fields are lost.
    let (status, _) = h
        .send(
            Method::POST,
            "/_matrix/client/v3/user_directory/search",
            &[
                ("authorization", "Bearer tok-alice"),
                (
                    "useragent",
                    r#"{"Auspraegung":"Org-Admin-Client","Plattform":"tv","OS":14}"#,
                ),
            ],
            Some(serde_json::json!({"search_term":"bob"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut reports = sink.take(2).await;
    reports.sort_by_key(|r| r.operation.code());
    let (types, search) = (&reports[0], &reports[1]);
    assert_eq!(types.operation, Operation::MpClientLoginSupportedLoginTypes);
    assert_eq!(types.message.ua_a, "n/a");
    assert_eq!(types.message.ua_cid, "n/a");
    assert_eq!(
        search.operation,
        Operation::MpInviteWithinOrganisationSearch
    );
    assert_eq!(search.message.ua_a, "Org-Admin-Client");
    assert_eq!(search.message.ua_p, "n/a");
    assert_eq!(search.message.ua_os, "n/a");
    let text = sink.metrics.encode();
    for reason in ["not_json", "wrong_type", "unknown_value"] {
        assert!(
            text.contains(&format!(
                "timproxy_useragent_invalid_total{{reason=\"{reason}\"}} 1"
            )),
            "{reason}: {text}"
        );
    }

    // A createRoom the rules refuse never reaches the homeserver: no report.
    let refused = h
        .alice(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            serde_json::json!({"invite":["@x:unlisted.test"]}),
        )
        .await;
    assert_eq!(refused.0, StatusCode::FORBIDDEN, "{}", refused.1);
    assert_eq!(sink.finish().await, Vec::<RawDataReport>::new());
}
