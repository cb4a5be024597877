//! The outbound forward proxy over real sockets: a homeserver-like client (hyper + rustls
//! trusting only the interception CA) sends CONNECT through `outbound::serve` to a fake TLS
//! federation server whose certificate comes from a separate "origin" CA.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use timproxy::config::Config;
use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource};
use timproxy::metrics::{ListenerLabels, Metrics};
use timproxy::outbound::{self, OutboundState};
use timproxy::shutdown::Shutdown;
use timproxy::tls::ca::{CaOptions, CertificateAuthority, generate_ca};
use timproxy::tls::leaf::{LeafUsage, SubjectName, mint};
use timproxy::tls::{Authority, GeneratedCa};

const LIMIT: Duration = Duration::from_secs(30);

async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(LIMIT, future)
        .await
        .expect("test step exceeded its time bound")
}

/// A fake remote homeserver: TLS (http/1.1 only, like Synapse) with an origin-CA leaf for the
/// given names; echoes what it received as JSON. A path ending in `/close` is answered with
/// `Connection: close`.
struct Origin {
    port: u16,
    hits: Arc<AtomicUsize>,
    /// TLS connections accepted.
    connections: Arc<AtomicUsize>,
}

async fn spawn_origin(origin_ca: &CertificateAuthority, names: &[&str]) -> Origin {
    let names: Vec<SubjectName> = names
        .iter()
        .map(|n| SubjectName::parse(n).unwrap())
        .collect();
    let leaf = mint(
        origin_ca,
        &names,
        Duration::from_secs(3600),
        LeafUsage::ServerAndClient,
    )
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.cert_der.clone(), origin_ca.cert_der().clone()],
            leaf.key_der(),
        )
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counter = counter.clone();
            let accepted = accepted.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                let service = service_fn(move |request: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let header = |name: &str| {
                            request
                                .headers()
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let method = request.method().to_string();
                        let target = request.uri().to_string();
                        let keep_alive = if request.uri().path().ends_with("/close") {
                            "close"
                        } else {
                            "keep-alive"
                        };
                        let host = header("host");
                        let authorization = header("authorization");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let echo = serde_json::json!({
                            "method": method,
                            "target": target,
                            "host": host,
                            "authorization": authorization,
                            "body_len": body.len(),
                            "body_sha256": hex::encode(Sha256::digest(&body)),
                        });
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .header("connection", keep_alive)
                                .body(Full::new(Bytes::from(echo.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Origin {
        port,
        hits,
        connections,
    }
}

struct Proxy {
    addr: SocketAddr,
    state: Arc<OutboundState>,
    authority: Arc<Authority>,
    metrics: Arc<Metrics>,
    ca_pem: String,
    _dir: tempfile::TempDir,
}

fn list(domains: &[&str]) -> FederationList {
    FederationList::new(
        1,
        time::OffsetDateTime::now_utc(),
        false,
        ListSource::File,
        domains.iter().map(|d| DomainEntry {
            domain: (*d).to_owned(),
            is_insurance: false,
            telematik_id: None,
            ik: Vec::new(),
        }),
    )
}

/// The proxy with `hs1.test`, `hs2.test` federated (plus `extra`), names resolving to
/// loopback, upstream trust = the origin CA.
async fn spawn_proxy(
    origin_ca: &GeneratedCa,
    extra: &[&str],
    tweak: impl FnOnce(&mut Config),
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca_file: PathBuf = dir.path().join("origin-ca.crt");
    std::fs::write(&origin_ca_file, &origin_ca.cert_pem).unwrap();
    let mut config = Config::default();
    config.outbound.allow_private_destinations = true;
    config.federation.trusted_ca_files = vec![origin_ca_file];
    let loopback = "127.0.0.1".parse().unwrap();
    config.outbound.resolve = ["hs1.test", "hs2.test", "hs3.test", "matrix.hs2.test"]
        .into_iter()
        .map(|h| (h.to_owned(), loopback))
        .collect::<BTreeMap<_, _>>();
    tweak(&mut config);
    let mut domains = vec!["hs1.test", "hs2.test"];
    domains.extend_from_slice(extra);
    let federation = FederationHandle::with_list(Duration::from_secs(3600), list(&domains));
    let generated = generate_ca(&CaOptions::default()).unwrap();
    let ca = CertificateAuthority::from_generated(&generated).unwrap();
    let metrics = Metrics::new();
    let authority = Arc::new(Authority::new(
        ca,
        &config.outbound.cert_cache,
        config.outbound.leaf_validity,
        metrics.clone(),
    ));
    let state = Arc::new(
        OutboundState::new(&config, federation, authority.clone(), metrics.clone()).unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(outbound::serve(listener, state.clone(), Shutdown::never()));
    Proxy {
        addr,
        state,
        authority,
        metrics,
        ca_pem: generated.cert_pem,
        _dir: dir,
    }
}

/// Send a proxy request head; `Ok` = 200 and the socket to tunnel over, `Err` = status + body.
async fn connect(proxy: SocketAddr, head: &str) -> Result<TcpStream, (u16, String, String)> {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(
            n == 1,
            "proxy closed before the end of its response head: {buf:?}"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let status: u16 = head[9..12].parse().unwrap();
    if status == 200 {
        return Ok(stream);
    }
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    Err((status, head, body))
}

fn client_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// CONNECT (HTTP/1.0, no Host, like Synapse) + TLS with `sni`, trusting only the proxy CA.
async fn tunnel(proxy: &Proxy, target: &str, sni: &str, alpn: &[&[u8]]) -> Tls {
    let stream = connect(proxy.addr, &format!("CONNECT {target} HTTP/1.0\r\n\r\n"))
        .await
        .unwrap_or_else(|e| panic!("CONNECT {target} refused: {e:?}"));
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    TlsConnector::from(client_config(&proxy.ca_pem, alpn))
        .connect(name, stream)
        .await
        .unwrap()
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn http1(tls: Tls) -> Sender {
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

fn x_matrix(destination: &str) -> String {
    format!(
        r#"X-Matrix origin="hs1.test:8448",destination="{destination}",key="ed25519:a",sig="c2ln""#
    )
}

async fn send(
    sender: &mut Sender,
    method: &str,
    host: &str,
    target: &str,
    auth: Option<&str>,
    body: Bytes,
) -> (StatusCode, serde_json::Value) {
    let mut builder = Request::builder()
        .method(method)
        .uri(target)
        .header("host", host);
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    // An HTTP/1 connection takes the next request only once it has finished the last one;
    // sending before that fails with "connection was not ready".
    sender.ready().await.unwrap();
    let response = sender
        .send_request(builder.body(Full::new(body)).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

struct Fixture {
    origin_ca: GeneratedCa,
    origin: Origin,
}

async fn fixture() -> Fixture {
    let origin_ca = generate_ca(&CaOptions {
        common_name: "origin CA".to_owned(),
        ..CaOptions::default()
    })
    .unwrap();
    let authority = CertificateAuthority::from_generated(&origin_ca).unwrap();
    let origin = spawn_origin(
        &authority,
        &["hs2.test", "hs3.test", "matrix.hs2.test", "127.0.0.1"],
    )
    .await;
    Fixture { origin_ca, origin }
}

fn rejections(metrics: &Metrics, rule: &str) -> u64 {
    crate::support::rule_count(&metrics.encode(), "rejections", "outbound", rule, "enforce")
}

#[tokio::test]
async fn allowed_destination_is_forwarded_with_body_intact_over_keep_alive() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        // Synapse: SNI without port, no ALPN.
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let body: Bytes = (0..300_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        // Not an event-carrying endpoint: the body streams through unread.
        let path = "/_matrix/federation/v1/get_missing_events/%21room%3Ahs2.test?x=1";
        let (status, echo) = send(
            &mut sender,
            "POST",
            &target,
            path,
            Some(&x_matrix(&target)),
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert_eq!(echo["method"], "POST");
        assert_eq!(
            echo["target"], path,
            "request target must be forwarded byte for byte"
        );
        assert_eq!(echo["host"], target);
        assert_eq!(echo["authorization"], x_matrix(&target));
        assert_eq!(echo["body_len"], body.len());
        assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&body)));
        // Second request in the same tunnel (keep-alive), key discovery without X-Matrix.
        let (status, echo) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/key/v2/server",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{echo}");
        let (status, _) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/federation/v1/version",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 3);
        assert!(
            proxy
                .metrics
                .encode()
                .contains("timproxy_upstream_seconds_count{listener=\"outbound\"} 3")
        );
    })
    .await;
}

#[tokio::test]
async fn connect_to_unfederated_host_is_refused_before_tls_with_matrix_json() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let head = format!("CONNECT hs3.test:{} HTTP/1.0\r\n\r\n", f.origin.port);
        let Err((status, head, body)) = connect(proxy.addr, &head).await else {
            panic!("CONNECT to hs3.test must be refused");
        };
        assert_eq!(status, 403);
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body, serde_json::json!({"errcode": "M_FORBIDDEN", "error": "hs3.test not part of federation"}));
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 0);
        assert_eq!(proxy.authority.mints(), 0, "no certificate for refused hosts");
        assert_eq!(rejections(&proxy.metrics, "A_25534-connect"), 1);
    })
    .await;
}

