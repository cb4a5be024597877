//! Strict HTTP/1 on the inbound listener (issue 14, finding 5), over raw TCP against a real
//! listener: every framing two hops could read differently gets 400 (501 for a transfer
//! coding other than chunked) and nothing reaches the homeserver; `100 Continue` only once the
//! rules let the request through; answers never run past their `Content-Length`; a client that
//! stops reading is disconnected after `inbound.write_timeout`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use timproxy::config::Config;
use timproxy::inbound::forward::{Body, full};
use timproxy::metrics::Metrics;
use timproxy::shutdown;

use super::support::start_inbound;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for any single wait; a hang fails the test instead of blocking it.
const WAIT: Duration = Duration::from_secs(15);
/// Size of the answer `/big` gets from the fake homeserver: more than loopback socket buffers
/// hold, so a client that does not read stalls the proxy's writes.
const BIG: usize = 64 * 1024 * 1024;

/// A fake homeserver that counts the requests that reached it whole (head and complete body;
/// Synapse acts on a request only once its body is complete). `whoami` is not counted.
struct Homeserver {
    addr: SocketAddr,
    reached: Arc<AtomicUsize>,
}

async fn start_homeserver() -> Homeserver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = reached.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let whole = req.into_body().collect().await.is_ok();
                        let body = match path.as_str() {
                            "/_matrix/client/v3/account/whoami" => {
                                full(r#"{"user_id":"@alice:hs1.test"}"#)
                            }
                            "/big" => full(vec![b'x'; BIG]),
                            _ => {
                                if whole {
                                    counter.fetch_add(1, Ordering::SeqCst);
                                }
                                full(r#"{"ok":true}"#)
                            }
                        };
                        let mut r: Response<Body> = Response::new(body);
                        r.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Homeserver { addr, reached }
}

struct Proxy {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    _trigger: shutdown::ShutdownTrigger,
}

async fn start_proxy(upstream: SocketAddr, tweak: impl FnOnce(&mut Config)) -> Proxy {
    let mut config = Config::default();
    config.homeserver.url = format!("http://{upstream}").parse().unwrap();
    config.homeserver.server_name = "hs1.test".into();
    config.inbound.header_read_timeout = Duration::from_secs(5);
    config.inbound.extra_endpoints = vec!["GET /big".into()];
    tweak(&mut config);
    let inbound = start_inbound(config).await;
    Proxy {
        addr: inbound.addr,
        metrics: inbound.metrics,
        _trigger: inbound.trigger,
    }
}

/// Read until the first answer's head is complete or the connection ends; the status and
/// everything read.
async fn read_head(stream: &mut TcpStream) -> (Option<u16>, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = String::from_utf8_lossy(&buf[..end])
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok());
            return (status, buf);
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (None, buf),
        }
    }
}

/// Read until the server closes the connection (bounded); everything read, and whether it
/// closed.
async fn read_to_close(stream: &mut TcpStream) -> (Vec<u8>, bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (buf, true),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return (buf, false),
        }
    }
}

/// Send `raw` on a fresh connection; the status of the answer.
async fn status_of(addr: SocketAddr, raw: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The proxy may answer and close before all of it is written.
    let _ = stream.write_all(raw).await;
    read_head(&mut stream).await.0
}

const LOGIN: &str = "/_matrix/client/v3/login";

fn post_head(extra: &str) -> Vec<u8> {
    format!("POST {LOGIN} HTTP/1.1\r\nhost: hs1.test\r\n{extra}\r\n").into_bytes()
}

fn chunked(body: &str) -> Vec<u8> {
    let mut raw = post_head("transfer-encoding: chunked\r\n");
    raw.extend_from_slice(body.as_bytes());
    raw
}

