//! The federation boundary over raw sockets: what the homeserver reads from a request (the
//! X-Matrix origin, the client address) is what the proxy checked, and nothing from a
//! non-federated domain reaches it.

use std::sync::atomic::Ordering;

use super::inbound::{WAIT, raw_exchange, start};

/// Send raw request bytes on a fresh connection; the status line and the body of the answer.
async fn raw(h: &super::inbound::Harness, bytes: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(h.addr))
        .await
        .expect("connect timed out")
        .expect("connect");
    let (text, _) = raw_exchange(&mut stream, bytes, 1).await;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(serde_json::Value::Null);
    (status, body)
}

/// Issue 14, finding 1, with the issue's bytes: Synapse authenticates the last X-Matrix field
/// and splits at quoted commas, so both requests are `hs3.test` (not federated) to it.
#[tokio::test]
async fn x_matrix_that_synapse_reads_as_another_origin_is_refused() {
    let h = start().await;
    let two_fields = b"GET /_matrix/federation/v1/event/%24e HTTP/1.1\r\nHost: hs1.test\r\n\
        Authorization: X-Matrix origin=hs2.test,key=\"ed25519:a\",sig=\"c2ln\"\r\n\
        Authorization: X-Matrix origin=hs3.test,destination=hs1.test,key=\"ed25519:evil\",sig=\"ZXZpbA\"\r\n\r\n";
    let quoted_comma = b"GET /_matrix/federation/v1/event/%24e HTTP/1.1\r\nHost: hs1.test\r\n\
        Authorization: X-Matrix origin=hs2.test,x=\"1,origin=hs3.test,destination=hs1.test,key=ed25519:evil,sig=ZXZpbA,y=\"\r\n\r\n";
    let repeated = b"GET /_matrix/federation/v1/event/%24e HTTP/1.1\r\nHost: hs1.test\r\n\
        Authorization: X-Matrix origin=hs2.test,origin=hs3.test,key=\"ed25519:a\",sig=\"c2ln\"\r\n\r\n";
    let lower_scheme = b"GET /_matrix/federation/v1/event/%24e HTTP/1.1\r\nHost: hs1.test\r\n\
        Authorization: x-matrix origin=hs2.test,key=\"ed25519:a\",sig=\"c2ln\"\r\n\r\n";
    let before = h.up.requests.load(Ordering::SeqCst);
    for bytes in [
        &two_fields[..],
        &quoted_comma[..],
        &repeated[..],
        &lower_scheme[..],
    ] {
        let (status, body) = raw(&h, bytes).await;
        assert_eq!(status, 401, "{}: {body}", String::from_utf8_lossy(bytes));
        assert_eq!(body["errcode"], "M_UNAUTHORIZED", "{body}");
    }
    assert_eq!(
        h.up.requests.load(Ordering::SeqCst),
        before,
        "an ambiguous request reached the homeserver"
    );
    assert!(
        h.metrics.encode().contains(r#"rule="x-matrix-ambiguous""#),
        "rejections are counted under their rule id"
    );
    // The same request with one unambiguous header is served.
    let single = b"GET /_matrix/federation/v1/event/%24e HTTP/1.1\r\nHost: hs1.test\r\n\
        Authorization: X-Matrix origin=hs2.test,destination=hs1.test,key=\"ed25519:a\",sig=\"c2ln\"\r\n\r\n";
    assert_eq!(raw(&h, single).await.0, 200);
}

/// Issue 14, finding 4: `X-Forwarded-For: 6.6.6.6` from a client reached the homeserver as
/// `6.6.6.6, 127.0.0.1`, and Synapse (`x_forwarded: true`) takes the first entry. Now the
/// homeserver sees the peer address, and no other forwarding field of the client.
#[tokio::test]
async fn a_client_cannot_choose_the_address_the_homeserver_sees() {
    let h = start().await;
    let request = b"GET /_matrix/client/v3/login HTTP/1.1\r\nHost: hs1.test\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 7.7.7.7\r\nX-Real-IP: 6.6.6.6\r\n\
        Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: evil.test\r\nX-Forwarded-Port: 443\r\n\r\n";
    let (status, body) = raw(&h, request).await;
    assert_eq!(status, 200, "{body}");
    let seen = &body["headers"];
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "hs1.test", "{seen}");
    for dropped in ["x-real-ip", "forwarded", "x-forwarded-port"] {
        assert!(seen.get(dropped).is_none(), "{dropped} passed: {seen}");
    }
}

/// A load balancer listed in `inbound.trusted_proxies` keeps its fields; its
/// `X-Forwarded-For` fields become one list that ends with the peer.
#[tokio::test]
async fn a_trusted_proxy_keeps_its_forwarding_fields() {
    let h = super::inbound::start_with(|c| {
        c.inbound.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let request = b"GET /_matrix/client/v3/login HTTP/1.1\r\nHost: hs1.test\r\n\
        X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 10.0.0.2\r\nX-Real-IP: 6.6.6.6\r\n\
        X-Forwarded-Proto: https\r\nX-Forwarded-Host: matrix.hs1.test\r\n\r\n";
    let (status, body) = raw(&h, request).await;
    assert_eq!(status, 200, "{body}");
    let seen = &body["headers"];
    assert_eq!(
        seen["x-forwarded-for"], "6.6.6.6, 10.0.0.2, 127.0.0.1",
        "{seen}"
    );
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    assert_eq!(seen["x-forwarded-host"], "matrix.hs1.test", "{seen}");
    assert_eq!(seen["x-real-ip"], "6.6.6.6", "{seen}");
    // Without its own X-Forwarded-For, the peer is the whole list.
    let plain = b"GET /_matrix/client/v3/login HTTP/1.1\r\nHost: hs1.test\r\n\r\n";
    let (_, body) = raw(&h, plain).await;
    assert_eq!(body["headers"]["x-forwarded-for"], "127.0.0.1");
    assert_eq!(body["headers"]["x-forwarded-proto"], "http");
}
