//! `serve` as a process: startup, admin listener, `check-health`, graceful SIGTERM.

use crate::support::{Served, loopback_config, run_cli};

#[test]
fn check_health_reports_live_and_not_ready_then_unreachable_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(dir.path(), "homeserver:\n  url: http://127.0.0.1:1/\n");
    let served = Served::start(dir.path(), &config, &[]);
    let admin = format!("http://{}", served.addr("admin"));

    let (code, out, err) = run_cli(dir.path(), &["check-health", "--url", &admin]);
    assert_eq!(code, 0, "live check: {out} {err}");
    assert!(out.starts_with("live: yes"), "{out}");

    // Homeserver unreachable and no federation list: not ready, with reasons.
    let (code, out, _) = run_cli(
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
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["healthy"], false);
    assert_eq!(report["report"]["components"]["homeserver"]["ready"], false);
    assert_eq!(
        report["report"]["components"]["federation_list"]["reason"],
        "no federation list loaded yet"
    );

    // Metrics are served on the admin listener.
    let (code, out, _) = run_cli(dir.path(), &["check-health", "--url", &admin]);
    assert_eq!(code, 0, "{out}");

    assert_eq!(served.terminate(), Some(0), "graceful SIGTERM exits 0");
    let (code, _, err) = run_cli(
        dir.path(),
        &["check-health", "--url", &admin, "--timeout", "1s"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(
        err.starts_with("error: ") && err.contains("unreachable"),
        "{err}"
    );
}

#[test]
fn serve_with_a_broken_config_exits_2_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.yaml");
    std::fs::write(&config, "inbound:\n  lissen: 1\n").unwrap();
    let (code, _, err) = run_cli(dir.path(), &["--config", config.to_str().unwrap(), "serve"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("bad.yaml:2:3: inbound: unknown field `lissen`"),
        "{err}"
    );
}

#[test]
fn a_502_is_logged_with_the_side_that_failed_and_why() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1 of the loopback address: connecting is refused.
    let config = loopback_config(dir.path(), "homeserver:\n  url: http://127.0.0.1:1/\n");
    let served = Served::start(dir.path(), &config, &[]);
    let mut client = std::net::TcpStream::connect(served.addr("inbound")).unwrap();
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    client
        .write_all(
            b"GET /_matrix/client/v3/sync HTTP/1.1\r\nHost: hs1.test\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.ends_with(r#"{"errcode":"M_UNKNOWN","error":"homeserver unreachable"}"#));

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = served
            .stderr_lines
            .recv_timeout(left)
            .expect("a log line for the 502 within 10 s");
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["fields"]["status"] == 502 {
            break v["fields"].clone();
        }
    };
    assert_eq!(line["message"], "request failed", "{line}");
    assert_eq!(line["side"], "upstream", "{line}");
    assert_eq!(line["rule"], "upstream-error", "{line}");
    assert_eq!(line["error"], "homeserver unreachable", "{line}");
    let cause = line["cause"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        cause.contains("cannot connect") && cause.contains("refused"),
        "{line}"
    );
}
