//! The inbound HTTP/1 server against a reference parser: the same bytes go to timproxy's
//! inbound listener (in front of the echoing fake homeserver) and to a plain hyper HTTP/1
//! server. Whatever timproxy forwards, hyper must have read as the same requests — same
//! method, same path and query, same body bytes, in the same order — or timproxy refused it.
//! A request timproxy forwards and the reference reads differently is a request smuggling
//! hole between timproxy and a front end that parses like the reference (a load balancer),
//! or between timproxy and the homeserver.
//!
//! Hand-written cases cover the classic smuggling vectors and every framing case of issue 14
//! (finding 5); a property test generates heads from valid and hostile pieces.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::inbound::{Harness, start};

/// Bound on one exchange; a hang fails the test.
const WAIT: Duration = Duration::from_secs(10);
/// An allow-listed endpoint that needs no access token and whose body no rule reads: the
/// fake homeserver echoes method, target and body.
const PATH: &str = "/_matrix/client/v3/login";

/// One request as the receiving side read it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    body: Vec<u8>,
}

/// Send `bytes` on a fresh connection, half-close, and read everything that comes back.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may close early (a refused head); the answer read below still tells.
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("the server neither answered nor closed");
    answer
}

/// The requests hyper's HTTP/1 server reads from `bytes`.
async fn reference(bytes: &[u8]) -> Vec<Seen> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let server = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(move |req: Request<Incoming>| {
            let record = record.clone();
            async move {
                let method = req.method().to_string();
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                // A body the reference cannot read to its end is not a request it read.
                if let Ok(body) = req.into_body().collect().await {
                    record.lock().unwrap().push(Seen {
                        method,
                        target,
                        body: body.to_bytes().to_vec(),
                    });
                }
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });
    exchange(addr, bytes).await;
    let _ = tokio::time::timeout(WAIT, server).await;
    seen.lock().unwrap().clone()
}

/// The requests timproxy forwarded, read from the echoes in its answers, in order.
async fn forwarded(h: &Harness, bytes: &[u8]) -> Vec<Seen> {
    let answer = exchange(h.addr, bytes).await;
    let mut rest = answer.as_slice();
    let mut seen = Vec::new();
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = response.parse(rest) else {
            break;
        };
        let length = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        let Some(length) = length.filter(|l| head + l <= rest.len()) else {
            break;
        };
        let body = &rest[head..head + length];
        rest = &rest[head + length..];
        let Ok(echo) = serde_json::from_slice::<serde_json::Value>(body) else {
            continue;
        };
        if echo["echo"] == true {
            seen.push(Seen {
                method: echo["method"].as_str().unwrap_or_default().to_owned(),
                target: echo["target"].as_str().unwrap_or_default().to_owned(),
                body: echo["body"]
                    .as_str()
                    .unwrap_or_default()
                    .as_bytes()
                    .to_vec(),
            });
        }
    }
    seen
}

/// timproxy's forwarded requests must be a prefix of the reference's reading.
async fn agree(h: &Harness, name: &str, bytes: &[u8]) -> Result<usize, String> {
    let ours = forwarded(h, bytes).await;
    let theirs = reference(bytes).await;
    if theirs.len() < ours.len() || theirs[..ours.len()] != ours[..] {
        return Err(format!(
            "{name}: timproxy forwarded {ours:?}\n  the reference read {theirs:?}\n  bytes {:?}",
            String::from_utf8_lossy(bytes)
        ));
    }
    Ok(ours.len())
}

fn post(extra_headers: &str, body: &str) -> Vec<u8> {
    format!("POST {PATH} HTTP/1.1\r\nhost: hs1.test\r\n{extra_headers}\r\n{body}").into_bytes()
}