#[tokio::test]
async fn delegated_subdomain_of_a_federated_domain_may_be_connected() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("matrix.hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "matrix.hs2.test", &[]).await).await;
        let (status, _) = send(
            &mut sender,
            "GET",
            "hs2.test",
            "/_matrix/federation/v1/query/profile",
            Some(&x_matrix("hs2.test")),
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn unfederated_destination_inside_a_tunnel_is_refused_without_upstream_contact() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, body) = send(
            &mut sender,
            "PUT",
            &target,
            "/_matrix/federation/v1/send/t",
            Some(&x_matrix("hs3.test:8450")),
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            serde_json::json!({"errcode": "M_FORBIDDEN", "error": "not part of federation"})
        );
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 0);
        assert_eq!(rejections(&proxy.metrics, "A_25534-destination"), 1);
    })
    .await;
}

/// What the homeserver's outgoing federation carries: events of its own users (and, on
/// behalf, remote joins).
fn outgoing_pdu(sender: &str) -> serde_json::Value {
    serde_json::json!({"type":"m.room.message","room_id":"!room:hs1.test","sender":sender,
        "origin_server_ts":1,"depth":4,"content":{"body":"hi"},"prev_events":["$p"],
        "auth_events":["$a"],"hashes":{"sha256":"aA"},"signatures":{"hs1.test:8448":{"ed25519:a":"c2ln"}}})
}

