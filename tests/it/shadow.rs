//! Per-rule shadow mode (`policy.shadow`, issue 16): a shadowed rule is evaluated, logged and
//! counted with `mode="shadow"`, and the request reaches the homeserver unchanged; the other
//! rules stay enforced; federation-boundary rules cannot be shadowed at all. The whole
//! coverage matrix in shadow mode is walked in [`super::coverage`].

use std::time::{Duration, Instant};

use http::Method;
use serde_json::{Value, json};
use timproxy::policy::shadow::ShadowRule;

use super::inbound::{assert_rejected, echoed_body, start_with};
use crate::support::{Served, loopback_config, rule_count, run_cli};

fn shadowing(ids: &[&str]) -> Vec<ShadowRule> {
    ids.iter()
        .map(|id| ShadowRule::parse(id).unwrap())
        .collect()
}

fn count(metrics: &str, family: &str, rule: &str, mode: &str) -> u64 {
    rule_count(metrics, family, "inbound", rule, mode)
}

#[tokio::test]
async fn a_shadowed_rewrite_is_not_applied_while_the_other_rules_still_are() {
    let h = start_with(|c| c.policy.shadow = shadowing(&["A_26515-01"])).await;
    let url = "/_matrix/client/v3/createRoom";
    let got = h
        .alice(
            Method::POST,
            url,
            json!({"preset":"public_chat","x.keep":1}),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    // No m.federate (A_26515-01 shadowed), but the room version is still injected.
    assert_eq!(
        echoed_body(&got.1),
        json!({"preset":"public_chat","x.keep":1,"room_version":"10"})
    );
    let metrics = h.metrics.encode();
    assert_eq!(count(&metrics, "rewrites", "A_26515-01", "shadow"), 1);
    assert_eq!(count(&metrics, "rewrites", "A_26515-01", "enforce"), 0);
    assert_eq!(count(&metrics, "rewrites", "A_26202/A_26203", "enforce"), 1);
    // Other rules on the same route are enforced.
    let thread =
        json!({"preset":"public_chat","creation_content":{"m.relates_to":{"rel_type":"m.thread"}}});
    assert_rejected(
        &h.alice(Method::POST, url, thread).await,
        400,
        "M_FORBIDDEN",
    );
}

#[tokio::test]
async fn a_shadowed_refusal_forwards_the_request_unchanged_and_counts_it() {
    let h = start_with(|c| c.policy.shadow = shadowing(&["A_28271", "A_26021-01"])).await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    let body = json!({"join_rule":"public","x.keep":[1,2]});
    let got = h
        .alice(
            Method::PUT,
            &format!("{room}/state/m.room.join_rules/"),
            body.clone(),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(got.1["body"], body.to_string(), "body bytes unchanged");
    // The invitee's permission configuration is read and reported, the invite goes on.
    let invite = json!({"user_id":"@bob:hs1.test"});
    assert_eq!(
        h.alice(Method::POST, &format!("{room}/invite"), invite)
            .await
            .0,
        200
    );
    // A_25534 guards the federation boundary: still enforced, whatever else is shadowed.
    let unlisted = json!({"user_id":"@x:unlisted.test"});
    assert_rejected(
        &h.alice(Method::POST, &format!("{room}/invite"), unlisted)
            .await,
        403,
        "M_FORBIDDEN",
    );
    let metrics = h.metrics.encode();
    assert_eq!(count(&metrics, "rejections", "A_28271", "shadow"), 1);
    assert_eq!(count(&metrics, "rejections", "A_28271", "enforce"), 0);
    assert_eq!(count(&metrics, "rejections", "A_26021-01", "shadow"), 1);
    assert_eq!(count(&metrics, "rejections", "A_25534", "enforce"), 1);
}

#[tokio::test]
async fn without_shadow_the_same_requests_are_refused() {
    let h = start_with(|_| {}).await;
    let got = h
        .alice(
            Method::PUT,
            "/_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.join_rules/",
            json!({"join_rule":"public"}),
        )
        .await;
    assert_rejected(&got, 400, "M_INVALID_ROOM_STATE");
    let metrics = h.metrics.encode();
    assert_eq!(count(&metrics, "rejections", "A_28271", "enforce"), 1);
    assert_eq!(count(&metrics, "rejections", "A_28271", "shadow"), 0);
}

/// Wait (bounded) for a JSON log line of `served` whose fields contain all of `fields`.
fn log_line(served: &Served, fields: &[(&str, &str)]) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let line = served.stderr_lines.recv_timeout(left).ok()?;
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if fields.iter().all(|(k, want)| v["fields"][*k] == *want) {
            return Some(v);
        }
    }
    None
}

#[test]
fn serve_lists_shadowed_rules_at_start_in_readiness_and_logs_what_they_would_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(
        dir.path(),
        "homeserver:\n  url: http://127.0.0.1:1/\npolicy:\n  shadow: [A_26515-01, A_28271]\n",
    );
    let served = Served::start(dir.path(), &config, &[]);
    let start = log_line(&served, &[("rules", "A_26515-01, A_28271")]);
    assert!(start.is_some(), "no start line listing the shadowed rules");
    let admin = format!("http://{}", served.addr("admin"));
    let (_, out, _) = run_cli(
        dir.path(),
        &[
            "check-health",
            "--url",
            &admin,
            "--ready",
            "--format",
            "json",
        ],
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        report["report"]["components"]["policy"]["reason"],
        "shadow mode (evaluated and reported, not enforced): A_26515-01, A_28271",
        "{out}"
    );
    // A request a shadowed rule would refuse is logged with the rule and mode, and forwarded
    // (here to an unreachable homeserver: 502).
    let body = r#"{"join_rule":"public"}"#;
    let request = format!(
        "PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/state/m.room.join_rules/ HTTP/1.1\r\n\
         Host: hs1.test\r\nAuthorization: Bearer t\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(served.addr("inbound")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    let line =
        log_line(&served, &[("rule", "A_28271"), ("mode", "shadow")]).expect("shadow log line");
    assert_eq!(
        line["fields"]["message"],
        "request would have been rejected; rule in shadow mode, forwarded unchanged"
    );
    assert_eq!(
        line["fields"]["endpoint"],
        "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}"
    );
}

#[test]
fn serve_refuses_to_shadow_a_boundary_rule_or_an_unknown_id() {
    let dir = tempfile::tempdir().unwrap();
    for (text, expected) in [
        (
            "policy:\n  shadow: [A_28271, A_25534]\n",
            "bad.yaml:2:21: policy.shadow[1]: `A_25534` protects the federation boundary and cannot be shadowed",
        ),
        (
            "policy:\n  shadow:\n    - federation-origin\n",
            "bad.yaml:3:7: policy.shadow[0]: `federation-origin` protects the federation boundary",
        ),
        (
            "policy:\n  shadow: [A_1]\n",
            "bad.yaml:2:12: policy.shadow[0]: unknown rule id `A_1`; rules that can be shadowed: ",
        ),
    ] {
        let config = dir.path().join("bad.yaml");
        std::fs::write(&config, text).unwrap();
        let (code, _, err) = run_cli(dir.path(), &["--config", "bad.yaml", "serve"]);
        assert_eq!(code, 2, "{err}");
        assert!(err.starts_with(&format!("error: {expected}")), "{err}");
    }
}
