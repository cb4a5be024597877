//! The registry of rule ids (`rules.tsv`): every id timproxy logs and counts as `rule=…`, what
//! kind of rule it is and what it stops.
//!
//! Shadow mode (`policy.shadow`) is checked against it: only TIM rules can be shadowed. Rules
//! that guard the federation boundary (federation list membership, X-Matrix, destinations)
//! never can, and request errors are not rules one could switch off.

use std::sync::LazyLock;

use super::data::{self, DataError};

const FILE: &str = "rules.tsv";
const TSV: &str = include_str!("rules.tsv");
const COLUMNS: [&str; 4] = ["rule", "kind", "shadowed_with", "effect"];

/// What a rule protects, which decides whether it may be shadowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A TIM rule: may be shadowed.
    Tim,
    /// Guards the federation boundary: never shadowed.
    Boundary,
    /// The request itself is unusable: not a rule.
    Request,
}

/// One registered rule id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    pub id: &'static str,
    pub kind: Kind,
    /// For a part of a TIM rule (its lookup failing): the rule whose shadow setting applies.
    pub shadowed_with: Option<&'static str>,
    pub effect: &'static str,
}

fn parse() -> Result<Vec<RuleInfo>, DataError> {
    let rows = data::rows(FILE, TSV, &COLUMNS)?;
    let mut rules: Vec<RuleInfo> = Vec::with_capacity(rows.len());
    for row in &rows {
        let [id, kind, shadowed_with, effect] = row.cells[..] else {
            return Err(row.error(FILE, "wrong number of cells"));
        };
        let kind = match kind {
            "tim" => Kind::Tim,
            "boundary" => Kind::Boundary,
            "request" => Kind::Request,
            other => {
                return Err(row.error(
                    FILE,
                    format!("kind `{other}` is not tim, boundary or request"),
                ));
            }
        };
        if rules.iter().any(|r| r.id == id) {
            return Err(row.error(FILE, format!("`{id}` is listed twice")));
        }
        let shadowed_with = match shadowed_with {
            "-" => None,
            base => {
                if kind != Kind::Tim || !rules.iter().any(|r| r.id == base && r.kind == Kind::Tim) {
                    return Err(row.error(
                        FILE,
                        format!("`{base}` must be a TIM rule listed above `{id}`"),
                    ));
                }
                Some(base)
            }
        };
        rules.push(RuleInfo {
            id,
            kind,
            shadowed_with,
            effect,
        });
    }
    Ok(rules)
}

static RULES: LazyLock<Result<Vec<RuleInfo>, DataError>> = LazyLock::new(parse);

/// Every registered rule, or why the registry cannot be read.
pub fn rules() -> Result<&'static [RuleInfo], &'static DataError> {
    RULES.as_deref()
}

/// The registered rule `id`.
pub fn find(id: &str) -> Option<&'static RuleInfo> {
    rules().ok()?.iter().find(|r| r.id == id)
}

/// The rule id whose shadow setting decides about `rule`: its own, or the rule it is part of.
pub fn shadow_key(rule: &str) -> &str {
    find(rule).and_then(|r| r.shadowed_with).unwrap_or(rule)
}

/// Check that `id` may be listed in `policy.shadow`; the error says why not, for the operator.
pub fn check_shadowable(id: &str) -> Result<&'static RuleInfo, String> {
    let rules = rules().map_err(|e| format!("rule registry unreadable: {e}"))?;
    let Some(rule) = rules.iter().find(|r| r.id == id) else {
        let known: Vec<&str> = rules
            .iter()
            .filter(|r| r.kind == Kind::Tim && r.shadowed_with.is_none())
            .map(|r| r.id)
            .collect();
        return Err(format!(
            "unknown rule id `{id}`; rules that can be shadowed: {}",
            known.join(", ")
        ));
    };
    match (rule.kind, rule.shadowed_with) {
        (Kind::Tim, None) => Ok(rule),
        (Kind::Tim, Some(base)) => Err(format!(
            "`{id}` is part of {base} and follows its setting; shadow {base} instead"
        )),
        (Kind::Boundary, _) => Err(format!(
            "`{id}` protects the federation boundary and cannot be shadowed"
        )),
        (Kind::Request, _) => Err(format!(
            "`{id}` refuses unusable requests; it is not a TIM rule and cannot be shadowed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_loads_and_sorts_rules_by_kind() {
        let rules = rules().unwrap();
        assert!(rules.len() > 50, "{}", rules.len());
        assert_eq!(find("A_26515-01").unwrap().kind, Kind::Tim);
        assert_eq!(find("A_25534").unwrap().kind, Kind::Boundary);
        assert_eq!(find("body-parse").unwrap().kind, Kind::Request);
        assert_eq!(shadow_key("A_28358-lookup"), "A_28358");
        assert_eq!(shadow_key("A_28358"), "A_28358");
        assert_eq!(shadow_key("not-registered"), "not-registered");
    }

    #[test]
    fn only_whole_tim_rules_can_be_shadowed() {
        assert!(check_shadowable("A_26515-01").is_ok());
        assert!(check_shadowable("ePA-insured-to-insured").is_ok());
        for (id, why) in [
            ("A_25534", "protects the federation boundary"),
            ("federation-origin", "protects the federation boundary"),
            ("A_25534-destination", "protects the federation boundary"),
            ("body-parse", "not a TIM rule"),
            ("A_28358-lookup", "shadow A_28358 instead"),
            ("A_99999", "unknown rule id `A_99999`"),
        ] {
            let err = check_shadowable(id).unwrap_err();
            assert!(err.contains(why), "{id}: {err}");
        }
    }

    /// `const NAME: &str = "value";` pairs of a Rust source text.
    fn str_consts(text: &str) -> Vec<(&str, &str)> {
        text.lines()
            .filter_map(|line| {
                let (left, right) = line.trim().split_once(": &str = \"")?;
                let name = left.strip_prefix("pub ").unwrap_or(left);
                let name = name.strip_prefix("pub(crate) ").unwrap_or(name);
                Some((name.strip_prefix("const ")?, right.strip_suffix("\";")?))
            })
            .collect()
    }

    /// Every rule id constant of the rules and listeners (`RULE…` constants, and the outbound
    /// listener's `rules` module) is registered, so whatever is logged can be looked up.
    #[test]
    fn every_rule_constant_in_the_code_is_registered() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.join("info_api.rs")];
        let mut dirs = vec![
            src.join("policy"),
            src.join("inbound"),
            src.join("outbound"),
        ];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        let mut ids = Vec::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            for (name, value) in str_consts(&text) {
                if name.starts_with("RULE") {
                    ids.push(value.to_owned());
                }
            }
        }
        let outbound = std::fs::read_to_string(src.join("outbound/mod.rs")).unwrap();
        let rules_mod = outbound
            .split_once("pub mod rules {")
            .and_then(|(_, rest)| rest.split_once("\n}"))
            .map(|(body, _)| body)
            .unwrap();
        ids.extend(str_consts(rules_mod).into_iter().map(|(_, v)| v.to_owned()));
        assert!(ids.len() > 30, "only {} rule constants found", ids.len());
        let missing: Vec<&String> = ids.iter().filter(|id| find(id).is_none()).collect();
        assert!(
            missing.is_empty(),
            "not in src/policy/rules.tsv: {missing:?}"
        );
    }
}
