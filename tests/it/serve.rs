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

/// One HTTP exchange with the admin listener: (status, body).
fn admin_call(method: &str, url: &str, body: Option<&str>, token: Option<&str>) -> (u16, String) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    })
}

fn config_status(served: &Served) -> serde_json::Value {
    let (status, body) = admin_call(
        "GET",
        &format!("http://{}/config", served.addr("admin")),
        None,
        None,
    );
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Wait (bounded) until `done` holds for the admin listener's `/config`.
fn until_status(served: &Served, what: &str, done: impl Fn(&serde_json::Value) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let status = config_status(served);
        if done(&status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn hangup(served: &mut Served) {
    let pid = served.child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
}

#[test]
fn sighup_reloads_and_a_broken_file_keeps_the_process_running() {
    let dir = tempfile::tempdir().unwrap();
    let base = "homeserver:\n  url: http://127.0.0.1:1/\n";
    let config = loopback_config(dir.path(), base);
    let mut served = Served::start(dir.path(), &config, &[]);
    let started = config_status(&served);
    assert_eq!(started["generation"], 1);
    assert_eq!(started["hash"], served.started["config_hash"]);

    loopback_config(
        dir.path(),
        &format!("{base}policy:\n  presence_status_max: 9\n"),
    );
    hangup(&mut served);
    until_status(&served, "the reload", |s| s["generation"] == 2);
    let reloaded = config_status(&served);
    assert_ne!(reloaded["hash"], started["hash"]);
    assert_eq!(reloaded["last_reload"]["outcome"], "applied");
    assert_eq!(
        reloaded["last_reload"]["changed"],
        serde_json::json!(["policy.presence_status_max"])
    );

    loopback_config(dir.path(), &format!("{base}policy: [unclosed\n"));
    hangup(&mut served);
    until_status(&served, "the refused reload", |s| {
        s["last_reload"]["outcome"] == "rejected"
    });
    let refused = config_status(&served);
    assert_eq!(refused["hash"], reloaded["hash"]);
    let error = refused["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("timproxy.yaml:"), "{error}");
    assert!(
        served.child.try_wait().unwrap().is_none(),
        "SIGHUP must not end the process"
    );
    assert_eq!(served.terminate(), Some(0));
}

#[test]
fn reload_command_reports_applied_unchanged_refused_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let base = "homeserver:\n  url: http://127.0.0.1:1/\n";
    let config = loopback_config(dir.path(), base);
    let served = Served::start(dir.path(), &config, &[]);
    let admin = format!("http://{}", served.addr("admin"));

    let (code, out, err) = run_cli(dir.path(), &["reload", "--url", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("reload: unchanged (configuration "),
        "{out}"
    );

    loopback_config(
        dir.path(),
        &format!("{base}policy:\n  presence_status_max: 9\n"),
    );
    let (code, out, err) = run_cli(dir.path(), &["reload", "--url", &admin]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("reload: applied"), "{out}");
    assert!(
        out.contains("  changed: policy.presence_status_max"),
        "{out}"
    );

    let broken = loopback_config(dir.path(), &format!("{base}policy:\n  flavour: pro2\n"));
    let (code, out, err) = run_cli(dir.path(), &["reload", "--url", &admin]);
    assert_eq!(code, 1, "{out}{err}");
    let expected = format!(
        "error: reload refused: {}:14:12: policy.flavour: unknown variant `pro2`",
        broken.display()
    );
    assert!(err.starts_with(&expected), "{err}\nexpected: {expected}");
    assert!(
        err.contains("hint: the previous configuration keeps running"),
        "{err}"
    );

    // With a token configured, the reload needs it (loopback is not enough any more).
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let with_token = std::fs::read_to_string(loopback_config(dir.path(), base))
        .unwrap()
        .replace(
            "admin:\n  listen: 127.0.0.1:0\n",
            &format!(
                "admin:\n  listen: 127.0.0.1:0\n  token_file: {}\n",
                token.display()
            ),
        );
    std::fs::write(&config, with_token).unwrap();
    let (code, out, err) = run_cli(dir.path(), &["reload", "--url", &admin]);
    assert_eq!(
        code, 0,
        "the token takes effect with this reload: {out}{err}"
    );
    // A client whose configuration has no token is refused now…
    let tokenless = dir.path().join("tokenless.yaml");
    std::fs::write(&tokenless, "").unwrap();
    let without = [
        "--config",
        tokenless.to_str().unwrap(),
        "reload",
        "--url",
        &admin,
    ];
    let (code, _, err) = run_cli(dir.path(), &without);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("operator endpoints need"), "{err}");
    // …unless it brings the token; the one above took it from ./timproxy.yaml.
    let token_arg = ["--token-file", token.to_str().unwrap()];
    let (code, out, err) = run_cli(dir.path(), &[&without[..], &token_arg[..]].concat());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(served.terminate(), Some(0));
}

/// Send bytes that are no HTTP request to the inbound listener and wait for its answer (the
/// listener logs "malformed request refused" at debug level).
fn send_garbage(served: &Served) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(served.addr("inbound")).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    stream.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");
}

/// Log messages up to and including the first one equal to `until` (bounded wait).
fn messages_until(served: &Served, until: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = served
            .stderr_lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line `{until}` within 30 s; saw {messages:?}"));
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        messages.push(message.to_owned());
        if message == until {
            return messages;
        }
    }
}

#[test]
fn log_filter_changed_at_runtime_shows_debug_lines_until_it_is_reset() {
    let dir = tempfile::tempdir().unwrap();
    let config = loopback_config(dir.path(), "homeserver:\n  url: http://127.0.0.1:1/\n");
    let served = Served::start(dir.path(), &config, &[]);
    let admin = format!("http://{}", served.addr("admin"));
    const DEBUG_LINE: &str = "malformed request refused";
    const CHANGED: &str = "log filter changed through the admin listener";

    // At the default level the debug line is not written.
    send_garbage(&served);
    let (status, body) = admin_call(
        "PUT",
        &format!("{admin}/log-level"),
        Some(r#"{"filter": "info,timproxy::inbound=debug", "reset_after": "0s"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["filter"], "info,timproxy::inbound=debug");
    assert_eq!(view["default"], "info");
    let before = messages_until(&served, CHANGED);
    assert!(!before.iter().any(|m| m == DEBUG_LINE), "{before:?}");

    // After the change it is.
    send_garbage(&served);
    messages_until(&served, DEBUG_LINE);

    // A change with a reset delay returns to the default by itself.
    let (status, body) = admin_call(
        "PUT",
        &format!("{admin}/log-level"),
        Some(r#"{"filter": "info,timproxy::inbound=debug", "reset_after": "1s"}"#),
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""reset_at":"#), "{body}");
    messages_until(&served, "log filter back to the default");
    send_garbage(&served);
    let (status, _) = admin_call("POST", &format!("{admin}/config/reload"), None, None);
    assert_eq!(status, 200);
    let after = messages_until(
        &served,
        "configuration reload requested through the admin listener",
    );
    assert!(!after.iter().any(|m| m == DEBUG_LINE), "{after:?}");
    let (_, body) = admin_call("GET", &format!("{admin}/log-level"), None, None);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["filter"], "info");
    assert_eq!(view["temporary"], false);

    // The reference's paths.
    let (status, body) = admin_call(
        "GET",
        &format!("{admin}/actuator/logging/levels"),
        None,
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"acceptedValues": ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]})
    );
    let (status, _) = admin_call(
        "PUT",
        &format!("{admin}/actuator/logging/DEBUG/timproxy::inbound"),
        None,
        None,
    );
    assert_eq!(status, 202);
    let (_, body) = admin_call("GET", &format!("{admin}/log-level"), None, None);
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["filter"], "info,timproxy::inbound=debug");
    let (status, body) = admin_call("PUT", &format!("{admin}/actuator/logging/LOUD"), None, None);
    assert_eq!(status, 400, "{body}");
    assert_eq!(served.terminate(), Some(0));
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
