//! `timproxy spec-check`: the binary on fixture files (exit codes, output) and the library on
//! the shared permission-config vectors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use timproxy::spec_check::{Checker, Kind, Options, Severity};

fn data(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Run `timproxy spec-check ARGS` in the fixture directory (so paths print relative).
fn spec_check(args: &[&str]) -> (i32, String, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_timproxy"))
        .current_dir(data("tests/data/spec-check"))
        .arg("spec-check")
        .args(args)
        .output()
        .expect("run timproxy");
    (
        out.status.code().expect("exit code"),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lines_with<'a>(out: &'a str, needle: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn the_v1_11_table_itself_is_clean_against_the_matrix_allow_list() {
    let table = data("src/matrix/v1_11_endpoints.tsv");
    let table = table.to_str().unwrap();
    let (code, out, err) = spec_check(&["--matrix-only", table]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(lines_with(&out, ": error:").is_empty(), "{out}");
    // Deprecated rows are advice only.
    assert!(
        lines_with(&out, ": warning:")
            .iter()
            .all(|l| l.ends_with("[deprecated]")),
        "{out}"
    );
    assert!(err.contains("1 file checked, 0 errors"), "{err}");
}

#[test]
fn the_v1_11_table_under_tim_rules_flags_exactly_the_blocked_endpoints() {
    let table = data("src/matrix/v1_11_endpoints.tsv");
    let (code, out, _) = spec_check(&[table.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    let mut rules: Vec<&str> = lines_with(&out, ": error:")
        .iter()
        .map(|l| l.rsplit_once('[').unwrap().1.trim_end_matches(']'))
        .collect();
    rules.sort_unstable();
    assert_eq!(
        rules,
        vec![
            "A_26262",
            "A_26344",
            "A_26344",
            "A_26520/A_28590",
            "A_26520/A_28590",
            "get_token-disabled"
        ],
        "{out}"
    );
}

#[test]
fn newer_matrix_endpoints_in_a_list_are_flagged_with_line_and_rule() {
    let (code, out, _) = spec_check(&["newer-endpoints.txt"]);
    assert_eq!(code, 1, "{out}");
    let expect = [
        (
            "newer-endpoints.txt:4:1: error: `GET /_matrix/client/v1/auth_metadata` is not a Matrix v1.11 endpoint",
            "[unknown-endpoint]",
        ),
        (
            "newer-endpoints.txt:5:1: error: `POST /_matrix/client/unstable/org.matrix.msc3575/sync`",
            "[unknown-endpoint]",
        ),
        (
            "newer-endpoints.txt:6:1: error: `GET /_matrix/client/v3/login/get_token`",
            "[unknown-endpoint]",
        ),
        (
            "newer-endpoints.txt:7:1: error: `POST /_matrix/client/v1/login/get_token` is blocked",
            "[get_token-disabled]",
        ),
        (
            "newer-endpoints.txt:8:1: error: `GET /_matrix/client/v1/media/preview_url` is blocked by TIM rule A_26344",
            "[A_26344]",
        ),
        (
            "newer-endpoints.txt:9:1: error: `DELETE /_matrix/client/v3/createRoom`",
            "[method-not-allowed]",
        ),
        (
            "newer-endpoints.txt:10:1: warning: `GET /_matrix/client/v3/initialSync` is deprecated",
            "[deprecated]",
        ),
    ];
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), expect.len(), "{out}");
    for (line, (start, end)) in lines.iter().zip(expect) {
        assert!(
            line.starts_with(start) && line.ends_with(end),
            "{line}\n  expected {start} … {end}"
        );
    }
}

#[test]
fn an_openapi_document_with_newer_endpoints_is_flagged_at_each_operation() {
    let (code, out, _) = spec_check(&["openapi-newer.yaml"]);
    assert_eq!(code, 1, "{out}");
    let errors = lines_with(&out, ": error:");
    assert_eq!(errors.len(), 3, "{out}");
    assert!(
        errors[0]
            .starts_with("openapi-newer.yaml:22:5: error: `GET /_matrix/client/v1/auth_metadata`"),
        "{out}"
    );
    assert!(errors[1].starts_with("openapi-newer.yaml:26:5: error: `POST /_matrix/client/unstable/org.matrix.msc3575/sync`"), "{out}");
    assert!(
        errors[2].starts_with(
            "openapi-newer.yaml:30:5: error: `GET /_matrix/client/v3/login/get_token`"
        ),
        "{out}"
    );
    let (code, out, _) = spec_check(&["swagger-clean.json"]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn permission_configs_good_and_bad() {
    for good in ["permission-good.json", "permission-event-epa.json"] {
        let (code, out, _) = spec_check(&[good]);
        assert_eq!((code, out.as_str()), (0, ""), "{good}");
    }
    let (code, out, _) = spec_check(&["permission-bad.json"]);
    assert_eq!(code, 1, "{out}");
    let at = |prefix: &str, rule: &str| {
        assert!(
            out.lines()
                .any(|l| l.starts_with(prefix) && l.ends_with(rule)),
            "no line {prefix} … {rule} in\n{out}"
        );
    };
    at(
        "permission-bad.json:2:3: error: `defaultSetting` must be exactly",
        "[permission-config]",
    );
    at(
        "permission-bad.json:4:5: error: `*.example.org` is not a valid server name",
        "[permission-config-id]",
    );
    at(
        "permission-bad.json:5:5: error: `serverExceptions` entry `tim.praxis.example.org` must map to an object",
        "[permission-config]",
    );
    at(
        "permission-bad.json:8:5: error: `userExceptions` key `dr.meier:tim.klinik.example.com` must be a user ID",
        "[permission-config]",
    );
    at(
        "permission-bad.json:9:5: error: `@nurse` is not a valid user ID",
        "[permission-config-id]",
    );
    at(
        "permission-bad.json:11:5: error: key `@nurse:tim.klinik.example.com` appears more than once",
        "[duplicate-key]",
    );
    at(
        "permission-bad.json:13:23: error: `groupExceptions` items are objects",
        "[permission-config]",
    );
    assert!(out.contains("(did you mean \"block all\"?)"), "{out}");

    let (code, out, _) = spec_check(&["permission-redundant.json"]);
    assert_eq!(code, 0, "warnings alone pass: {out}");
    assert_eq!(lines_with(&out, ": warning:").len(), 2, "{out}");
    assert!(
        out.contains(
            "permission-redundant.json:4:22: warning: `@friend:spam.example.net` has no effect"
        ),
        "{out}"
    );
    assert!(out.contains("`domainExceptions` is the legacy"), "{out}");
}

#[test]
fn every_shared_permission_config_vector_has_errors_exactly_when_invalid() {
    let text = std::fs::read_to_string(data("tests/data/permission-config-cases.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(cases.len(), 59);
    let checker = Checker::new(Options {
        kind: Some(Kind::PermissionConfig),
        ..Options::default()
    })
    .unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in &cases {
        let config = &case["config"];
        if config.is_null() {
            continue;
        }
        checked += 1;
        let event = serde_json::json!({"type": case["account_data_type"], "content": config});
        let doc = serde_json::to_string_pretty(&event).unwrap();
        let name = case["name"].as_str().unwrap();
        let report = checker.check_text(name, &doc, true);
        let errors: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(ToString::to_string)
            .collect();
        let invalid = case["expected"] == "invalid_config";
        if invalid == errors.is_empty() {
            failures.push(format!(
                "{name} (expected {}): {errors:?}",
                case["expected"]
            ));
        }
        assert!(
            errors.iter().all(|e| e.starts_with(&format!("{name}:"))),
            "{errors:?}"
        );
    }
    assert!(checked >= 50, "only {checked} vectors have a config");
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_bad_timproxy_config_is_reported_like_serve_does() {
    let (code, out, _) = spec_check(&["config-bad.yaml"]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "config-bad.yaml:5:3: error: admin.listen: port 8090 is already used by inbound.listen [config]\n"
    );
    let (code, out, _) = spec_check(&["config-typo.yaml"]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("config-typo.yaml:3:3: error: homeserver: unknown field `sever_name`"),
        "{out}"
    );
}

#[test]
fn federation_lists_good_and_bad() {
    let (code, out, _) = spec_check(&["federation-good.json"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = spec_check(&["federation-bad.json"]);
    assert_eq!(code, 1);
    assert!(
        out.contains("federation-bad.json: error: missing required `version`"),
        "{out}"
    );
    assert!(out.contains("federation-bad.json:4:16: error: domainList[1]: `tim.praxis.example.com` is listed more than once"), "{out}");
    assert!(out.contains("federation-bad.json:5:16: error: domainList[2]: `not a domain` is not a valid server name"), "{out}");
}

#[test]
fn the_vzd_vectors_decode_and_warn_that_the_signature_is_unchecked() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/federation-list");
    let entries = std::fs::read_dir(&dir).unwrap();
    let mut checked = 0;
    let checker = Checker::new(Options::default()).unwrap();
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("jws") {
            continue;
        }
        let report = checker.check_path(&path).remove(0);
        assert_eq!(report.kind, Some(Kind::FederationList), "{path:?}");
        assert!(
            report.diagnostics.iter().any(|d| d.rule == "jws-signature"),
            "{path:?}"
        );
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} JWS vectors in {dir:?}");
}

#[test]
fn a_directory_is_walked_recursively_and_unrelated_files_are_skipped() {
    let (code, out, err) = spec_check(&["tree"]);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        vec![
            "tree/nested/client.endpoints:2:1: error: `GET /_matrix/client/v1/auth_metadata` is not a Matrix v1.11 endpoint; timproxy answers 404 M_UNRECOGNIZED (an operator can allow it with inbound.extra_endpoints) [unknown-endpoint]",
            "tree/nested/timproxy.yaml:5:3: error: admin.listen: port 8090 is already used by inbound.listen [config]",
        ],
        "{out}"
    );
    assert!(
        err.contains("3 files checked, 2 errors, 0 warnings"),
        "{err}"
    );
}

#[test]
fn an_extra_endpoint_makes_a_newer_endpoint_acceptable() {
    let (code, out, _) = spec_check(&[
        "--extra-endpoint",
        "GET /_matrix/client/v1/auth_metadata",
        "tree/nested/client.endpoints",
    ]);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn json_output_is_one_document_with_files_diagnostics_and_summary() {
    let (code, out, err) = spec_check(&[
        "--format",
        "json",
        "permission-good.json",
        "newer-endpoints.txt",
        "missing.json",
    ]);
    assert_eq!(code, 2, "an unreadable file wins: {out}{err}");
    assert_eq!(err, "");
    let doc: Value = serde_json::from_str(&out).unwrap();
    let files = doc["files"].as_array().unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(
        files[0],
        serde_json::json!({"path":"permission-good.json","kind":"permission-config","errors":0,"warnings":0})
    );
    assert_eq!(files[1]["kind"], "endpoints");
    assert_eq!(files[2]["kind"], Value::Null);
    let first = &doc["diagnostics"][0];
    assert_eq!(first["path"], "newer-endpoints.txt");
    assert_eq!(
        (first["line"].as_u64(), first["column"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(first["severity"], "error");
    assert_eq!(first["rule"], "unknown-endpoint");
    let last = doc["diagnostics"].as_array().unwrap().last().unwrap();
    assert_eq!(
        (&last["path"], &last["rule"], &last["line"]),
        (
            &Value::from("missing.json"),
            &Value::from("unreadable"),
            &Value::Null
        )
    );
    assert_eq!(
        doc["summary"],
        serde_json::json!({"files":3,"errors":7,"warnings":1,"unreadable":1})
    );
}

#[test]
fn unknown_kinds_and_usage_errors_exit_2_or_1() {
    let (code, out, _) = spec_check(&["tree/docs/compose.yaml"]);
    assert_eq!(code, 1);
    assert!(out.ends_with("[unknown-kind]\n"), "{out}");
    let (code, _, err) = spec_check(&[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = spec_check(&["--kind", "bogus", "x"]);
    assert_eq!(code, 2, "{err}");
    let (code, out, _) = spec_check(&["--kind", "permission-config", "federation-good.json"]);
    assert_eq!(code, 1);
    assert!(out.contains("missing required `defaultSetting`"), "{out}");
}

#[test]
fn readme_maps_every_reference_setting_as_spec_check_does() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for m in timproxy::spec_check::reference::MAPPINGS.iter() {
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{}` |", m.reference)))
            .unwrap_or_else(|| panic!("README has no row for {}", m.reference));
        let cell = |v: Option<&str>| v.map_or("—".to_owned(), |v| format!("`{v}`"));
        let cells: Vec<&str> = row.split(" | ").collect();
        assert_eq!(cells[1], cell(m.env), "{row}");
        assert_eq!(cells[2], cell(m.timproxy), "{row}");
        assert_eq!(cells[3], cell(m.timproxy_env().as_deref()), "{row}");
    }
}
