//! The inbound listener as a browser sees it. CORS: preflights answered without the
//! homeserver, and every answer (the proxy's own, the homeserver's with or without its own CORS
//! fields) carrying each CORS field exactly once, over HTTP/1.1 and h2. SSO: Synapse's login
//! pages reachable exactly when `inbound.sso_endpoints` (or the flavour's default) says so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use timproxy::config::{Config, Flavour};
use timproxy::federation::{FederationHandle, FederationList, ListSource};
use timproxy::inbound::forward::full;
use timproxy::inbound::{self, InboundState};
use timproxy::metrics::Metrics;
use timproxy::shutdown;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAIT: Duration = Duration::from_secs(30);
const CORS_FIELDS: [&str; 3] = [
    "access-control-allow-origin",
    "access-control-allow-methods",
    "access-control-allow-headers",
];
/// What Synapse 1.163 adds to its answers (`synapse.http.server.set_cors_headers`), in its
/// capitalisation.
const SYNAPSE_CORS: &str = "Access-Control-Allow-Origin: *\r\n\
    Access-Control-Allow-Methods: GET, HEAD, POST, PUT, DELETE, OPTIONS\r\n\
    Access-Control-Allow-Headers: X-Requested-With, Content-Type, Authorization, Date\r\n\
    Access-Control-Expose-Headers: Synapse-Trace-Id, Server\r\n";
/// Path the fake homeserver answers with Synapse's CORS fields; everything else without.
const WITH_CORS: &str = "/_matrix/client/v3/sync";

