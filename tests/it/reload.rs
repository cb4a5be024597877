//! Configuration reload of the whole `serve` assembly ([`timproxy::server::Server`]) in this
//! process: real listeners on 127.0.0.1:0, small fake homeservers that answer with a marker,
//! real clients on kept-alive connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

use timproxy::config::Config;
use timproxy::server::reload::Outcome;
use timproxy::server::{Server, StartOptions};
use timproxy::tls::GeneratedCa;
use timproxy::tls::ca::{CaOptions, generate_ca, write_ca};

const LIMIT: Duration = Duration::from_secs(90);
const PROFILE: &str = "/_matrix/client/v3/profile/@a:hs1.test";

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("test step exceeded its time bound")
}

/// Wait (bounded) until `done` holds, checking every few milliseconds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A homeserver that answers every request 200 with `{"displayname": marker}`.
async fn marker_homeserver(marker: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_request: Request<Incoming>| async move {
                    let body = format!("{{\"displayname\":\"{marker}\"}}");
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// What a test configuration varies.
struct Settings {
    homeserver: SocketAddr,
    inbound_listen: &'static str,
    /// Appended as is (whole sections not used by the base text).
    extra: String,
}

fn config_text(dir: &Path, settings: &Settings) -> String {
    let list = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/federation-list/registration-service-v1.json"
    );
    format!(
        "inbound:\n  listen: {inbound}\n\
         outbound:\n  listen: 127.0.0.1:0\n  allow_hosts: [remote.test]\n  ca:\n    cert_file: {dir}/ca.crt\n    key_file: {dir}/ca.key\n\
         admin:\n  listen: 127.0.0.1:0\n\
         info_api:\n  listen: 127.0.0.1:0\n\
         database:\n  url: sqlite://{dir}/tp.db\n\
         federation:\n  source: file\n  list_file: {list}\n\
         cleanup:\n  enabled: false\n\
         homeserver:\n  url: http://{hs}/\n  server_name: hs1.test\n{extra}",
        inbound = settings.inbound_listen,
        dir = dir.display(),
        hs = settings.homeserver,
        extra = settings.extra,
    )
}

fn new_ca(name: &str) -> GeneratedCa {
    generate_ca(&CaOptions {
        common_name: name.to_owned(),
        ..CaOptions::default()
    })
    .unwrap()
}

/// A whole server started from `timproxy.yaml` in its own directory.
struct Stack {
    dir: tempfile::TempDir,
    path: PathBuf,
    server: Server,
    ca: GeneratedCa,
}

impl Stack {
    async fn start(settings: &Settings) -> Stack {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca("first interception CA");
        write_ca(
            &dir.path().join("ca.crt"),
            &dir.path().join("ca.key"),
            &ca,
            true,
        )
        .unwrap();
        let path = dir.path().join("timproxy.yaml");
        std::fs::write(&path, config_text(dir.path(), settings)).unwrap();
        let (config, _) = Config::load(Some(&path)).unwrap();
        let options = StartOptions {
            config_path: Some(path.clone()),
            ..StartOptions::default()
        };
        let server = Server::start(config, options).await.unwrap();
        Stack {
            dir,
            path,
            server,
            ca,
        }
    }

    fn rewrite(&self, settings: &Settings) {
        std::fs::write(&self.path, config_text(self.dir.path(), settings)).unwrap();
    }

    fn addr(&self, listener: &str) -> SocketAddr {
        self.server.local_addr(listener).unwrap()
    }

    fn admin(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr("admin"))
    }
}

