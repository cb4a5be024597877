//! Raw-data outbox end to end: reports go through the writer into the store and are
//! delivered by the sender to a local collector that is killed and restarted mid-burst.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use timproxy::config::{Config, RawDataConfig};
use timproxy::metrics::Metrics;
use timproxy::rawdata::{
    IDEMPOTENCY_HEADER, Measurement, Operation, RawDataReport, Reporter, spawn_sender,
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
            useragent: Some(r#"{"Auspraegung":"Messenger-Client","client_id":"c1"}"#),
            size_in: i,
            size_out: 2 * i,
        },
    )
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
        // Kill the collector mid-burst; reports keep coming while it is down.
        tokio::time::sleep(Duration::from_millis(30)).await;
        collector.stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), collector.task)
            .await
            .unwrap()
            .unwrap();
        for i in 50..120 {
            pipeline.report(i);
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
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
        tokio::time::sleep(Duration::from_millis(50)).await;
        relay.cut();
        assert!(
            store.ping().await.is_err(),
            "the store still answers while PostgreSQL is down"
        );
        // Reports keep coming while the database is away.
        for i in 50..120 {
            pipeline.report(i);
            if i % 10 == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
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