/// Issue 14, "every event's domains", outbound: a transaction or event the homeserver sends
/// that names a non-federated domain does not leave. A transaction is answered
/// `{"pdus":{}}` (so the homeserver's queue for that destination moves on), a single event
/// is refused; clean ones are forwarded byte for byte.
#[tokio::test]
async fn outgoing_events_naming_non_federated_domains_do_not_leave() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let auth = x_matrix(&target);
        let txn = |pdus: Vec<serde_json::Value>| {
            Bytes::from(
                serde_json::json!({"origin":"hs1.test:8448","origin_server_ts":1,"pdus":pdus,
                    "edus":[{"edu_type":"m.presence","content":{"push":[{"user_id":"@a:hs1.test:8448","presence":"online"}]}}]})
                .to_string(),
            )
        };
        let clean = txn(vec![outgoing_pdu("@a:hs1.test:8448")]);
        let (status, echo) = send(&mut sender, "PUT", &target, "/_matrix/federation/v1/send/1",
            Some(&auth), clean.clone()).await;
        assert_eq!(status, StatusCode::OK, "{echo}");
        assert_eq!(echo["body_sha256"], hex::encode(Sha256::digest(&clean)));
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 1);

        let offending = txn(vec![outgoing_pdu("@a:hs1.test:8448"), outgoing_pdu("@x:evil.test")]);
        let (status, answer) = send(&mut sender, "PUT", &target, "/_matrix/federation/v1/send/2",
            Some(&auth), offending).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(answer, serde_json::json!({"pdus": {}}));

        let join = serde_json::json!({"type":"m.room.member","room_id":"!room:hs2.test","sender":"@x:evil.test",
            "state_key":"@x:evil.test","content":{"membership":"join"}});
        let (status, answer) = send(&mut sender, "PUT", &target,
            "/_matrix/federation/v2/send_join/%21room%3Ahs2.test/%24j", Some(&auth),
            Bytes::from(join.to_string())).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
        assert_eq!(answer["error"], "evil.test kann nicht in der Föderation gefunden werden");

        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 1, "an offending request left");
        assert_eq!(rejections(&proxy.metrics, "A_25534-event-domain"), 2);
    })
    .await;
}

/// Issue 16: the outbound operations of the spec's raw-data table (federation invites, v1
/// and v2, and single-event fetches) are reported from the intercepted requests, with the
/// remote server's status and the sizes on the wire; other federation traffic and requests
/// the proxy refused are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_invites_and_event_fetches_are_reported() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.homeserver.server_name = "hs1.test".to_owned();
        })
        .await;
        let sink = crate::rawdata::ReportSink::start("hs1.test").await;
        proxy.state.replace_observer(Some(sink.observer.clone()));
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let auth = x_matrix(&target);
        let mut exchange = async |method: &str, path: &str, body: Bytes| {
            let request = Request::builder()
                .method(method)
                .uri(path)
                .header("host", &target)
                .header("authorization", &auth)
                .header("useragent", r#"{"OS":"Linux"}"#)
                .body(Full::new(body))
                .unwrap();
            sender.ready().await.unwrap();
            let response = sender.send_request(request).await.unwrap();
            let status = response.status();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            (status, body)
        };

        let invite = Bytes::from(
            serde_json::json!({"room_version":"10","invite_room_state":[],"event":{
                "type":"m.room.member","room_id":"!room:hs1.test","sender":"@a:hs1.test",
                "state_key":"@b:hs2.test","content":{"membership":"invite"},"origin_server_ts":1,
                "depth":3,"prev_events":["$p"],"auth_events":["$a"],"hashes":{"sha256":"aA"},
                "signatures":{"hs1.test":{"ed25519:a":"c2ln"}}}})
            .to_string(),
        );
        let (status, invited) = exchange(
            "PUT",
            "/_matrix/federation/v2/invite/%21room%3Ahs1.test/%24inv",
            invite.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{invited:?}");
        let (status, fetched) =
            exchange("GET", "/_matrix/federation/v1/event/%24ev", Bytes::new()).await;
        assert_eq!(status, StatusCode::OK, "{fetched:?}");
        let (status, _) = exchange(
            "PUT",
            "/_matrix/federation/v1/send/1",
            Bytes::from(r#"{"origin":"hs1.test","origin_server_ts":1,"pdus":[]}"#),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 3);

        let mut reports = sink.take(2).await;
        reports.sort_by_key(|r| r.operation.code());
        let (invite_report, fetch_report) = (&reports[0], &reports[1]);
        assert_eq!(
            invite_report.operation,
            timproxy::rawdata::Operation::MpInviteOutsideOrganisationInviteSender
        );
        assert_eq!(invite_report.status, 200);
        assert_eq!(invite_report.message.res, 200);
        assert_eq!(invite_report.message.size_in, invite.len() as u64);
        assert_eq!(invite_report.message.size_out, invited.len() as u64);
        assert_eq!(
            fetch_report.operation,
            timproxy::rawdata::Operation::MpExchangeEventOutsideOrganisationSender
        );
        assert_eq!(fetch_report.message.size_in, 0);
        assert_eq!(fetch_report.message.size_out, fetched.len() as u64);
        for report in &reports {
            let m = &report.message;
            assert_eq!(m.inst_id, "inst-1");
            assert_eq!(m.m_dom, "hs1.test");
            // Server-to-server requests carry no client description.
            assert_eq!(m.ua_os, "n/a");
            assert_eq!(m.ua_cid, "n/a");
        }

        // Refused by the proxy (destination not federated): never sent, not reported.
        let mut refused = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, _) = send(
            &mut refused,
            "GET",
            &target,
            "/_matrix/federation/v1/event/%24ev",
            Some(&x_matrix("evil.test")),
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 3);
        assert_eq!(sink.finish().await, Vec::new());
    })
    .await;
}