/// One request per call on a kept-alive HTTP/1.1 connection to the inbound listener.
struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl KeptAlive {
    async fn open(addr: SocketAddr) -> KeptAlive {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        KeptAlive { sender }
    }

    /// The marker of the homeserver that answered, or why there was no 200.
    async fn marker(&mut self) -> Result<String, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection closed: {e}"))?;
        let request = Request::get(PROFILE)
            .header("host", "hs1.test")
            .body(Empty::new())
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body failed: {e}"))?
            .to_bytes();
        if status != StatusCode::OK {
            return Err(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        Ok(value["displayname"].as_str().unwrap_or_default().to_owned())
    }
}

/// A request as a load client saw it.
struct Seen {
    started: Instant,
    marker: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_drops_no_connection_and_the_next_request_sees_it() {
    bounded(async {
        let a = marker_homeserver("A").await;
        let b = marker_homeserver("B").await;
        let settings = |homeserver| Settings {
            homeserver,
            inbound_listen: "127.0.0.1:0",
            extra: String::new(),
        };
        let stack = Stack::start(&settings(a)).await;
        let inbound = stack.addr("inbound");

        const CLIENTS: usize = 4;
        const RELOADS: usize = 10;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (stop, seen) = (stop.clone(), seen.clone());
            let mut connection = KeptAlive::open(inbound).await;
            clients.push(tokio::spawn(async move {
                let mut answered = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let marker = connection.marker().await?;
                    seen.lock().unwrap().push(Seen { started, marker });
                    answered += 1;
                }
                Ok::<usize, String>(answered)
            }));
        }
        until("every client's first answer", || {
            seen.lock().unwrap().len() >= CLIENTS
        })
        .await;

        // Each reload switches the homeserver; between reloads every client keeps sending.
        let mut applied = Vec::new();
        for round in 0..RELOADS {
            let (homeserver, marker) = if round % 2 == 0 { (b, "B") } else { (a, "A") };
            let begun = Instant::now();
            stack.rewrite(&settings(homeserver));
            let report = stack.server.reload().await;
            assert_eq!(report.outcome, Outcome::Applied, "{report:?}");
            assert_eq!(report.changed, ["homeserver.url"]);
            let done = Instant::now();
            applied.push((begun, done, marker));
            until("requests after the reload", || {
                let seen = seen.lock().unwrap();
                seen.iter().filter(|s| s.started > done).count() >= 2 * CLIENTS
            })
            .await;
        }
        stop.store(true, Ordering::SeqCst);
        let mut total = 0;
        for client in clients {
            match client.await.unwrap() {
                Ok(answered) => total += answered,
                Err(e) => panic!("a client failed during reloads: {e}"),
            }
        }
        assert!(total >= RELOADS * 2 * CLIENTS, "only {total} requests ran");

        // Every request that began after a reload returned, and before the next one began,
        // was answered by the homeserver that reload named.
        let seen = std::mem::take(&mut *seen.lock().unwrap());
        for (i, (_, done, marker)) in applied.iter().enumerate() {
            let next_begun = applied.get(i + 1).map(|(begun, _, _)| *begun);
            for request in seen
                .iter()
                .filter(|s| s.started > *done && next_begun.is_none_or(|n| s.started < n))
            {
                assert_eq!(
                    request.marker, *marker,
                    "a request after reload {i} went to the old homeserver"
                );
            }
        }
        assert_eq!(stack.server.config_status().generation, RELOADS as u64 + 1);
        stack.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_invalid_configuration_keeps_the_running_one_and_says_where() {
    bounded(async {
        let a = marker_homeserver("A").await;
        let valid = Settings {
            homeserver: a,
            inbound_listen: "127.0.0.1:0",
            extra: String::new(),
        };
        let stack = Stack::start(&valid).await;
        let running = stack.server.config_status().hash;
        let mut connection = KeptAlive::open(stack.addr("inbound")).await;

        // A value of the wrong type: the parser's position.
        let broken = Settings {
            extra: "policy:\n  presence_status_max: lots\n".to_owned(),
            ..valid
        };
        stack.rewrite(&broken);
        let line = config_text(stack.dir.path(), &broken).lines().count();
        let report = stack.server.reload().await;
        assert_eq!(report.outcome, Outcome::Rejected);
        let error = report.error.clone().unwrap();
        assert!(
            error.starts_with(&format!(
                "{}:{line}:24: policy.presence_status_max: invalid type",
                stack.path.display()
            )),
            "{error}"
        );
        assert_eq!(report.hash, running);
        assert_eq!(connection.marker().await.unwrap(), "A");

        // A value that parses but is not allowed: file and key, through the admin listener.
        stack.rewrite(&Settings {
            extra: "policy:\n  default_permission: maybe\n".to_owned(),
            ..broken
        });
        let http = reqwest::Client::new();
        let response = http
            .post(stack.admin("/config/reload"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let report: serde_json::Value = response.json().await.unwrap();
        assert_eq!(report["outcome"], "rejected");
        assert!(
            report["error"].as_str().unwrap().starts_with(&format!(
                "{}: policy.default_permission: must be",
                stack.path.display()
            )),
            "{report}"
        );

        let status: serde_json::Value = http
            .get(stack.admin("/config"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(status["hash"], running.as_str());
        assert_eq!(status["generation"], 1);
        assert_eq!(status["last_reload"]["outcome"], "rejected");
        let metrics = http
            .get(stack.admin("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(r#"timproxy_config_reloads_total{outcome="rejected"} 2"#),
            "{metrics}"
        );
        assert_eq!(connection.marker().await.unwrap(), "A");
        stack.server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_changed_listen_address_or_database_is_reported_and_waits_for_a_restart() {
    bounded(async {
        let a = marker_homeserver("A").await;
        let stack = Stack::start(&Settings {
            homeserver: a,
            inbound_listen: "127.0.0.1:0",
            extra: String::new(),
        })
        .await;
        let before = stack.server.config_status().hash;
        let mut text = config_text(
            stack.dir.path(),
            &Settings {
                homeserver: a,
                inbound_listen: "127.0.0.1:1",
                extra: String::new(),
            },
        );
        text = text.replace("/tp.db", "/other.db");
        std::fs::write(&stack.path, &text).unwrap();
        let report = stack.server.reload().await;
        assert_eq!(report.outcome, Outcome::Unchanged, "{report:?}");
        assert_eq!(report.restart_required, ["database.url", "inbound.listen"]);
        assert_eq!(report.hash, before, "the running values stay in effect");
        let status = stack.server.config_status();
        assert_eq!(status.restart_required, report.restart_required);
        let mut connection = KeptAlive::open(stack.addr("inbound")).await;
        assert_eq!(connection.marker().await.unwrap(), "A");

        // Reloadable keys beside them still apply.
        text.push_str("policy:\n  presence_status_max: 10\n");
        std::fs::write(&stack.path, &text).unwrap();
        let report = stack.server.reload().await;
        assert_eq!(report.outcome, Outcome::Applied, "{report:?}");
        assert_eq!(report.changed, ["policy.presence_status_max"]);
        assert_eq!(report.restart_required, ["database.url", "inbound.listen"]);
        stack.server.stop().await;
    })
    .await;
}

/// CONNECT to `remote.test` through the outbound listener and complete the TLS handshake
/// trusting only `ca`: `Ok` when the proxy's leaf chains to `ca`.
async fn intercepted_by(outbound: SocketAddr, ca: &GeneratedCa) -> Result<(), String> {
    let mut stream = TcpStream::connect(outbound).await.unwrap();
    stream
        .write_all(b"CONNECT remote.test:443 HTTP/1.1\r\nHost: remote.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.unwrap() == 0 {
            return Err("proxy closed the connection".to_owned());
        }
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("remote.test").unwrap(), stream)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_replaced_interception_ca_signs_the_next_tunnels_leaves() {
    bounded(async {
        let a = marker_homeserver("A").await;
        let stack = Stack::start(&Settings {
            homeserver: a,
            inbound_listen: "127.0.0.1:0",
            extra: String::new(),
        })
        .await;
        let outbound = stack.addr("outbound");
        intercepted_by(outbound, &stack.ca).await.unwrap();

        // The CA files are replaced in place (a rotated Kubernetes secret), then reloaded.
        let second = new_ca("second interception CA");
        write_ca(
            &stack.dir.path().join("ca.crt"),
            &stack.dir.path().join("ca.key"),
            &second,
            true,
        )
        .unwrap();
        let report = stack.server.reload().await;
        assert_eq!(report.outcome, Outcome::Applied, "{report:?}");
        assert_eq!(report.changed, ["outbound.ca (certificate file contents)"]);
        intercepted_by(outbound, &second).await.unwrap();
        let refused = intercepted_by(outbound, &stack.ca).await;
        assert!(refused.is_err(), "a cached leaf of the old CA was served");

        // A CA file that is not a CA keeps the second one running.
        std::fs::write(stack.dir.path().join("ca.crt"), "not a certificate").unwrap();
        let report = stack.server.reload().await;
        assert_eq!(report.outcome, Outcome::Rejected);
        assert!(
            report
                .error
                .as_deref()
                .unwrap()
                .starts_with("outbound.ca: "),
            "{report:?}"
        );
        intercepted_by(outbound, &second).await.unwrap();
        stack.server.stop().await;
    })
    .await;
}
