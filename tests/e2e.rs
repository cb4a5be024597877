//! Real-Synapse end-to-end suite: two homeservers federate only through timproxy, a third runs
//! outside the federation list (`tests/e2e/run.sh`; the harness lives in `tests/e2e/`). Installs
//! Synapse into `.e2e/venv` on first use (about 40 s) and uses the ports
//! `TIMPROXY_E2E_PORT_BASE..+99` (default 8448). Run it under `flock /work/locks/e2e.lock` on a
//! shared machine. `TIMPROXY_SKIP_E2E=1` skips it explicitly (the skip is printed, never silent).

use std::process::Command;

/// The flows `run.sh` runs when `TIMPROXY_E2E_FLOWS` does not select a subset. The last three
/// (headless Chromium, OIDC login, push) may skip where Chromium or node is missing; they then
/// print why, and the skip is reported here too.
const CORE_FLOWS: [&str; 7] = [
    "happy",
    "tim-rules",
    "blocked-invite",
    "refused",
    "browser",
    "oidc",
    "push",
];

#[test]
fn synapse_federates_through_timproxy() {
    if std::env::var_os("TIMPROXY_SKIP_E2E").is_some() {
        eprintln!("e2e skipped: TIMPROXY_SKIP_E2E is set");
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    // run.sh bounds itself (TIMPROXY_E2E_TIMEOUT, default 900 s); this is the backstop.
    let output = Command::new("timeout")
        .arg("1000")
        .arg("bash")
        .arg(format!("{root}/tests/e2e/run.sh"))
        .env("TIMPROXY_BIN", env!("CARGO_BIN_EXE_timproxy"))
        .output()
        .expect("run tests/e2e/run.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");

    let flows = flow_summaries(&stdout);
    if std::env::var_os("TIMPROXY_E2E_FLOWS").is_none() {
        for core in CORE_FLOWS {
            assert!(
                flows.iter().any(|(name, _)| name == core),
                "flow {core} did not run:\n{stdout}\n{stderr}"
            );
        }
    }
    assert!(!flows.is_empty(), "no flow ran:\n{stdout}\n{stderr}");
    for (name, summary) in &flows {
        let (passed, failed) = match summary {
            Some(Summary::Counts(passed, failed)) => (passed, failed),
            Some(Summary::Skipped(why)) => {
                eprintln!("e2e: flow {name} SKIPPED: {why}");
                continue;
            }
            None => panic!("flow {name} ended without its `e2e: N passed, M failed` line"),
        };
        assert!(
            *failed == 0 && *passed > 0,
            "flow {name}: {passed} passed, {failed} failed"
        );
    }
    assert!(output.status.success(), "e2e script failed");
}

/// How a flow ended.
#[derive(Debug, PartialEq)]
enum Summary {
    /// `e2e: N passed, M failed`
    Counts(u32, u32),
    /// `e2e: skipped: <why>`: the flow cannot run on this machine.
    Skipped(String),
}

/// Each `== flow NAME` section of run.sh's output with the last summary line inside it (None
/// when the flow never printed one, e.g. it was killed at the time bound).
fn flow_summaries(stdout: &str) -> Vec<(String, Option<Summary>)> {
    let mut flows: Vec<(String, Option<Summary>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(name) = line.strip_prefix("== flow ") {
            flows.push((name.trim().to_owned(), None));
        } else if let (Some(counts), Some(current)) = (parse_summary(line), flows.last_mut()) {
            current.1 = Some(counts);
        }
    }
    flows
}

fn parse_summary(line: &str) -> Option<Summary> {
    let rest = line.strip_prefix("e2e: ")?;
    if let Some(why) = rest.strip_prefix("skipped: ") {
        return Some(Summary::Skipped(why.to_owned()));
    }
    let (passed, failed) = rest.split_once(" passed, ")?;
    let failed = failed.strip_suffix(" failed")?;
    Some(Summary::Counts(passed.parse().ok()?, failed.parse().ok()?))
}