#[tokio::test]
async fn requests_without_x_matrix_are_allowed_only_where_the_spec_allows() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        // (path, Host, expected status, expected (errcode, error) when refused)
        type Case<'a> = (&'a str, &'a str, StatusCode, Option<(&'a str, &'a str)>);
        let cases: &[Case] = &[
            (
                "/_matrix/federation/v1/send/t",
                "hs2.test",
                StatusCode::UNAUTHORIZED,
                Some((
                    "M_UNAUTHORIZED",
                    "missing X-Matrix authorization header with destination field",
                )),
            ),
            ("/_matrix/key/v2/server", "hs2.test", StatusCode::OK, None),
            (
                "/_matrix/federation/v1/version",
                "hs2.test",
                StatusCode::OK,
                None,
            ),
            (
                "/.well-known/matrix/server",
                "hs2.test",
                StatusCode::OK,
                None,
            ),
            (
                "/.well-known/matrix/server",
                "hs3.test",
                StatusCode::FORBIDDEN,
                Some(("M_FORBIDDEN", "hs3.test not part of federation")),
            ),
            (
                "/_matrix/media/v3/download/hs2.test/abc",
                "hs2.test",
                StatusCode::OK,
                None,
            ),
            (
                "/_matrix/media/v3/download/hs3.test%3A8450/abc",
                "hs2.test",
                StatusCode::FORBIDDEN,
                Some((
                    "M_FORBIDDEN",
                    "hs3.test:8450 kann nicht in der Föderation gefunden werden",
                )),
            ),
            (
                "/blubs",
                "hs2.test",
                StatusCode::NOT_FOUND,
                Some(("M_UNRECOGNIZED", "Unrecognized request")),
            ),
        ];
        let mut forwarded = 0;
        for (path, host, expected, error) in cases {
            let (status, body) = send(&mut sender, "GET", host, path, None, Bytes::new()).await;
            assert_eq!(status, *expected, "{path} (Host {host}): {body}");
            match error {
                Some((errcode, message)) => {
                    assert_eq!(body["errcode"], *errcode, "{path}");
                    assert_eq!(body["error"], *message, "{path}");
                }
                None => forwarded += 1,
            }
        }
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), forwarded);
    })
    .await;
}

/// CONNECT, then TLS trusting only the *origin* CA: succeeds only when the proxy tunnels the
/// bytes instead of intercepting them.
async fn passthrough_tunnel(proxy: &Proxy, origin_ca_pem: &str, target: &str, sni: &str) -> Tls {
    let stream = connect(proxy.addr, &format!("CONNECT {target} HTTP/1.0\r\n\r\n"))
        .await
        .unwrap_or_else(|e| panic!("CONNECT {target} refused: {e:?}"));
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    TlsConnector::from(client_config(origin_ca_pem, &[]))
        .connect(name, stream)
        .await
        .unwrap_or_else(|e| panic!("TLS through the tunnel to {target} failed: {e}"))
}

fn requests(metrics: &Metrics, endpoint: &str, status: u16) -> u64 {
    let needle = format!(
        r#"timproxy_requests_total{{listener="outbound",endpoint="{endpoint}",status="{status}"}} "#
    );
    metrics
        .encode()
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn passthrough_destinations_are_tunnelled_without_interception() {
    bounded(async {
        let f = fixture().await;
        let port = f.origin.port;
        // hs3.test (not federated) at one port, hs2.test (federated) by host: the explicit
        // entry wins over the federation list.
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.passthrough = vec![format!("hs3.test:{port}"), "hs2.test".to_owned()];
        })
        .await;
        for host in ["hs3.test", "hs2.test"] {
            let target = format!("{host}:{port}");
            let tls = passthrough_tunnel(&proxy, &f.origin_ca.cert_pem, &target, host).await;
            // The origin's own certificate, not a minted leaf.
            let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
            let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
            assert!(
                leaf.issuer().to_string().contains("origin CA"),
                "{}",
                leaf.issuer()
            );
            let mut sender = http1(tls).await;
            // Paths no federation route knows pass: OIDC token exchange, push notify.
            for (method, path) in [
                ("POST", "/oauth2/token"),
                ("POST", "/_matrix/push/v1/notify"),
                ("GET", "/.well-known/openid-configuration"),
            ] {
                let (status, body) = send(
                    &mut sender,
                    method,
                    host,
                    path,
                    None,
                    Bytes::from_static(b"{}"),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{host}{path}: {body}");
                assert_eq!(body["target"], path);
            }
        }
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 6);
        assert_eq!(requests(&proxy.metrics, "CONNECT (pass-through)", 200), 2);
        // Another port of the port-bound entry is not passed through (and hs3 is not federated).
        let refused = connect(proxy.addr, "CONNECT hs3.test:1 HTTP/1.0\r\n\r\n").await;
        let (status, _, body) = refused.expect_err("CONNECT hs3.test:1 was allowed");
        assert_eq!(status, 403, "{body}");
    })
    .await;
}