/// A homeserver written on the raw socket, so its field lines reach the proxy exactly as
/// Synapse writes them.
async fn fake_homeserver(requests: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + length {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + length);
                    requests.fetch_add(1, Ordering::SeqCst);
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let cors = if path.starts_with(WITH_CORS) {
                        SYNAPSE_CORS
                    } else {
                        ""
                    };
                    let body = r#"{"from":"homeserver"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nServer: Synapse\r\nContent-Type: application/json\r\n{cors}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

struct Proxy {
    addr: SocketAddr,
    homeserver_requests: Arc<AtomicU64>,
    _trigger: shutdown::ShutdownTrigger,
}

async fn start() -> Proxy {
    start_with(|_| {}).await
}

async fn start_with(tweak: impl FnOnce(&mut Config)) -> Proxy {
    let requests = Arc::new(AtomicU64::new(0));
    let upstream = fake_homeserver(requests.clone()).await;
    let mut config = Config::default();
    config.homeserver.url = format!("http://{upstream}").parse().unwrap();
    config.homeserver.server_name = "hs1.test".into();
    tweak(&mut config);
    let list = FederationList::new(
        1,
        time::OffsetDateTime::now_utc(),
        false,
        ListSource::File,
        vec![],
    );
    let federation = FederationHandle::with_list(Duration::from_secs(3600), list);
    let state = InboundState::new(&config, federation, Metrics::new()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = shutdown::channel();
    tokio::spawn(inbound::serve(listener, Arc::new(state), signal));
    Proxy {
        addr,
        homeserver_requests: requests,
        _trigger: trigger,
    }
}

/// One HTTP/1.1 request on a fresh connection (`connection: close`); the answer's status, its
/// field lines (name lower-cased, value) in order, and its body.
async fn http1(
    proxy: &Proxy,
    method: &str,
    target: &str,
    fields: &str,
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let request = format!(
        "{method} {target} HTTP/1.1\r\nhost: hs1.test\r\norigin: https://app.example\r\n{fields}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer within time")
        .unwrap();
    let text = String::from_utf8(answer).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete head");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap();
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, fields, body.to_owned())
}

fn count(fields: &[(String, String)], name: &str) -> usize {
    fields.iter().filter(|(n, _)| n == name).count()
}

fn assert_cors_once(fields: &[(String, String)], what: &str) {
    for name in CORS_FIELDS {
        assert_eq!(count(fields, name), 1, "{what}: {name} in {fields:?}");
    }
    let origin = fields
        .iter()
        .find(|(n, _)| n == "access-control-allow-origin")
        .map(|(_, v)| v.as_str());
    assert_eq!(origin, Some("*"), "{what}");
}

#[tokio::test]
async fn preflight_is_answered_on_every_path_without_the_homeserver() {
    let proxy = start().await;
    let preflight = "access-control-request-method: POST\r\n\
                     access-control-request-headers: authorization, content-type\r\n";
    for target in [
        "/_matrix/client/v3/createRoom",
        "/_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message/t1",
        // TIM blocks it, yet the browser must get to read that refusal.
        "/_matrix/client/v1/login/get_token",
        "/_matrix/client/v3/no-such-endpoint",
        "/_matrix/federation/v1/version",
    ] {
        let (status, fields, body) = http1(&proxy, "OPTIONS", target, preflight, "").await;
        assert_eq!(status, 204, "{target}");
        assert!(body.is_empty(), "{target}: {body}");
        assert_cors_once(&fields, target);
        let methods = fields
            .iter()
            .find(|(n, _)| n == "access-control-allow-methods")
            .unwrap();
        assert!(methods.1.contains("POST") && methods.1.contains("PUT"));
        let headers = fields
            .iter()
            .find(|(n, _)| n == "access-control-allow-headers")
            .unwrap();
        assert!(headers.1.contains("Authorization") && headers.1.contains("Content-Type"));
    }
    assert_eq!(proxy.homeserver_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn proxy_rejections_carry_cors_and_a_readable_matrix_error() {
    let proxy = start().await;
    let cases = [
        // A_… guest access: the proxy's own 403.
        (
            "POST",
            "/_matrix/client/v3/register?kind=guest",
            403,
            "M_FORBIDDEN",
        ),
        (
            "GET",
            "/_matrix/client/v3/no-such-endpoint",
            404,
            "M_UNRECOGNIZED",
        ),
        (
            "DELETE",
            "/_matrix/client/v3/createRoom",
            405,
            "M_UNRECOGNIZED",
        ),
    ];
    for (method, target, status, errcode) in cases {
        let (got, fields, body) = http1(&proxy, method, target, "", "{}").await;
        assert_eq!(got, status, "{method} {target}: {body}");
        assert_cors_once(&fields, target);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["errcode"], errcode, "{target}");
    }
    assert_eq!(proxy.homeserver_requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn homeserver_answers_carry_each_cors_field_once() {
    let proxy = start().await;
    // Synapse's own fields pass as they are, nothing is added beside them.
    let (status, fields, body) = http1(&proxy, "GET", WITH_CORS, "", "").await;
    assert_eq!(status, 200, "{body}");
    assert_cors_once(&fields, "homeserver with CORS");
    assert_eq!(count(&fields, "access-control-expose-headers"), 1);
    // An answer without them gets the proxy's.
    let (status, fields, body) =
        http1(&proxy, "GET", "/_matrix/client/v3/pushrules/", "", "").await;
    assert_eq!(status, 200, "{body}");
    assert_cors_once(&fields, "homeserver without CORS");
    assert_eq!(body, r#"{"from":"homeserver"}"#);
    assert_eq!(proxy.homeserver_requests.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn h2_answers_and_preflights_carry_each_cors_field_once() {
    let proxy = start().await;
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let cases = [
        (Method::OPTIONS, "/_matrix/client/v3/createRoom", 204),
        (Method::GET, WITH_CORS, 200),
        (Method::GET, "/_matrix/client/v3/pushrules/", 200),
        (Method::POST, "/_matrix/client/v3/register?kind=guest", 403),
    ];
    for (method, target, status) in cases {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{target}", proxy.addr))
            .header("origin", "https://app.example")
            .body(full(Bytes::from_static(b"{}")))
            .unwrap();
        let response = tokio::time::timeout(WAIT, sender.send_request(request))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.status(), status, "{method} {target}");
        for name in CORS_FIELDS {
            assert_eq!(
                response.headers().get_all(name).iter().count(),
                1,
                "{method} {target}: {name} in {:?}",
                response.headers()
            );
        }
        let _ = response.into_body().collect().await;
    }
}

/// The pages a browser walks through during an SSO login, beyond the Matrix API.
const SSO_PAGES: [(&str, &str); 4] = [
    ("GET", "/_synapse/client/oidc/callback?code=c&state=s"),
    ("POST", "/_synapse/client/oidc/callback"),
    (
        "GET",
        "/_synapse/client/pick_idp?redirectUrl=https%3A%2F%2Fapp.example%2F",
    ),
    (
        "GET",
        "/_matrix/client/v3/login/cas/ticket?ticket=t&redirectUrl=x",
    ),
];

#[tokio::test]
async fn sso_pages_follow_the_flavour_unless_configured() {
    let cases = [
        (Flavour::Epa, None, true),
        (Flavour::Pro, None, false),
        (Flavour::Pro, Some(true), true),
        (Flavour::Epa, Some(false), false),
    ];
    for (flavour, setting, open) in cases {
        let proxy = start_with(|c| {
            c.policy.flavour = flavour;
            c.inbound.sso_endpoints = setting;
        })
        .await;
        for (method, target) in SSO_PAGES {
            let (status, fields, body) = http1(&proxy, method, target, "", "").await;
            let what = format!("{flavour:?} {setting:?}: {method} {target}");
            if open {
                assert_eq!(status, 200, "{what}: {body}");
                assert_eq!(body, r#"{"from":"homeserver"}"#, "{what}");
            } else {
                assert_eq!(status, 404, "{what}: {body}");
                assert!(body.contains("M_UNRECOGNIZED"), "{what}: {body}");
            }
            assert_cors_once(&fields, &what);
        }
        let forwarded = proxy.homeserver_requests.load(Ordering::SeqCst);
        assert_eq!(forwarded, if open { SSO_PAGES.len() as u64 } else { 0 });
        // The rest of /_synapse stays closed either way.
        let (status, _, _) = http1(&proxy, "GET", "/_synapse/admin/v1/users", "", "").await;
        assert_eq!(status, 404);
    }
}
