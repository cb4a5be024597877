//! Bad input and upstream faults against the inbound listener over raw TCP: every answer is
//! Matrix error JSON or a clean close, nothing hangs, and the listener keeps serving.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use timproxy::config::Config;
use timproxy::inbound::forward::{Body, full};
use timproxy::metrics::Metrics;
use timproxy::shutdown;

use super::support::start_inbound;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single exchange; a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(15);
/// Small rule-read body limit so oversized bodies stay cheap to send.
const MAX_BODY: u64 = 64 * 1024;

const NORMAL: u8 = 0;
/// The fake homeserver sleeps far beyond `homeserver.request_timeout`.
const SLOW: u8 = 1;

/// A fake homeserver: `whoami` knows one token, everything else answers a small JSON object.
async fn start_fake(listener: TcpListener, mode: Arc<AtomicU8>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let mode = mode.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let mode = mode.load(Ordering::SeqCst);
                    async move {
                        if mode == SLOW {
                            // Inherent: the slowness is what the tests of this mode are about.
                            tokio::time::sleep(Duration::from_secs(10)).await;
                        }
                        let body = if req.uri().path() == "/_matrix/client/v3/account/whoami" {
                            json!({"user_id":"@alice:hs1.test"})
                        } else {
                            json!({"versions":["v1.11"],"ok":true})
                        };
                        let mut r: Response<Body> = Response::new(full(body.to_string()));
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A "homeserver" that accepts every connection and drops it at once.
fn start_resetting(listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            drop(stream);
        }
    })
}

struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    metrics: Arc<Metrics>,
    _trigger: shutdown::ShutdownTrigger,
    server: JoinHandle<std::io::Result<()>>,
}

async fn start_proxy(upstream: SocketAddr, tweak: impl FnOnce(&mut Config)) -> Proxy {
    let mut config = Config::default();
    config.homeserver.url = format!("http://{upstream}").parse().unwrap();
    config.homeserver.server_name = "hs1.test".into();
    config.homeserver.request_timeout = Duration::from_secs(10);
    config.inbound.max_body_bytes = MAX_BODY;
    config.inbound.header_read_timeout = Duration::from_secs(2);
    tweak(&mut config);
    let inbound = start_inbound(config).await;
    Proxy {
        addr: inbound.addr,
        upstream,
        metrics: inbound.metrics,
        _trigger: inbound.trigger,
        server: inbound.server,
    }
}

/// Proxy in front of a well-behaved fake homeserver.
async fn start_normal(tweak: impl FnOnce(&mut Config)) -> (Proxy, Arc<AtomicU8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let mode = Arc::new(AtomicU8::new(NORMAL));
    start_fake(listener, mode.clone()).await;
    (start_proxy(upstream, tweak).await, mode)
}

/// What came back on one raw connection.
#[derive(Debug)]
struct Answer {
    /// Status of the first response, if any bytes of one arrived.
    status: Option<u16>,
    /// Its body (chunked encoding decoded).
    body: Vec<u8>,
    /// The server closed the connection (EOF or reset) within the wait.
    closed: bool,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn is_matrix_error(&self) -> bool {
        let status_ok = self.status.is_some_and(|s| (400..600).contains(&s));
        let errcode = self.json()["errcode"].as_str().map(str::to_owned);
        status_ok && errcode.is_some_and(|c| c.starts_with("M_"))
    }

    /// The answer to an unparsable head: a 4xx Matrix error, and the connection closed.
    fn is_refusal(&self) -> bool {
        self.closed && self.is_matrix_error() && self.status.is_some_and(|s| s < 500)
    }
}

fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..pos]);
        let size_text = size_text.split(';').next().unwrap_or("").trim().to_owned();
        let Ok(size) = usize::from_str_radix(&size_text, 16) else {
            break;
        };
        raw = &raw[pos + 2..];
        if size == 0 || raw.len() < size {
            out.extend_from_slice(&raw[..size.min(raw.len())]);
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Parse the first response in `buf`; `None` until its head and body are complete.
fn parse_response(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let rest = &buf[end + 4..];
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    if let Some(length) = length {
        return (rest.len() >= length).then(|| (status, rest[..length].to_vec()));
    }
    if head.contains("transfer-encoding: chunked") {
        return rest
            .windows(5)
            .any(|w| w == b"0\r\n\r\n")
            .then(|| (status, decode_chunked(rest)));
    }
    None
}

/// Read until one complete response arrived or the server closed, bounded by `wait`.
async fn read_answer<R: tokio::io::AsyncRead + Unpin>(stream: &mut R, wait: Duration) -> Answer {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut closed = false;
    loop {
        if let Some((status, body)) = parse_response(&buf) {
            // Give the server a moment to close after a `Connection: close` answer.
            let mut probe = [0u8; 1];
            let after = tokio::time::timeout(Duration::from_millis(500), stream.read(&mut probe));
            let closed = matches!(after.await, Ok(Ok(0)) | Ok(Err(_)));
            return Answer {
                status: Some(status),
                body,
                closed,
            };
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let status = end.and_then(|end| {
        String::from_utf8_lossy(&buf[..end])
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
    });
    let body = end.map(|e| buf[e + 4..].to_vec()).unwrap_or_default();
    Answer {
        status,
        body,
        closed,
    }
}

/// Send raw bytes on a fresh connection and read the answer. The write runs beside the read
/// so a server that answers early (413) is seen even while the client is still sending.
async fn exchange(addr: SocketAddr, bytes: Vec<u8>) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&bytes).await;
        let _ = write.flush().await;
        // Keep the write half open (until the answer is read and this task aborted) so a
        // half-close is not mistaken for the server's close.
        std::future::pending::<()>().await;
        drop(write);
    });
    let answer = read_answer(&mut read, WAIT).await;
    writer.abort();
    answer
}

/// What a corpus entry must produce.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// This status with Matrix error JSON carrying this errcode.
    Error(u16, &'static str),
    /// Any 4xx/5xx with Matrix error JSON.
    AnyError,
    /// HTTP parsing failed: a 4xx with Matrix error JSON, then the connection is closed.
    Refused,
    /// Not the proxy's to judge: forwarded to the homeserver (the fake answers 200). The proxy
    /// matches raw paths and checks only the X-Matrix origin; decoding parameters and verifying
    /// signatures is the homeserver's job.
    Forwarded,
}

const TOKEN: &str = "Bearer tok-alice";