/// The reference's `ssoDomain`: the SSO server (SyTest's CAS server, which is also a
/// federation peer and key notary) is intercepted with a minted leaf, so a homeserver trusting
/// only the proxy CA reaches it; it needs no federation-list entry, its own paths pass, and the
/// federation requests inside the tunnel keep their destination checks.
#[tokio::test]
async fn sso_hosts_are_intercepted_without_the_federation_list_check() {
    bounded(async {
        let f = fixture().await;
        let port = f.origin.port;
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.sso_hosts = vec![format!("hs3.test:{port}")];
        })
        .await;
        let target = format!("hs3.test:{port}");
        // `tunnel` trusts only the proxy CA: a pass-through tunnel would fail here.
        let tls = tunnel(&proxy, &target, "hs3.test", &[]).await;
        let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        assert!(
            !leaf.issuer().to_string().contains("origin CA"),
            "a minted leaf, not the origin's certificate: {}",
            leaf.issuer()
        );
        let mut sender = http1(tls).await;
        for (method, path) in [
            ("GET", "/cas/proxyValidate?ticket=t&service=s"),
            ("POST", "/oauth2/token"),
            ("GET", "/_matrix/key/v2/server"),
        ] {
            let (status, body) = send(
                &mut sender,
                method,
                &target,
                path,
                None,
                Bytes::from_static(b"{}"),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
        // Matrix federation to a destination outside the list stays refused inside the tunnel.
        let (status, _) = send(
            &mut sender,
            "PUT",
            &target,
            "/_matrix/federation/v1/send/t",
            Some(&x_matrix("hs3.test")),
            Bytes::from_static(b"{}"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(rejections(&proxy.metrics, "A_25534-destination"), 1);
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 3);
        assert_eq!(requests(&proxy.metrics, "CONNECT (pass-through)", 200), 0);
        // Another port of the host is neither an SSO host nor federated.
        let refused = connect(proxy.addr, "CONNECT hs3.test:1 HTTP/1.0\r\n\r\n").await;
        let (status, _, body) = refused.expect_err("CONNECT hs3.test:1 was allowed");
        assert_eq!(status, 403, "{body}");
        // Without the entry, the same host is refused at CONNECT, and other paths of a
        // federated host are refused inside its tunnel.
        let plain = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let refused = connect(plain.addr, &format!("CONNECT {target} HTTP/1.0\r\n\r\n")).await;
        let (status, _, body) = refused.expect_err("CONNECT to an unlisted host was allowed");
        assert_eq!(status, 403, "{body}");
        let federated = format!("hs2.test:{port}");
        let mut sender = http1(tunnel(&plain, &federated, "hs2.test", &[]).await).await;
        let (status, _) = send(
            &mut sender,
            "GET",
            &federated,
            "/cas/proxyValidate",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(rejections(&plain.metrics, "outbound-unknown-path"), 1);
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test]
async fn passthrough_dial_failures_are_answered_before_the_tunnel() {
    bounded(async {
        let f = fixture().await;
        // A port nothing listens on.
        let closed = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.passthrough = vec!["hs3.test".to_owned()];
        })
        .await;
        let refused = connect(
            proxy.addr,
            &format!("CONNECT hs3.test:{closed} HTTP/1.0\r\n\r\n"),
        )
        .await;
        let (status, _, body) = refused.expect_err("a dead destination got 200");
        assert_eq!(status, 502, "{body}");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert_eq!(rejections(&proxy.metrics, "outbound-upstream-connect"), 1);
        // Loopback stays refused unless private destinations are allowed.
        let strict = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.passthrough = vec!["hs3.test".to_owned()];
            c.outbound.allow_private_destinations = false;
        })
        .await;
        let target = format!("CONNECT hs3.test:{} HTTP/1.0\r\n\r\n", f.origin.port);
        let (status, _, body) = connect(strict.addr, &target)
            .await
            .expect_err("a loopback destination got 200");
        assert_eq!(status, 403, "{body}");
        assert_eq!(
            rejections(&strict.metrics, "outbound-private-destination"),
            1
        );
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn served_certificate_is_for_the_sni_name_and_chains_to_the_ca() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let tls = tunnel(
            &proxy,
            &format!("hs2.test:{}", f.origin.port),
            "hs2.test",
            &[],
        )
        .await;
        let chain = tls.get_ref().1.peer_certificates().unwrap().to_vec();
        assert_eq!(chain.len(), 2, "leaf + CA");
        let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(san.general_names.len(), 1);
        assert_eq!(san.general_names[0].to_string(), "DNSName(hs2.test)");
        assert_eq!(tls.get_ref().1.alpn_protocol(), None);
    })
    .await;
}

/// Issue 14, finding 6: inside `CONNECT hs2.test:…`, a ClientHello for `www.google.com` got
/// a certificate for `www.google.com`. Only the CONNECT host gets a leaf now.
#[tokio::test]
async fn sni_other_than_the_connect_host_is_refused_before_minting() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        for sni in ["www.google.com", "hs1.test", "matrix.hs2.test"] {
            let stream = connect(proxy.addr, &format!("CONNECT {target} HTTP/1.0\r\n\r\n"))
                .await
                .unwrap();
            let name = ServerName::try_from(sni.to_owned()).unwrap();
            let handshake = TlsConnector::from(client_config(&proxy.ca_pem, &[]))
                .connect(name, stream)
                .await;
            assert!(handshake.is_err(), "a certificate was served for {sni}");
        }
        assert_eq!(proxy.authority.mints(), 0, "nothing may be minted");
        assert_eq!(rejections(&proxy.metrics, "outbound-sni-mismatch"), 3);
        // The CONNECT host itself, in any case and with a trailing dot, is served its leaf.
        for sni in ["HS2.Test", "hs2.test."] {
            let mut sender = http1(tunnel(&proxy, &target, sni, &[]).await).await;
            let (status, body) = send(
                &mut sender,
                "GET",
                &target,
                "/_matrix/key/v2/server",
                None,
                Bytes::new(),
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{sni}: {body}");
        }
        assert_eq!(proxy.authority.mints(), 1, "one leaf, for hs2.test");
    })
    .await;
}

#[tokio::test]
async fn ip_literal_without_sni_gets_an_ip_san() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.allow_hosts = vec!["127.0.0.1".to_owned()]
        })
        .await;
        let target = format!("127.0.0.1:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "127.0.0.1", &[]).await).await;
        let (status, body) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/key/v2/server",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    })
    .await;
}

#[tokio::test]
async fn h2_is_spoken_inside_the_tunnel_when_offered() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let tls = tunnel(&proxy, &target, "hs2.test", &[b"h2", b"http/1.1"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = Request::builder()
            .method("POST")
            .uri(format!(
                "https://{target}/_matrix/federation/v1/user/keys/query"
            ))
            .header("authorization", x_matrix(&target))
            .body(Full::new(Bytes::from_static(b"{\"device_keys\":{}}")))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(echo["host"], target, "h2 :authority becomes Host upstream");
        assert_eq!(echo["body_len"], 18);
    })
    .await;
}