/// The raw requests of finding 5, each with the status it must get.
fn refused() -> Vec<(&'static str, Vec<u8>, u16)> {
    let long_extensions = {
        let mut body = String::new();
        for _ in 0..5 {
            body.push_str(&format!("1;{}\r\na\r\n", "x".repeat(1000)));
        }
        body.push_str("0\r\n\r\n");
        body
    };
    let long_trailers = format!(
        "2\r\n{{}}\r\n0\r\n{}\r\n",
        format!("x-t: {}\r\n", "v".repeat(1000)).repeat(5)
    );
    vec![
        (
            "bare LF in the head",
            post_head("X-A: a\nTransfer-Encoding: chunked\r\n")
                .into_iter()
                .chain(b"2\r\n{}\r\n0\r\n\r\n".iter().copied())
                .collect(),
            400,
        ),
        (
            "bare CR in the head",
            b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\rX-A: b\r\n\r\n".to_vec(),
            400,
        ),
        (
            "empty Transfer-Encoding",
            post_head("transfer-encoding: \r\ncontent-length: 2\r\n")
                .into_iter()
                .chain(*b"{}")
                .collect(),
            400,
        ),
        (
            "comma-only Transfer-Encoding",
            post_head("transfer-encoding: , ,\r\ncontent-length: 2\r\n")
                .into_iter()
                .chain(*b"{}")
                .collect(),
            400,
        ),
        (
            "Transfer-Encoding with Content-Length",
            post_head("transfer-encoding: chunked\r\ncontent-length: 7\r\n")
                .into_iter()
                .chain(*b"2\r\n{}\r\n0\r\n\r\n")
                .collect(),
            400,
        ),
        (
            "chunked not last",
            post_head("transfer-encoding: chunked, identity\r\n"),
            400,
        ),
        (
            "chunked twice",
            post_head("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n"),
            400,
        ),
        (
            "gzip, chunked",
            post_head("transfer-encoding: gzip, chunked\r\n"),
            501,
        ),
        ("gzip", post_head("transfer-encoding: gzip\r\n"), 501),
        (
            "chunked on HTTP/1.0",
            format!(
                "POST {LOGIN} HTTP/1.0\r\nhost: hs1.test\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n"
            )
            .into_bytes(),
            400,
        ),
        ("chunk size +2", chunked("+2\r\n{}\r\n0\r\n\r\n"), 400),
        ("chunk size ' 2 '", chunked(" 2 \r\n{}\r\n0\r\n\r\n"), 400),
        ("chunk size 2\\x0b", chunked("2\x0b\r\n{}\r\n0\r\n\r\n"), 400),
        ("chunk size 0x2", chunked("0x2\r\n{}\r\n0\r\n\r\n"), 400),
        (
            "chunk size of 17 hex digits",
            chunked("00000000000000002\r\n{}\r\n0\r\n\r\n"),
            400,
        ),
        (
            "bare LF in a chunk extension",
            chunked("2;a\nb\r\n{}\r\n0\r\n\r\n"),
            400,
        ),
        ("5000 bytes of chunk extensions", chunked(&long_extensions), 400),
        ("5000 bytes of trailers", chunked(&long_trailers), 400),
        (
            "HTTP/1.1 without Host",
            b"GET /_matrix/client/versions HTTP/1.1\r\n\r\n".to_vec(),
            400,
        ),
        (
            "two Host fields",
            b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\nhost: hs1.test\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Host with invalid characters",
            b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test/x y\r\n\r\n".to_vec(),
            400,
        ),
        (
            "absolute-form with userinfo",
            b"GET http://u:p@hs1.test/_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "absolute-form with scheme ftp",
            b"GET ftp://hs1.test/_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "asterisk-form on GET",
            b"GET * HTTP/1.1\r\nhost: hs1.test\r\n\r\n".to_vec(),
            400,
        ),
        (
            "authority-form",
            b"CONNECT hs1.test:443 HTTP/1.1\r\nhost: hs1.test:443\r\n\r\n".to_vec(),
            405,
        ),
        (
            "Connection: host",
            b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\nconnection: host\r\n\r\n"
                .to_vec(),
            400,
        ),
        (
            "Connection: content-length",
            post_head("connection: content-length\r\ncontent-length: 2\r\n")
                .into_iter()
                .chain(*b"{}")
                .collect(),
            400,
        ),
        (
            "Connection: transfer-encoding",
            post_head("connection: transfer-encoding\r\ntransfer-encoding: chunked\r\n")
                .into_iter()
                .chain(*b"2\r\n{}\r\n0\r\n\r\n")
                .collect(),
            400,
        ),
    ]
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_reaches_nothing() {
    let homeserver = start_homeserver().await;
    let proxy = start_proxy(homeserver.addr, |_| {}).await;
    let mut failures = Vec::new();
    for (name, raw, status) in refused() {
        let got = status_of(proxy.addr, &raw).await;
        if got != Some(status) {
            failures.push(format!("{name}: expected {status}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The same requests framed plainly do reach the homeserver; with them counted, the total
    // shows that none of the refused ones did.
    let fine: [&[u8]; 3] = [
        &post_head("content-length: 2\r\n")
            .into_iter()
            .chain(*b"{}")
            .collect::<Vec<u8>>(),
        &chunked("2;a=b\r\n{}\r\n0\r\nx-t: 1\r\n\r\n"),
        b"GET http://hs1.test/_matrix/client/v3/login HTTP/1.1\r\nhost: hs1.test\r\n\r\n",
    ];
    for raw in fine {
        assert_eq!(
            status_of(proxy.addr, raw).await,
            Some(200),
            "{}",
            String::from_utf8_lossy(raw)
        );
    }
    assert_eq!(homeserver.reached.load(Ordering::SeqCst), fine.len());
    let metrics = proxy.metrics.encode();
    let refusals =
        crate::support::rule_count(&metrics, "rejections", "inbound", "http-parse", "enforce")
            + crate::support::rule_count(&metrics, "rejections", "inbound", "body-read", "enforce");
    assert!(
        refusals >= refused().len() as u64,
        "every refusal is counted: {refusals}\n{metrics}"
    );
}

/// A request the rules refuse gets its answer without a `100 Continue` first; one they accept
/// gets `100` once its body is wanted, and then its answer.
#[tokio::test]
async fn continue_is_sent_only_for_requests_the_rules_accept() {
    let homeserver = start_homeserver().await;
    let proxy = start_proxy(homeserver.addr, |_| {}).await;

    let refused = "PUT /_matrix/federation/v1/send/t1 HTTP/1.1\r\nhost: hs1.test\r\n\
                   authorization: X-Matrix origin=\"evil.test\",destination=\"hs1.test\",key=\"ed25519:a\",sig=\"c2ln\"\r\n\
                   content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 2\r\n\r\n";
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(refused.as_bytes()).await.unwrap();
    let (status, _) = read_head(&mut stream).await;
    assert!(
        status.is_some_and(|s| (400..500).contains(&s)),
        "refused without 100 first, got {status:?}"
    );

    let accepted = post_head(
        "content-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 2\r\n",
    );
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream.write_all(&accepted).await.unwrap();
    let (status, read) = read_head(&mut stream).await;
    assert_eq!(status, Some(100), "{}", String::from_utf8_lossy(&read));
    assert_eq!(read, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"{}").await.unwrap();
    let (status, _) = read_head(&mut stream).await;
    assert_eq!(status, Some(200));
    assert_eq!(homeserver.reached.load(Ordering::SeqCst), 1);
}

/// A homeserver answer with more body bytes than its `Content-Length`: the client gets exactly
/// the announced bytes, and nothing after them on that connection.
#[tokio::test]
async fn answers_never_run_past_their_content_length() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
                    )
                    .await;
            });
        }
    });
    let proxy = start_proxy(upstream, |_| {}).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /_matrix/client/v3/login HTTP/1.1\r\nhost: hs1.test\r\n\r\n")
        .await
        .unwrap();
    let (status, head) = read_head(&mut stream).await;
    assert_eq!(status, Some(200));
    let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let mut body = head[end..].to_vec();
    while body.len() < 5 {
        let mut more = [0u8; 64];
        match tokio::time::timeout(WAIT, stream.read(&mut more)).await {
            Ok(Ok(n)) if n > 0 => body.extend_from_slice(&more[..n]),
            _ => break,
        }
    }
    assert_eq!(body, b"hello");
    // No second answer follows unasked.
    let mut probe = [0u8; 64];
    let after = tokio::time::timeout(Duration::from_millis(300), stream.read(&mut probe)).await;
    assert!(
        !matches!(after, Ok(Ok(n)) if n > 0),
        "bytes after the announced body"
    );
}

/// The value of the inbound listener's open-connections gauge.
fn open_connections(metrics: &Metrics) -> Option<u64> {
    metrics.encode().lines().find_map(|l| {
        l.strip_prefix("timproxy_open_connections{listener=\"inbound\"} ")
            .and_then(|n| n.trim().parse().ok())
    })
}

#[tokio::test]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let homeserver = start_homeserver().await;
    let proxy = start_proxy(homeserver.addr, |c| {
        c.inbound.write_timeout = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(b"GET /big HTTP/1.1\r\nhost: hs1.test\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing; the proxy must give up on it by itself.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen_open = false;
    loop {
        let open = open_connections(&proxy.metrics).unwrap_or(0);
        seen_open |= open > 0;
        if seen_open && open == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connection still open ({open}) with the client not reading"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (read, closed) = read_to_close(&mut stream).await;
    assert!(closed, "the proxy closed the connection");
    assert!(
        read.len() < BIG,
        "the answer was cut off ({} bytes)",
        read.len()
    );
}
