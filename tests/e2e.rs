//! Real-Synapse end-to-end suite: two homeservers federate only through timproxy
//! (`tests/e2e/run.sh`, driving the shared harness). Needs the harness next to the repository
//! (`../shared/e2e`) and installs Synapse into `.e2e/venv` on first use (about 40 s).
//! `TIMPROXY_SKIP_E2E=1` skips it explicitly (the skip is printed, never silent).

use std::process::Command;

#[test]
fn synapse_federates_through_timproxy() {
    if std::env::var_os("TIMPROXY_SKIP_E2E").is_some() {
        eprintln!("e2e skipped: TIMPROXY_SKIP_E2E is set");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let output = Command::new("timeout")
        .arg("900")
        .arg("bash")
        .arg(format!("{root}/tests/e2e/run.sh"))
        .env("TIMPROXY_BIN", env!("CARGO_BIN_EXE_timproxy"))
        .output()
        .expect("run tests/e2e/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    // flow.py's closing line per flow: `e2e: N passed, M failed`.
    let summaries: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.strip_prefix("e2e: ")
                .and_then(|rest| rest.split_once(" passed, "))
                .is_some_and(|(n, m)| {
                    n.bytes().all(|b| b.is_ascii_digit()) && m.ends_with(" failed")
                })
        })
        .collect();
    assert_eq!(
        summaries.len(),
        4,
        "expected four flow summaries:\n{stdout}\n{stderr}"
    );
    for line in &summaries {
        assert!(line.ends_with(" 0 failed"), "flow failed: {line}");
    }
    assert!(output.status.success(), "e2e script failed");
}