#[tokio::test]
async fn certificate_cache_stays_bounded_and_counts_every_mint() {
    bounded(async {
        let f = fixture().await;
        let hosts: Vec<String> = (0..8).map(|i| format!("h{i}.fed.test")).collect();
        let extra: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let proxy = spawn_proxy(&f.origin_ca, &extra, |c| {
            c.outbound.cert_cache.max_entries = 3
        })
        .await;
        for host in &hosts {
            let tls = tunnel(&proxy, &format!("{host}:443"), host, &[]).await;
            drop(tls);
        }
        assert_eq!(proxy.authority.mints(), 8);
        assert!(proxy.authority.cached_hosts().await <= 3);
        assert!(
            proxy
                .metrics
                .encode()
                .contains("timproxy_cert_mints_total 8")
        );
    })
    .await;
}

#[tokio::test]
async fn concurrent_first_connections_to_one_host_mint_once() {
    bounded(async {
        let f = fixture().await;
        let proxy = Arc::new(spawn_proxy(&f.origin_ca, &[], |_| {}).await);
        let target = format!("hs2.test:{}", f.origin.port);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..16 {
            let proxy = proxy.clone();
            let target = target.clone();
            tasks.spawn(async move { drop(tunnel(&proxy, &target, "hs2.test", &[]).await) });
        }
        while let Some(result) = tasks.join_next().await {
            result.unwrap();
        }
        assert_eq!(proxy.authority.mints(), 1);
    })
    .await;
}

#[tokio::test]
async fn unreachable_upstream_is_a_502_inside_the_tunnel() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.connect_timeout = Duration::from_secs(5)
        })
        .await;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let target = format!("hs2.test:{port}");
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, body) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/federation/v1/version",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["errcode"], "M_UNKNOWN");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("Can't connect to server {target}")),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn upstream_with_an_untrusted_certificate_is_a_502() {
    bounded(async {
        let f = fixture().await;
        let other = generate_ca(&CaOptions::default()).unwrap();
        let proxy = spawn_proxy(&other, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, body) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/key/v2/server",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("TLS handshake"),
            "{body}"
        );
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn private_destination_is_refused_unless_allowed() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |c| {
            c.outbound.allow_private_destinations = false
        })
        .await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, body) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/key/v2/server",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(
            rejections(&proxy.metrics, "outbound-private-destination"),
            1
        );
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test]
async fn plain_http_forwarding_is_405_and_malformed_connect_is_400_text() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let (status, _, body) = connect(
            proxy.addr,
            "GET http://hs2.test/_matrix/key/v2/server HTTP/1.1\r\nHost: hs2.test\r\n\r\n",
        )
        .await
        .err()
        .unwrap();
        assert_eq!(status, 405);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errcode"], "M_UNRECOGNIZED");
        assert!(body["error"].as_str().unwrap().contains("CONNECT"));
        let (status, head, body) = connect(proxy.addr, "CONNECT hs2.test HTTP/1.1\r\n\r\n")
            .await
            .err()
            .unwrap();
        assert_eq!(status, 400);
        assert!(head.contains("text/plain"), "{head}");
        assert!(body.starts_with("Unable to parse HTTP message"), "{body}");
        assert_eq!(rejections(&proxy.metrics, "connect-parse"), 1);
    })
    .await;
}

