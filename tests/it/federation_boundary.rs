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

/// A PDU as a federated server signs it (the proxy does not verify signatures; Synapse does).
fn pdu(sender: &str, body: &str) -> serde_json::Value {
    serde_json::json!({
        "type": "m.room.message", "room_id": "!room:hs1.test", "sender": sender,
        "origin_server_ts": 1_700_000_000_000u64, "depth": 12,
        "content": {"msgtype": "m.text", "body": body},
        "prev_events": ["$prev"], "auth_events": ["$create", "$pl", "$member"],
        "hashes": {"sha256": "aGFzaA"},
        "signatures": {"hs2.test": {"ed25519:a": "c2lnbmF0dXJl"}},
        "unsigned": {"age": 10}
    })
}

fn transaction(pdus: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "origin": "hs2.test", "origin_server_ts": 1_700_000_000_000u64,
        "pdus": pdus,
        "edus": [
            {"edu_type": "m.typing", "content": {"room_id": "!room:hs1.test", "user_id": "@a:hs2.test", "typing": true}},
            {"edu_type": "m.receipt", "content": {"!room:hs1.test": {"m.read": {"@a:hs2.test": {"data": {"ts": 1}, "event_ids": ["$e"]}}}}}
        ]
    })
}

const SEND: &str = "/_matrix/federation/v1/send/1700000000000";

/// Issue 14, "every event's domains": a transaction from a federated origin whose events are
/// all federated reaches the homeserver byte for byte (the X-Matrix signature covers it).
#[tokio::test]
async fn a_clean_transaction_is_forwarded_unchanged() {
    let h = start().await;
    let txn = transaction(vec![pdu("@a:hs2.test", "hello"), pdu("@b:hs2.test", "hi")]);
    let (status, body) = h
        .federation(http::Method::PUT, SEND, "hs2.test", Some(txn.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["body"], txn.to_string(), "the body was changed");
}

/// Issue 14, "every event's domains": a PDU from `@evil:evil.test` inside a transaction from
/// a listed origin was forwarded. Now the whole transaction is answered by the proxy
/// (`{"pdus":{}}`, so the sender does not retry it forever) and nothing reaches the
/// homeserver.
#[tokio::test]
async fn a_transaction_naming_a_non_federated_domain_never_reaches_the_homeserver() {
    let h = start().await;
    let before = h.up.requests.load(Ordering::SeqCst);
    for txn in [
        transaction(vec![
            pdu("@a:hs2.test", "hello"),
            pdu("@evil:evil.test", "spam"),
        ]),
        {
            let mut t = transaction(vec![pdu("@a:hs2.test", "hello")]);
            t["edus"][0]["content"]["user_id"] = "@evil:evil.test".into();
            t
        },
    ] {
        let (status, body) = h
            .federation(http::Method::PUT, SEND, "hs2.test", Some(txn))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body, serde_json::json!({"pdus": {}}));
    }
    assert_eq!(h.up.requests.load(Ordering::SeqCst), before);
    assert!(
        h.metrics.encode().contains(
            r#"timproxy_rejections_total{listener="inbound",rule="A_25534-event-domain",mode="enforce"} 2"#
        ),
        "{}",
        h.metrics.encode()
    );
}

/// Single events (`send_join`, `invite`, …) naming a non-federated domain are refused with
/// 403 and never forwarded.
#[tokio::test]
async fn single_events_naming_a_non_federated_domain_are_refused() {
    let h = start().await;
    let member = |sender: &str, target: &str, membership: &str| {
        serde_json::json!({"type": "m.room.member", "room_id": "!room:hs1.test", "sender": sender,
            "state_key": target, "content": {"membership": membership},
            "signatures": {"hs2.test": {"ed25519:a": "c2ln"}}})
    };
    let before = h.up.requests.load(Ordering::SeqCst);
    let cases = [
        (
            "/_matrix/federation/v2/send_join/%21room%3Ahs1.test/%24j",
            member("@x:evil.test", "@x:evil.test", "join"),
        ),
        (
            "/_matrix/federation/v1/send_leave/%21room%3Ahs1.test/%24l",
            member("@x:evil.test", "@x:evil.test", "leave"),
        ),
        (
            "/_matrix/federation/v1/send_knock/%21room%3Aevil.test/%24k",
            serde_json::json!({"type": "m.room.member", "room_id": "!room:evil.test", "sender": "@a:hs2.test",
                "state_key": "@a:hs2.test", "content": {"membership": "knock"}}),
        ),
        (
            "/_matrix/federation/v2/invite/%21room%3Ahs1.test/%24i",
            serde_json::json!({"event": member("@a:hs2.test", "@carol:hs1.test", "invite"), "room_version": "10",
                "invite_room_state": [{"type": "m.room.create", "state_key": "", "sender": "@creator:evil.test", "content": {}}]}),
        ),
    ];
    for (target, body) in cases {
        let (status, answer) = h
            .federation(http::Method::PUT, target, "hs2.test", Some(body))
            .await;
        assert_eq!(status, 403, "{target}: {answer}");
        assert_eq!(
            answer["error"], "evil.test kann nicht in der Föderation gefunden werden",
            "{target}"
        );
    }
    assert_eq!(h.up.requests.load(Ordering::SeqCst), before);
    // The same join from a federated member is forwarded.
    let (status, _) = h
        .federation(
            http::Method::PUT,
            "/_matrix/federation/v2/send_join/%21room%3Ahs1.test/%24j",
            "hs2.test",
            Some(member("@a:hs2.test", "@a:hs2.test", "join")),
        )
        .await;
    assert_eq!(status, 200);
}