fn request(method: &str, target: &[u8], headers: &[(&str, &[u8])], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: hs1.test\r\nconnection: close\r\n");
    for (k, v) in headers {
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

fn authed(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    request(
        method,
        target.as_bytes(),
        &[
            ("authorization", TOKEN.as_bytes()),
            ("content-type", b"application/json"),
        ],
        body,
    )
}

fn federation(target: &str, x_matrix: &[u8]) -> Vec<u8> {
    request(
        "PUT",
        target.as_bytes(),
        &[("authorization", x_matrix)],
        b"{}",
    )
}

const CREATE_ROOM: &str = "/_matrix/client/v3/createRoom";
const INVITE: &str = "/_matrix/client/v3/rooms/%21r%3Ahs1.test/invite";
const STATE: &str = "/_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.join_rules/";
const FED_SEND: &str = "/_matrix/federation/v1/send/txn1";
const FED_INVITE: &str = "/_matrix/federation/v2/invite/%21r%3Ahs1.test/%24e";

/// The malformed-input corpus: (name, raw bytes, expectation).
fn corpus() -> Vec<(&'static str, Vec<u8>, Expect)> {
    let nested = "[".repeat(100_000).into_bytes();
    let deep_object = format!("{{\"invite\":{}", "[".repeat(100_000)).into_bytes();
    let big_body = {
        let mut b = b"{\"name\":\"".to_vec();
        b.extend(std::iter::repeat_n(b'a', 2 * MAX_BODY as usize));
        b.extend_from_slice(b"\"}");
        b
    };
    let chunked_big = {
        let mut b = format!(
            "POST {CREATE_ROOM} HTTP/1.1\r\nhost: hs1.test\r\nconnection: close\r\n\
             authorization: {TOKEN}\r\ntransfer-encoding: chunked\r\n\r\n"
        )
        .into_bytes();
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..(2 * MAX_BODY as usize / chunk.len()) {
            b.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
            b.extend_from_slice(&chunk);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(b"0\r\n\r\n");
        b
    };
    let many_params = {
        let mut v = b"X-Matrix origin=\"hs2.test\"".to_vec();
        for i in 0..10_000 {
            v.extend_from_slice(format!(",k{i}=\"v\"").as_bytes());
        }
        v
    };
    let big_header_value = vec![b'a'; 100 * 1024];
    let huge_header_value = vec![b'a'; 1024 * 1024];
    let many_headers: Vec<u8> = {
        let mut b = b"GET /_matrix/client/versions HTTP/1.1\r\nhost: a\r\n".to_vec();
        for i in 0..500 {
            b.extend_from_slice(format!("x-h{i}: v\r\n").as_bytes());
        }
        b.extend_from_slice(b"\r\n");
        b
    };
    vec![
        // Request lines.
        ("garbage request line", b"HELLO\r\n\r\n".to_vec(), Expect::Refused),
        ("binary noise", vec![0u8, 159, 146, 150, 255, 13, 10, 13, 10], Expect::Refused),
        ("missing version", b"GET /_matrix/client/versions\r\n\r\n".to_vec(), Expect::Refused),
        ("bad version", b"GET / HTTP/9.9\r\nhost: a\r\n\r\n".to_vec(), Expect::Refused),
        ("space in target", b"GET /a b HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(), Expect::Refused),
        ("bad method token", b"G(T / HTTP/1.1\r\nhost: a\r\n\r\n".to_vec(), Expect::Refused),
        ("absurd content-length", b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: a\r\ncontent-length: 99999999999999999999999\r\n\r\n".to_vec(), Expect::Refused),
        ("content-length beside chunked", b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: a\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), Expect::Refused),
        ("transfer coding other than chunked", b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: a\r\ntransfer-encoding: gzip\r\n\r\n".to_vec(), Expect::Error(501, "M_UNKNOWN")),
        ("unknown expectation", b"GET /_matrix/client/versions HTTP/1.1\r\nhost: a\r\nexpect: magic\r\n\r\n".to_vec(), Expect::Error(417, "M_UNKNOWN")),
        ("two content-lengths", b"POST /_matrix/client/v3/createRoom HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n{}".to_vec(), Expect::Refused),
        // Headers.
        ("header without colon", b"GET /_matrix/client/versions HTTP/1.1\r\nhost a\r\n\r\n".to_vec(), Expect::Refused),
        ("header name with NUL", b"GET /_matrix/client/versions HTTP/1.1\r\nx\0y: 1\r\n\r\n".to_vec(), Expect::Refused),
        ("header value with bare CR", b"GET /_matrix/client/versions HTTP/1.1\r\nx: a\rb\r\n\r\n".to_vec(), Expect::Refused),
        ("500 headers", many_headers, Expect::Refused),
        ("1 MiB header", request("GET", b"/_matrix/client/versions", &[("x-big", &huge_header_value)], b""), Expect::Refused),
        ("100 KiB auth header on createRoom", request("POST", CREATE_ROOM.as_bytes(), &[("authorization", &big_header_value)], b"{}"), Expect::AnyError),
        ("non-ASCII bearer token", request("POST", CREATE_ROOM.as_bytes(), &[("authorization", "Bearer tök\u{00ff}".as_bytes())], b"{}"), Expect::AnyError),
        // Paths.
        ("bad percent-encoding in room id", authed("POST", "/_matrix/client/v3/rooms/%ZZroom%3/invite", b"{\"user_id\":\"@b:hs1.test\"}"), Expect::AnyError),
        ("truncated percent-encoding", authed("PUT", "/_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.join_rules/%", b"{}"), Expect::Forwarded),
        ("encoded NUL and slash in path", authed("POST", "/_matrix/client/v3/rooms/%00%2F%2e%2e/invite", b"{\"user_id\":\"@b:hs1.test\"}"), Expect::AnyError),
        ("invalid UTF-8 in path", request("GET", b"/_matrix/client/v3/rooms/\xff\xfe/members", &[], b""), Expect::AnyError),
        ("percent-encoded invalid UTF-8 in path", authed("POST", "/_matrix/client/v3/rooms/%FF%FE/invite", b"{\"user_id\":\"@b:hs1.test\"}"), Expect::AnyError),
        ("unknown endpoint", authed("GET", "/_matrix/client/v3/nonsense/%%%", b""), Expect::AnyError),
        ("dot segments", authed("GET", "/_matrix/client/v3/../../etc/passwd", b""), Expect::AnyError),
        ("empty segment", authed("POST", "/_matrix/client/v3/rooms//invite", b"{}"), Expect::Error(404, "M_UNRECOGNIZED")),
        // Bodies on rule-read endpoints.
        ("createRoom over max_body_bytes", authed("POST", CREATE_ROOM, &big_body), Expect::Error(413, "M_TOO_LARGE")),
        ("chunked createRoom over max_body_bytes", chunked_big, Expect::Error(413, "M_TOO_LARGE")),
        ("invite over max_body_bytes", authed("POST", INVITE, &big_body), Expect::Error(413, "M_TOO_LARGE")),
        ("createRoom not JSON", authed("POST", CREATE_ROOM, b"this is not json"), Expect::AnyError),
        ("createRoom invalid UTF-8", authed("POST", CREATE_ROOM, b"{\"name\":\"\xff\xfe\"}"), Expect::AnyError),
        ("createRoom JSON array", authed("POST", CREATE_ROOM, b"[1,2,3]"), Expect::AnyError),
        ("createRoom 100k nested arrays", authed("POST", CREATE_ROOM, &nested), Expect::AnyError),
        ("createRoom deep invite list", authed("POST", CREATE_ROOM, &deep_object), Expect::AnyError),
        ("createRoom invite not a list", authed("POST", CREATE_ROOM, b"{\"invite\":\"@b:hs1.test\"}"), Expect::AnyError),
        ("createRoom invite bad ids", authed("POST", CREATE_ROOM, b"{\"invite\":[\"nobody\",\"@\",\"@x:\",\"@x:[::1\"]}"), Expect::AnyError),
        ("invite not JSON", authed("POST", INVITE, b"\x00\x01\x02"), Expect::AnyError),
        ("invite 100k nested arrays", authed("POST", INVITE, &nested), Expect::AnyError),
        ("invite user_id not a string", authed("POST", INVITE, b"{\"user_id\":{\"a\":[]}}"), Expect::AnyError),
        ("invite user_id invalid", authed("POST", INVITE, b"{\"user_id\":\"@\xc3\x28:hs1.test\"}"), Expect::AnyError),
        ("state not JSON", authed("PUT", STATE, b"}{"), Expect::AnyError),
        ("state 100k nested arrays", authed("PUT", STATE, &nested), Expect::AnyError),
        ("state invalid UTF-8", authed("PUT", STATE, b"{\"join_rule\":\"\xff\"}"), Expect::AnyError),
        ("state over max_body_bytes", authed("PUT", STATE, &big_body), Expect::Error(413, "M_TOO_LARGE")),
        // Hostile X-Matrix headers on federation paths.
        ("X-Matrix empty", federation(FED_SEND, b""), Expect::AnyError),
        ("X-Matrix scheme only", federation(FED_SEND, b"X-Matrix"), Expect::AnyError),
        ("X-Matrix unterminated quote", federation(FED_SEND, b"X-Matrix origin=\"hs2.test,key=\"ed25519:a\""), Expect::AnyError),
        ("X-Matrix lone quote", federation(FED_SEND, b"X-Matrix origin=\""), Expect::AnyError),
        // Servers send four parameters; thousands are refused at once, not compared pairwise.
        ("X-Matrix 10k params, known origin", federation(FED_SEND, &many_params), Expect::AnyError),
        ("X-Matrix non-ASCII origin", federation(FED_SEND, "X-Matrix origin=\"hs2.tést\",destination=\"hs1.test\",key=\"ed25519:a\",sig=\"x\"".as_bytes()), Expect::AnyError),
        ("X-Matrix raw high bytes", federation(FED_SEND, b"X-Matrix origin=\"\xff\xfe\",key=\"\x80\""), Expect::AnyError),
        ("X-Matrix origin with path", federation(FED_SEND, b"X-Matrix origin=\"hs2.test/../x\",key=\"a\",sig=\"b\""), Expect::AnyError),
        ("X-Matrix only commas", federation(FED_INVITE, b"X-Matrix ,,,,,,=,=\"\",\\"), Expect::AnyError),
        ("X-Matrix unknown origin", federation(FED_INVITE, b"X-Matrix origin=\"evil.test\",destination=\"hs1.test\",key=\"ed25519:a\",sig=\"x\""), Expect::AnyError),
        ("federation invite body not JSON", request("PUT", FED_INVITE.as_bytes(), &[("authorization", b"X-Matrix origin=\"hs2.test\",destination=\"hs1.test\",key=\"ed25519:a\",sig=\"x\"")], b"[[[["), Expect::AnyError),
        ("federation invite body nested", request("PUT", FED_INVITE.as_bytes(), &[("authorization", b"X-Matrix origin=\"hs2.test\",destination=\"hs1.test\",key=\"ed25519:a\",sig=\"x\"")], &nested), Expect::AnyError),
    ]
}

/// A normal request still gets a normal answer (the listener did not die).
async fn assert_alive(addr: SocketAddr) {
    let answer = exchange(addr, request("GET", b"/_matrix/client/versions", &[], b"")).await;
    assert_eq!(answer.status, Some(200), "listener not serving: {answer:?}");
}

#[tokio::test]
async fn malformed_input_gets_matrix_errors_or_a_clean_close() {
    let (proxy, _) = start_normal(|_| {}).await;
    assert_alive(proxy.addr).await;
    let mut failures = Vec::new();
    for (name, bytes, expect) in corpus() {
        let started = Instant::now();
        let answer = exchange(proxy.addr, bytes).await;
        let took = started.elapsed();
        let ok = match expect {
            Expect::Error(status, code) => {
                answer.status == Some(status) && answer.json()["errcode"] == code
            }
            Expect::AnyError => answer.is_matrix_error(),
            Expect::Refused => answer.is_refusal(),
            Expect::Forwarded => answer.status == Some(200) && answer.json()["ok"] == true,
        };
        // A hang shows up as neither an answer nor a close within WAIT.
        if !ok || took >= WAIT {
            failures.push(format!(
                "{name}: expected {expect:?}, got status {:?} closed {} after {took:?}: {}",
                answer.status,
                answer.closed,
                String::from_utf8_lossy(&answer.body[..answer.body.len().min(200)])
            ));
        }
        assert!(!proxy.server.is_finished(), "listener stopped after {name}");
        assert_alive(proxy.addr).await;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn slow_homeserver_gives_504_quickly() {
    let (proxy, mode) =
        start_normal(|c| c.homeserver.request_timeout = Duration::from_secs(1)).await;
    mode.store(SLOW, Ordering::SeqCst);
    let started = Instant::now();
    let answer = exchange(
        proxy.addr,
        request("GET", b"/_matrix/client/versions", &[], b""),
    )
    .await;
    assert_eq!(answer.status, Some(504), "{answer:?}");
    assert!(answer.is_matrix_error(), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    mode.store(NORMAL, Ordering::SeqCst);
    assert_alive(proxy.addr).await;
}

#[tokio::test]
async fn resetting_homeserver_gives_502_and_recovers_on_the_same_port() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let resetter = start_resetting(listener);
    let proxy = start_proxy(upstream, |c| {
        c.homeserver.request_timeout = Duration::from_secs(5)
    })
    .await;
    for _ in 0..3 {
        let answer = exchange(
            proxy.addr,
            request("GET", b"/_matrix/client/versions", &[], b""),
        )
        .await;
        assert_eq!(answer.status, Some(502), "{answer:?}");
        assert!(answer.is_matrix_error(), "{answer:?}");
    }
    // The homeserver comes back on the same port; the proxy needs no restart.
    resetter.abort();
    let _ = resetter.await;
    let listener = TcpListener::bind(proxy.upstream).await.unwrap();
    start_fake(listener, Arc::new(AtomicU8::new(NORMAL))).await;
    assert_alive(proxy.addr).await;
    let text = proxy.metrics.encode();
    assert!(text.contains("502"), "no 502 in metrics:\n{text}");
}

#[tokio::test]
async fn slow_loris_clients_are_disconnected_after_header_read_timeout() {
    let (proxy, _) = start_normal(|c| c.inbound.header_read_timeout = Duration::from_secs(1)).await;
    let cases: [(&str, &[u8]); 4] = [
        (
            "half a request head",
            b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n",
        ),
        ("half a request line", b"GET /_matrix/cli"),
        ("nothing at all", b""),
        ("part of the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ];
    for (name, bytes) in cases {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        let started = Instant::now();
        let answer = read_answer(&mut stream, Duration::from_secs(6)).await;
        assert!(
            answer.closed,
            "{name}: still open after {:?}",
            started.elapsed()
        );
        assert!(answer.body.is_empty(), "{name}: {answer:?}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name}: closed only after {:?}",
            started.elapsed()
        );
    }
    assert_alive(proxy.addr).await;
}

/// Log output of the current thread, for tests that check what an operator would read.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl CapturedLog {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for CapturedLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `inbound.max_connections` bounds accepted connections with a semaphore: beyond the limit,
/// new connections wait in the kernel's accept backlog (unanswered, not refused) until a slot
/// frees; the `open_connections` gauge shows the limit, and reaching it is logged once and
/// counted every time.
#[tokio::test]
async fn connections_beyond_max_connections_wait_for_a_free_slot() {
    // current-thread runtime: the listener task runs on this thread, under this subscriber.
    let log = CapturedLog::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let (proxy, _) = start_normal(|c| {
        c.inbound.max_connections = 4;
        c.inbound.header_read_timeout = Duration::from_secs(20);
    })
    .await;
    let keep_alive = b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(keep_alive).await.unwrap();
        let answer = read_answer(&mut s, WAIT).await;
        assert_eq!(answer.status, Some(200), "{answer:?}");
        assert!(!answer.closed);
        held.push(s);
    }
    let text = proxy.metrics.encode();
    assert!(
        text.contains(r#"open_connections{listener="inbound"} 4"#),
        "gauge:\n{text}"
    );
    let mut fifth = TcpStream::connect(proxy.addr).await.unwrap();
    fifth.write_all(keep_alive).await.unwrap();
    let waiting = read_answer(&mut fifth, Duration::from_secs(1)).await;
    assert_eq!(waiting.status, None, "fifth connection served: {waiting:?}");
    assert!(!waiting.closed, "fifth connection refused: {waiting:?}");
    let text = proxy.metrics.encode();
    assert!(
        text.contains(r#"connection_limit_reached_total{listener="inbound"} 1"#),
        "counter:\n{text}"
    );
    let logged = log.text();
    assert!(
        logged.contains("inbound connection limit reached") && logged.contains("max_connections=4"),
        "log:\n{logged}"
    );
    drop(held.pop());
    let served = read_answer(&mut fifth, WAIT).await;
    assert_eq!(served.status, Some(200), "{served:?}");
    // A second time within the minute is counted but not logged again.
    let mut sixth = TcpStream::connect(proxy.addr).await.unwrap();
    sixth.write_all(keep_alive).await.unwrap();
    let waiting = read_answer(&mut sixth, Duration::from_millis(500)).await;
    assert_eq!(waiting.status, None, "sixth connection served: {waiting:?}");
    let text = proxy.metrics.encode();
    assert!(
        text.contains(r#"connection_limit_reached_total{listener="inbound"} 2"#),
        "counter:\n{text}"
    );
    assert_eq!(
        log.text()
            .matches("inbound connection limit reached")
            .count(),
        1,
        "log:\n{}",
        log.text()
    );
}