#[tokio::test]
async fn expired_federation_list_fails_closed_at_connect() {
    bounded(async {
        let f = fixture().await;
        let stale = FederationList::new(
            1,
            time::OffsetDateTime::now_utc() - time::Duration::hours(100),
            false,
            ListSource::File,
            vec![DomainEntry {
                domain: "hs2.test".to_owned(),
                is_insurance: false,
                telematik_id: None,
                ik: vec![],
            }],
        );
        let federation = FederationHandle::with_list(Duration::from_secs(72 * 3600), stale);
        let config = Config::default();
        let ca = CertificateAuthority::from_generated(&generate_ca(&CaOptions::default()).unwrap())
            .unwrap();
        let metrics = Metrics::new();
        let authority = Arc::new(Authority::new(
            ca,
            &config.outbound.cert_cache,
            config.outbound.leaf_validity,
            metrics.clone(),
        ));
        let state = Arc::new(OutboundState::new(&config, federation, authority, metrics).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(outbound::serve(listener, state, Shutdown::never()));
        let (status, _, body) = connect(
            addr,
            &format!(
                "CONNECT hs2.test:{} HTTP/1.1\r\nHost: hs2.test\r\n\r\n",
                f.origin.port
            ),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(status, 403);
        assert!(
            body.contains("federation list missing or older than max age"),
            "{body}"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_serve_returns() {
    bounded(async {
        let f = fixture().await;
        let config = Config::default();
        let federation =
            FederationHandle::with_list(Duration::from_secs(3600), list(&["hs2.test"]));
        let ca = CertificateAuthority::from_generated(&generate_ca(&CaOptions::default()).unwrap())
            .unwrap();
        let metrics = Metrics::new();
        let authority = Arc::new(Authority::new(
            ca,
            &config.outbound.cert_cache,
            config.outbound.leaf_validity,
            metrics.clone(),
        ));
        let state = Arc::new(OutboundState::new(&config, federation, authority, metrics).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (trigger, shutdown) = timproxy::shutdown::channel();
        let server = tokio::spawn(outbound::serve(listener, state, shutdown));
        // An open tunnel must not keep serve() alive past the drain.
        let _open = connect(
            addr,
            &format!("CONNECT hs2.test:{} HTTP/1.0\r\n\r\n", f.origin.port),
        )
        .await
        .unwrap();
        trigger.trigger();
        server.await.unwrap().unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "listener must be closed"
        );
    })
    .await;
}

/// Open outbound connections (tunnels) as the proxy counts them.
fn open_tunnels(metrics: &Metrics) -> i64 {
    metrics
        .open_connections
        .get_or_create(&ListenerLabels {
            listener: outbound::LISTENER,
        })
        .get()
}

/// Wait (bounded by the test's limit) until the proxy has closed every tunnel.
async fn all_tunnels_closed(metrics: &Metrics) {
    while open_tunnels(metrics) > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_later_tunnel_to_the_same_host_reuses_the_idle_upstream_connection() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        for round in 1..=3 {
            let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
            for _ in 0..2 {
                let (status, body) = send(
                    &mut sender,
                    "GET",
                    &target,
                    "/_matrix/key/v2/server",
                    None,
                    Bytes::new(),
                )
                .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["target"], "/_matrix/key/v2/server");
                assert_eq!(body["host"], target.as_str());
            }
            drop(sender);
            all_tunnels_closed(&proxy.metrics).await;
            assert_eq!(f.origin.hits.load(Ordering::SeqCst), round * 2);
            assert_eq!(
                f.origin.connections.load(Ordering::SeqCst),
                1,
                "round {round} opened another upstream connection"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn an_upstream_closing_after_an_answer_gets_a_new_connection_for_the_next_request() {
    bounded(async {
        let f = fixture().await;
        let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
        let target = format!("hs2.test:{}", f.origin.port);
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        for (i, path) in [
            "/_matrix/key/v2/close",
            "/_matrix/key/v2/close",
            "/_matrix/key/v2/server",
            "/_matrix/key/v2/server",
        ]
        .into_iter()
        .enumerate()
        {
            let (status, body) = send(&mut sender, "GET", &target, path, None, Bytes::new()).await;
            assert_eq!(status, StatusCode::OK, "request {i}: {body}");
            assert_eq!(body["target"], path);
        }
        assert_eq!(f.origin.hits.load(Ordering::SeqCst), 4);
        // Two closed after their answer; the third connection carried the last two.
        assert_eq!(f.origin.connections.load(Ordering::SeqCst), 3);
        // A closed connection is never handed to a later tunnel.
        drop(sender);
        all_tunnels_closed(&proxy.metrics).await;
        let mut sender = http1(tunnel(&proxy, &target, "hs2.test", &[]).await).await;
        let (status, _) = send(
            &mut sender,
            "GET",
            &target,
            "/_matrix/key/v2/server",
            None,
            Bytes::new(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(f.origin.connections.load(Ordering::SeqCst), 3);
    })
    .await;
}

/// A TLS origin that answers each request with the raw bytes `answer` gives for its method
/// and path, and closes the connection afterwards when it says so. It keeps every request
/// head and body as received, and counts connections accepted and closed.
struct Scripted {
    port: u16,
    received: Received,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

/// Each request head and body as received.
type Received = Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;
type Script = fn(&str, &str) -> (Vec<u8>, bool);
type AnyBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

async fn spawn_scripted(origin_ca: &GeneratedCa, answer: Script) -> Scripted {
    let authority = CertificateAuthority::from_generated(origin_ca).unwrap();
    let leaf = mint(
        &authority,
        &[SubjectName::parse("hs2.test").unwrap()],
        Duration::from_secs(3600),
        LeafUsage::ServerAndClient,
    )
    .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der())
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let scripted = Scripted {
        port: listener.local_addr().unwrap().port(),
        received: Arc::default(),
        connections: Arc::default(),
        closed: Arc::default(),
    };
    let (received, connections, closed) = (
        scripted.received.clone(),
        scripted.connections.clone(),
        scripted.closed.clone(),
    );
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, received, closed) = (acceptor.clone(), received.clone(), closed.clone());
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let mut buf = Vec::new();
                    while let Some((head, body)) = read_request(&mut tls, &mut buf).await {
                        let mut line = head.split(' ');
                        let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
                        let (bytes, close) = answer(method, path);
                        received.lock().unwrap().push((head.clone(), body));
                        if tls.write_all(&bytes).await.is_err() {
                            break;
                        }
                        if close {
                            // close_notify: over TLS it is what ends a close-delimited body.
                            let _ = tls.shutdown().await;
                            break;
                        }
                    }
                }
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    scripted
}

/// One request off `tls`: its head as text, and its body as sent (chunk framing included).
async fn read_request(
    tls: &mut tokio_rustls::server::TlsStream<TcpStream>,
    buf: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tls.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf.drain(..end).collect()).unwrap();
    let lower = head.to_ascii_lowercase();
    let complete = |buf: &[u8]| {
        if lower.contains("transfer-encoding: chunked") {
            buf.ends_with(b"0\r\n\r\n").then_some(buf.len())
        } else {
            let length = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse::<usize>().unwrap());
            (buf.len() >= length).then_some(length)
        }
    };
    loop {
        if let Some(len) = complete(buf) {
            return Some((head, buf.drain(..len).collect()));
        }
        let n = tls.read(&mut chunk).await.ok().filter(|&n| n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Status, fields and body of an answer read to its end.
async fn exchange(
    sender: &mut hyper::client::conn::http1::SendRequest<AnyBody>,
    request: Request<AnyBody>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A request without a body.
fn bodiless(method: &str, target: &str, path: &str) -> Request<AnyBody> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", target)
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}

/// Answers by the last segment of a key path (`/_matrix/key/v2/chunked`, …): key requests
/// pass the destination rules without X-Matrix.
fn answer_by_path(_method: &str, path: &str) -> (Vec<u8>, bool) {
    let large = "x".repeat(200_000);
    let answer = match path.strip_prefix("/_matrix/key/v2").unwrap_or(path) {
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nX-End: 2\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_owned(),
        "/interim" => "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_owned(),
        "/head" => "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n".to_owned(),
        "/large" => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{large}", large.len()),
        "/eof" => return (b"HTTP/1.1 200 OK\r\n\r\nto the end".to_vec(), true),
        // Kept alive by its fields, then closed by the origin while idle.
        "/idle-close" => return (b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nidle".to_vec(), true),
        _ => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_owned(),
    };
    (answer.into_bytes(), false)
}

/// The scripted origin, the proxy, the tunnel's target and an HTTP/1.1 client in the tunnel.
async fn scripted_tunnel() -> (
    Scripted,
    Proxy,
    String,
    hyper::client::conn::http1::SendRequest<AnyBody>,
) {
    let f = fixture().await;
    let origin = spawn_scripted(&f.origin_ca, answer_by_path).await;
    let proxy = spawn_proxy(&f.origin_ca, &[], |_| {}).await;
    let target = format!("hs2.test:{}", origin.port);
    let tls = tunnel(&proxy, &target, "hs2.test", &[]).await;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(connection);
    (origin, proxy, target, sender)
}

#[tokio::test]
async fn chunked_interim_head_large_and_close_delimited_answers_are_relayed() {
    bounded(async {
        let (origin, _proxy, target, mut sender) = scripted_tunnel().await;

        let (status, fields, body) = exchange(
            &mut sender,
            bodiless("GET", &target, "/_matrix/key/v2/chunked"),
        )
        .await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        assert_eq!(fields["x-end"], "2");
        assert!(
            fields.get("x-hop").is_none(),
            "a field Connection names is hop-by-hop"
        );

        let (status, _, body) = exchange(
            &mut sender,
            bodiless("GET", &target, "/_matrix/key/v2/interim"),
        )
        .await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));

        let (status, fields, body) = exchange(
            &mut sender,
            bodiless("HEAD", &target, "/_matrix/key/v2/head"),
        )
        .await;
        assert_eq!((status, body.len()), (StatusCode::OK, 0));
        assert_eq!(fields["content-length"], "10");

        let (status, _, body) = exchange(
            &mut sender,
            bodiless("GET", &target, "/_matrix/key/v2/large"),
        )
        .await;
        assert_eq!((status, body.len()), (StatusCode::OK, 200_000));
        assert!(body.iter().all(|&b| b == b'x'));
        // Every answer so far ended where its framing said: one upstream connection.
        assert_eq!(origin.connections.load(Ordering::SeqCst), 1);

        let (status, _, body) =
            exchange(&mut sender, bodiless("GET", &target, "/_matrix/key/v2/eof")).await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"to the end"[..]));
        let (status, _, _) = exchange(
            &mut sender,
            bodiless("GET", &target, "/_matrix/key/v2/other"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            origin.connections.load(Ordering::SeqCst),
            2,
            "an answer delimited by the close leaves nothing to reuse"
        );
        let heads: Vec<String> = origin
            .received
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| h.clone())
            .collect();
        assert!(
            heads[2].starts_with("HEAD /_matrix/key/v2/head HTTP/1.1\r\n"),
            "{heads:?}"
        );
        assert!(
            heads
                .iter()
                .all(|h| h.to_ascii_lowercase().contains(&format!("host: {target}")))
        );
    })
    .await;
}

#[tokio::test]
async fn a_kept_alive_upstream_connection_closed_while_idle_is_replaced() {
    bounded(async {
        let (origin, _proxy, target, mut sender) = scripted_tunnel().await;
        let path = "/_matrix/federation/v1/get_missing_events/%21r%3Ahs2.test";
        let post = |body: &'static [u8]| {
            Request::builder()
                .method("POST")
                .uri(path)
                .header("host", &target)
                .header("authorization", x_matrix(&target))
                .body(Full::new(Bytes::from_static(body)).boxed())
                .unwrap()
        };
        for (round, request) in [
            bodiless("GET", &target, "/_matrix/key/v2/other"),
            post(b"{}"),
        ]
        .into_iter()
        .enumerate()
        {
            let (status, _, body) = exchange(
                &mut sender,
                bodiless("GET", &target, "/_matrix/key/v2/idle-close"),
            )
            .await;
            assert_eq!((status, &body[..]), (StatusCode::OK, &b"idle"[..]));
            // The origin closed the connection the proxy keeps; the FIN has arrived.
            while origin.closed.load(Ordering::SeqCst) < round + 1 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // An idempotent request is sent again on a new connection when the old one turns
            // out closed; any other is only given a connection checked to be open.
            let (status, _, _) = exchange(&mut sender, request).await;
            assert_eq!(status, StatusCode::OK, "round {round}");
        }
        assert_eq!(origin.connections.load(Ordering::SeqCst), 3);
        let received = origin.received.lock().unwrap();
        let (head, body) = received.last().unwrap();
        assert!(head.starts_with(
            "POST /_matrix/federation/v1/get_missing_events/%21r%3Ahs2.test HTTP/1.1\r\n"
        ));
        assert!(
            head.to_ascii_lowercase().contains("content-length: 2\r\n"),
            "{head}"
        );
        assert_eq!(body, b"{}");
    })
    .await;
}

#[tokio::test]
async fn request_bodies_of_unknown_length_go_upstream_chunked() {
    bounded(async {
        let (origin, _proxy, target, mut sender) = scripted_tunnel().await;
        let frames = futures_util::stream::iter([&b"first,"[..], &b"second"[..]].map(|d| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(d)))
        }));
        let request = Request::builder()
            .method("POST")
            .uri("/_matrix/federation/v1/get_missing_events/%21r%3Ahs2.test")
            .header("host", &target)
            .header("authorization", x_matrix(&target))
            .body(http_body_util::StreamBody::new(frames).boxed())
            .unwrap();
        let (status, _, _) = exchange(&mut sender, request).await;
        assert_eq!(status, StatusCode::OK);
        let received = origin.received.lock().unwrap();
        let (head, body) = received.last().unwrap();
        let head = head.to_ascii_lowercase();
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        let decoded: Vec<u8> = String::from_utf8(body.clone())
            .unwrap()
            .split("\r\n")
            .collect::<Vec<_>>()
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .flat_map(|pair| pair[1].bytes().collect::<Vec<_>>())
            .collect();
        assert_eq!(decoded, b"first,second");
    })
    .await;
}
