//! The rule-coverage matrix (`src/policy/coverage.tsv`) walked through the real inbound
//! listener, in front of the fake homeserver of [`super::inbound`].
//!
//! Every `inbound` row's example must get what the row expects, counted under the row's rule.
//! Then, with every TIM rule in shadow mode, the same requests must reach the homeserver
//! unchanged (same target, same body bytes) and be counted with `mode="shadow"`, while the rows
//! of federation-boundary rules stay refused. Each row is sent under every spelling of its
//! route (`src/matrix/aliases.tsv`: `r0` for `v3`, …): nothing may pass through an alias that
//! the canonical path refuses.

use std::collections::HashMap;

use http::StatusCode;
use serde_json::Value;
use timproxy::config::Flavour;
use timproxy::policy::coverage::{self, Entry, Expect, Via};
use timproxy::policy::registry::{self, Kind};
use timproxy::policy::shadow::ShadowRule;

use super::inbound::{Harness, sample, start_with};
use crate::support::rule_count;

/// Every rule of the registry that may be shadowed.
fn all_tim_rules() -> Vec<ShadowRule> {
    registry::rules()
        .unwrap()
        .iter()
        .filter(|r| r.kind == Kind::Tim && r.shadowed_with.is_none())
        .map(|r| ShadowRule::parse(r.id).unwrap())
        .collect()
}

/// `template` with the example's path parameters (percent-encoded as sent) and the test's
/// defaults for the others.
fn target(template: &str, example: &Value) -> String {
    let params = example.get("params");
    let path = template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => params
                    .and_then(|p| p.get(name))
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| sample(name))
                    .to_owned(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/");
    match example.get("query").and_then(Value::as_str) {
        Some(query) => format!("{path}?{query}"),
        None => path,
    }
}

/// Send the example of `entry` on `template`; (status, answer, target, body as sent).
async fn send(h: &Harness, entry: &Entry, template: &str) -> (StatusCode, Value, String, String) {
    let example = entry
        .example
        .as_ref()
        .expect("inbound rows have an example");
    let target = target(template, example);
    let body = example.get("body").cloned();
    let sent = body.as_ref().map(Value::to_string).unwrap_or_default();
    let federation =
        template.starts_with("/_matrix/federation/") || template.starts_with("/_matrix/key/");
    let (status, answer) = if federation {
        match example
            .get("origin")
            .and_then(Value::as_str)
            .unwrap_or("hs2.test")
        {
            "none" => h.send(entry.method.clone(), &target, &[], body).await,
            origin => {
                h.federation(entry.method.clone(), &target, origin, body)
                    .await
            }
        }
    } else {
        let token = match example.get("as").and_then(Value::as_str).unwrap_or("alice") {
            "alice" => Some("Bearer tok-alice"),
            "insured" => Some("Bearer tok-insured"),
            "remote" => Some("Bearer tok-remote"),
            "none" => None,
            other => panic!("line {}: unknown user `{other}`", entry.line),
        };
        let headers: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
        h.send(entry.method.clone(), &target, &headers, body).await
    };
    (status, answer, target, sent)
}

/// The value of one counter (0 when it was never incremented).
fn counter(h: &Harness, family: &str, rule: &str, mode: &str) -> u64 {
    rule_count(&h.metrics.encode(), family, "inbound", rule, mode)
}

fn family(expect: &Expect) -> &'static str {
    match expect {
        Expect::Refuse { .. } | Expect::HeldBack => "rejections",
        Expect::Rewrite { .. } => "rewrites",
    }
}

/// Walk every `inbound` row; `shadow` puts every TIM rule in shadow mode.
async fn walk(shadow: bool) -> usize {
    let mut harnesses: HashMap<&str, Harness> = HashMap::new();
    let mut failures = Vec::new();
    let mut walked = 0;
    for entry in coverage::entries()
        .unwrap()
        .iter()
        .filter(|e| e.via == Via::Inbound)
    {
        let (Some(rule), Some(example), Some(expect)) = (entry.rule, &entry.example, &entry.expect)
        else {
            panic!(
                "line {}: inbound rows have rule, example and expect",
                entry.line
            );
        };
        let flavour = example
            .get("flavour")
            .and_then(Value::as_str)
            .unwrap_or("pro");
        if !harnesses.contains_key(flavour) {
            let harness = start_with(|c| {
                c.policy.flavour = if flavour == "epa" {
                    Flavour::Epa
                } else {
                    Flavour::Pro
                };
                if shadow {
                    c.policy.shadow = all_tim_rules();
                }
            })
            .await;
            harnesses.insert(flavour, harness);
        }
        let h = &harnesses[flavour];
        let shadowed = shadow && registry::find(rule).is_some_and(|r| r.kind == Kind::Tim);
        for template in coverage::spellings(entry.template) {
            walked += 1;
            let mode = if shadowed { "shadow" } else { "enforce" };
            let before = counter(h, family(expect), rule, mode);
            let (status, answer, target, sent) = send(h, entry, &template).await;
            let counted = counter(h, family(expect), rule, mode) > before;
            let place = format!(
                "line {} ({rule}: {}) {} {target}",
                entry.line, entry.trigger, entry.method
            );
            if shadowed {
                // Forwarded unchanged: the homeserver saw the same target and body bytes.
                let unchanged = status == StatusCode::OK
                    && answer["echo"] == true
                    && answer["target"] == target.as_str()
                    && answer["body"] == sent.as_str();
                if !unchanged || !counted {
                    failures.push(format!("{place}: shadowed, expected unchanged and counted; got {status} {answer} (counted {counted})"));
                }
                continue;
            }
            let ok = match expect {
                Expect::Refuse {
                    status: want,
                    errcode,
                } => status.as_u16() == *want && answer["errcode"] == *errcode,
                Expect::Rewrite { pointer, value } => {
                    status == StatusCode::OK
                        && answer["body"]
                            .as_str()
                            .and_then(|b| serde_json::from_str::<Value>(b).ok())
                            .and_then(|b| b.pointer(pointer).cloned())
                            .as_ref()
                            == Some(value)
                }
                Expect::HeldBack => {
                    status == StatusCode::OK
                        && answer == serde_json::json!({"pdus": {}})
                        && answer["echo"] != true
                }
            };
            if !ok || !counted {
                failures.push(format!(
                    "{place}: expected {expect:?}; got {status} {answer} (counted {counted})"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    walked
}

#[tokio::test]
async fn every_inbound_row_of_the_coverage_matrix_is_enforced_through_the_listener() {
    let walked = walk(false).await;
    assert!(walked > 100, "only {walked} rows walked");
}

#[tokio::test]
async fn with_every_tim_rule_shadowed_requests_pass_unchanged_but_the_boundary_holds() {
    let walked = walk(true).await;
    assert!(walked > 100, "only {walked} rows walked");
}