/// `(name, bytes, must timproxy forward at least one request?)`
fn cases() -> Vec<(&'static str, Vec<u8>, bool)> {
    let smuggled = format!("GET {PATH}?smuggled HTTP/1.1\r\nhost: hs1.test\r\n\r\n");
    vec![
        ("content-length", post("content-length: 2\r\n", "{}"), true),
        ("chunked", post("transfer-encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), true),
        ("chunked, extension and trailer", post("transfer-encoding: chunked\r\n", "2;a=b\r\n{}\r\n0\r\nx-t: 1\r\n\r\n"), true),
        ("pipelined", [post("content-length: 2\r\n", "{}"), post("content-length: 2\r\n", "[]")].concat(), true),
        ("coding name in capitals", post("transfer-encoding: Chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), true),
        // Finding 5 and the classic vectors.
        ("bare LF line ends", format!("POST {PATH} HTTP/1.1\nhost: hs1.test\ncontent-length: 2\n\n{{}}").into_bytes(), false),
        ("bare LF hides transfer-encoding", format!("POST {PATH} HTTP/1.1\r\nhost: hs1.test\r\nx-a: a\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n0\r\n\r\n{smuggled}").into_bytes(), false),
        ("bare CR in a head", format!("POST {PATH} HTTP/1.1\r\nhost: hs1.test\rcontent-length: 2\r\n\r\n{{}}").into_bytes(), false),
        ("empty transfer-encoding beside content-length", post("transfer-encoding: \r\ncontent-length: 2\r\n", "{}"), false),
        ("comma-only transfer-encoding", post("transfer-encoding: ,\r\ncontent-length: 2\r\n", "{}"), false),
        ("content-length and chunked", post("content-length: 4\r\ntransfer-encoding: chunked\r\n", &format!("0\r\n\r\n{smuggled}")), false),
        ("chunked and content-length", post("transfer-encoding: chunked\r\ncontent-length: 30\r\n", &format!("0\r\n\r\n{smuggled}")), false),
        ("chunked twice", post("transfer-encoding: chunked, chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), false),
        ("chunked in two fields", post("transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), false),
        ("gzip, chunked", post("transfer-encoding: gzip, chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), false),
        ("chunked, gzip", post("transfer-encoding: chunked, gzip\r\n", "2\r\n{}\r\n0\r\n\r\n"), false),
        ("transfer-encoding with a space in the name", post("transfer-encoding : chunked\r\ncontent-length: 2\r\n", "{}"), false),
        ("chunk size +2", post("transfer-encoding: chunked\r\n", "+2\r\n{}\r\n0\r\n\r\n"), false),
        ("chunk size padded with spaces", post("transfer-encoding: chunked\r\n", " 2 \r\n{}\r\n0\r\n\r\n"), false),
        ("chunk size with vertical tab", post("transfer-encoding: chunked\r\n", "2\x0b\r\n{}\r\n0\r\n\r\n"), false),
        ("chunk size 0x2", post("transfer-encoding: chunked\r\n", "0x2\r\n{}\r\n0\r\n\r\n"), false),
        ("chunk size overflowing 64 bits", post("transfer-encoding: chunked\r\n", "10000000000000002\r\n{}\r\n0\r\n\r\n"), false),
        ("bare LF in a chunk extension", post("transfer-encoding: chunked\r\n", "2;a\nb\r\n{}\r\n0\r\n\r\n"), false),
        ("bare LF after a chunk size", post("transfer-encoding: chunked\r\n", "2\n{}\r\n0\r\n\r\n"), false),
        ("chunk data longer than its size", post("transfer-encoding: chunked\r\n", &format!("1\r\n{{}}\r\n0\r\n\r\n{smuggled}")), false),
        ("chunked on HTTP/1.0", format!("POST {PATH} HTTP/1.0\r\nhost: hs1.test\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{{}}\r\n0\r\n\r\n").into_bytes(), false),
        ("two content-lengths that differ", post("content-length: 2\r\ncontent-length: 3\r\n", "{}x"), false),
        ("content-length list", post("content-length: 2, 2\r\n", "{}"), false),
        ("content-length with a plus", post("content-length: +2\r\n", "{}"), false),
        ("obs-fold continuation", post("content-length: 2\r\nx-a: a\r\n b\r\n", "{}"), false),
        ("HTTP/1.1 without host", format!("POST {PATH} HTTP/1.1\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(), false),
        ("two hosts", post("host: other.test\r\ncontent-length: 2\r\n", "{}"), false),
        ("absolute form with userinfo", format!("POST http://u:p@hs1.test{PATH} HTTP/1.1\r\nhost: hs1.test\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(), false),
        ("absolute form, scheme ftp", format!("POST ftp://hs1.test{PATH} HTTP/1.1\r\nhost: hs1.test\r\ncontent-length: 2\r\n\r\n{{}}").into_bytes(), false),
        ("connection names host", post("connection: host\r\ncontent-length: 2\r\n", "{}"), false),
        ("connection names content-length", post("connection: content-length\r\ncontent-length: 2\r\n", "{}"), false),
        ("connection names transfer-encoding", post("connection: transfer-encoding\r\ntransfer-encoding: chunked\r\n", "2\r\n{}\r\n0\r\n\r\n"), false),
    ]
}

#[tokio::test]
async fn what_timproxy_forwards_the_reference_parser_reads_the_same_way() {
    let h = start().await;
    let mut failures = Vec::new();
    for (name, bytes, must_forward) in cases() {
        match agree(&h, name, &bytes).await {
            Ok(0) if must_forward => {
                failures.push(format!("{name}: a valid request was not forwarded"))
            }
            Ok(_) => {}
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One generated request: each piece chosen from valid and hostile spellings.
fn generated() -> impl Strategy<Value = Vec<u8>> {
    let version = prop_oneof![Just("HTTP/1.1"), Just("HTTP/1.0")];
    let host = prop_oneof![
        Just(""),
        Just("host: hs1.test\r\n"),
        Just("host: hs1.test\r\nhost: hs1.test\r\n"),
    ];
    let framing = prop_oneof![
        Just(("", false)),
        Just(("content-length: 2\r\n", false)),
        Just(("content-length: 3\r\n", false)),
        Just(("transfer-encoding: chunked\r\n", true)),
        Just(("transfer-encoding: chunked\r\ncontent-length: 2\r\n", true)),
        Just(("transfer-encoding: identity\r\n", false)),
        Just(("transfer-encoding: gzip, chunked\r\n", true)),
        Just(("transfer-encoding:\tchunked \r\n", true)),
        Just(("transfer-encoding: chunked\n", true)),
        Just(("content-length:  2 \r\n", false)),
    ];
    let chunk = prop_oneof![
        Just("2\r\n{}\r\n"),
        Just("2;x=y\r\n{}\r\n"),
        Just("02\r\n{}\r\n"),
        Just("2 \r\n{}\r\n"),
        Just("2\n{}\n"),
    ];
    let end = prop_oneof![Just("0\r\n\r\n"), Just("0\r\nx: y\r\n\r\n"), Just("0\n\n")];
    let extra = prop_oneof![
        Just(""),
        Just("x-a: b\r\n"),
        Just("x-a: b\n"),
        Just("connection: keep-alive\r\n"),
        Just("connection: close\r\n"),
        Just("expect: 100-continue\r\n"),
    ];
    let tail = prop_oneof![
        Just(String::new()),
        Just(format!(
            "GET {PATH}?second HTTP/1.1\r\nhost: hs1.test\r\n\r\n"
        )),
    ];
    (version, host, framing, chunk, end, extra, tail).prop_map(
        |(version, host, (framing, chunked), chunk, end, extra, tail)| {
            let body = if chunked {
                format!("{chunk}{end}")
            } else {
                "{}".to_owned()
            };
            format!("POST {PATH} {version}\r\n{host}{extra}{framing}\r\n{body}{tail}").into_bytes()
        },
    )
}

#[test]
fn generated_requests_are_read_the_same_way_or_refused() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let h = runtime.block_on(start());
    let mut config = ProptestConfig::with_cases(96);
    config.failure_persistence = None;
    proptest!(config, |(bytes in generated())| {
        let result = runtime.block_on(agree(&h, "generated", &bytes));
        prop_assert!(result.is_ok(), "{}", result.err().unwrap_or_default());
    });
}
