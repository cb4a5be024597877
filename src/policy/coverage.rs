//! The rule-coverage matrix (`coverage.tsv`, issue 14): for every TIM rule, every route through
//! which its effect can be reached; and for every endpoint the inbound listener serves, which
//! rules reach it (or why none does).
//!
//! It is data the tests hold the code to: the table tests below fail when a served route has
//! no row (a new endpoint, or an alias added to the endpoint table later), and
//! `tests/it/coverage.rs` sends the example of every `inbound` row through the real listener,
//! once enforced and once with every TIM rule in shadow mode, under every alias spelling of its
//! route too (`src/matrix/aliases.tsv`: `r0` for `v3`, …). The listener dispatches its rules
//! on [`canonical`] templates, so even an operator's explicit alias spelling
//! (`inbound.extra_endpoints`, which wins over the shipped alias) gets the rules of its v1.11
//! route.

use std::borrow::Cow;
use std::sync::LazyLock;

use http::Method;
use serde_json::Value;

use super::data::{self, DataError};
use super::registry::{self, Kind};
use crate::matrix::endpoints::{ALIASES_TSV, Alias, parse_aliases};

const FILE: &str = "coverage.tsv";
const TSV: &str = include_str!("coverage.tsv");
const COLUMNS: [&str; 6] = ["rule", "route", "via", "trigger", "example", "expect"];
/// Members an example may have.
const EXAMPLE_KEYS: [&str; 6] = ["body", "params", "query", "as", "origin", "flavour"];

/// Where a rule is enforced for a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The inbound listener; the row has an example and what it must get.
    Inbound,
    /// The outbound listener, on the homeserver's federation request.
    Outbound,
    /// The homeserver keeps it by itself.
    Homeserver,
    /// A known gap, described in the row.
    Pending,
    /// No rule reaches the route.
    None,
}

/// What the example of an `inbound` row must get.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// Refused with this status and errcode.
    Refuse { status: u16, errcode: &'static str },
    /// Forwarded, with the JSON value at `pointer` rewritten to `value`.
    Rewrite { pointer: &'static str, value: Value },
    /// A federation transaction the proxy answers itself with `200 {"pdus":{}}` and forwards
    /// nothing of (see [`super::event_domains`] why a transaction is not refused).
    HeldBack,
}

/// One row.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub line: usize,
    /// The rule id; `None` for `-` (no rule reaches the route).
    pub rule: Option<&'static str>,
    pub method: Method,
    pub template: &'static str,
    pub via: Via,
    pub trigger: &'static str,
    /// A request that triggers the rule (`inbound` rows): a JSON object with the members
    /// `body`, `params`, `query`, `as`, `origin` and `flavour`, read by the listener test.
    pub example: Option<Value>,
    pub expect: Option<Expect>,
}

fn parse_expect(text: &'static str) -> Option<Expect> {
    if text == "held-back" {
        return Some(Expect::HeldBack);
    }
    if let Some(rest) = text.strip_prefix("rewrite ") {
        let (pointer, value) = rest.split_once(' ')?;
        return Some(Expect::Rewrite {
            pointer,
            value: serde_json::from_str(value).ok()?,
        });
    }
    let (status, errcode) = text.split_once(' ')?;
    let status: u16 = status.parse().ok()?;
    ((400..500).contains(&status) && errcode.starts_with("M_"))
        .then_some(Expect::Refuse { status, errcode })
}

fn parse_example(text: &str) -> Result<Value, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("example: {e}"))?;
    let obj = value.as_object().ok_or("example must be a JSON object")?;
    if let Some(key) = obj.keys().find(|k| !EXAMPLE_KEYS.contains(&k.as_str())) {
        return Err(format!("example has an unknown member `{key}`"));
    }
    Ok(value)
}

fn parse_row(row: &data::Row) -> Result<Entry, DataError> {
    let [rule, route, via, trigger, example, expect] = row.cells[..] else {
        return Err(row.error(FILE, "wrong number of cells"));
    };
    let (method, template) = route
        .split_once(' ')
        .and_then(|(m, t)| Some((Method::from_bytes(m.as_bytes()).ok()?, t)))
        .filter(|(_, t)| t.starts_with('/'))
        .ok_or_else(|| row.error(FILE, format!("route `{route}` is not `METHOD /template`")))?;
    let via = match via {
        "inbound" => Via::Inbound,
        "outbound" => Via::Outbound,
        "homeserver" => Via::Homeserver,
        "pending" => Via::Pending,
        "none" => Via::None,
        other => return Err(row.error(FILE, format!("via `{other}` is unknown"))),
    };
    let rule = match rule {
        "-" => None,
        id => {
            let info = registry::find(id)
                .ok_or_else(|| row.error(FILE, format!("rule `{id}` is not in rules.tsv")))?;
            if info.kind == Kind::Request {
                return Err(row.error(FILE, format!("`{id}` is a request error, not a rule")));
            }
            Some(info.id)
        }
    };
    if (rule.is_none()) != (via == Via::None) {
        return Err(row.error(FILE, "rule `-` goes with via `none`, and only with it"));
    }
    let (example, expect) = match (example, expect) {
        ("-", "-") => (None, None),
        (example, expect) => {
            let example = parse_example(example).map_err(|e| row.error(FILE, e))?;
            let expect = parse_expect(expect).ok_or_else(|| {
                row.error(
                    FILE,
                    format!("expect `{expect}` is neither `4xx M_…` nor `rewrite /pointer value`"),
                )
            })?;
            (Some(example), Some(expect))
        }
    };
    if (via == Via::Inbound) != example.is_some() {
        return Err(row.error(
            FILE,
            "an example and expect go with via `inbound`, and only with it",
        ));
    }
    Ok(Entry {
        line: row.line,
        rule,
        method,
        template,
        via,
        trigger,
        example,
        expect,
    })
}

fn parse() -> Result<Vec<Entry>, DataError> {
    data::rows(FILE, TSV, &COLUMNS)?
        .iter()
        .map(parse_row)
        .collect()
}

static ENTRIES: LazyLock<Result<Vec<Entry>, DataError>> = LazyLock::new(parse);

/// Every row, or why the table cannot be read.
pub fn entries() -> Result<&'static [Entry], &'static DataError> {
    ENTRIES.as_deref()
}

static ALIASES: LazyLock<Vec<Alias>> =
    LazyLock::new(|| parse_aliases(ALIASES_TSV).unwrap_or_default());

/// The v1.11 template whose rows (and, in the listener, rules) a served template gets: an
/// alias spelling (`/_matrix/client/r0/…`, see `src/matrix/aliases.tsv`) shares those of its
/// canonical route. The endpoint table already classifies alias paths to the canonical
/// endpoint; this also covers an alias spelled out as an endpoint of its own.
pub fn canonical(template: &str) -> Cow<'_, str> {
    ALIASES
        .iter()
        .find_map(|a| {
            let rest = template.strip_prefix(a.alias.as_str())?;
            Some(Cow::Owned(format!("{}{rest}", a.canonical)))
        })
        .unwrap_or(Cow::Borrowed(template))
}

/// `template` and its alias spellings, as a client may send them.
pub fn spellings(template: &str) -> Vec<String> {
    let mut all = vec![template.to_owned()];
    all.extend(ALIASES.iter().filter_map(|a| {
        let rest = template.strip_prefix(a.canonical.as_str())?;
        Some(format!("{}{rest}", a.alias))
    }));
    all
}

/// The rows of one served route.
pub fn rows_for<'e>(
    entries: &'e [Entry],
    method: &Method,
    template: &str,
) -> impl Iterator<Item = &'e Entry> {
    let canonical = canonical(template).into_owned();
    let method = method.clone();
    entries
        .iter()
        .filter(move |e| e.method == method && e.template == canonical)
}

/// Served routes without a row: each needs one (the rules that reach it, or why none does).
pub fn uncovered(entries: &[Entry], served: &[crate::matrix::endpoints::Endpoint]) -> Vec<String> {
    served
        .iter()
        .filter(|e| rows_for(entries, &e.method, &e.template).next().is_none())
        .map(|e| format!("{} {}", e.method, e.template))
        .collect()
}

/// `RULES.md`, generated from the registry and this table (`timproxy generate`; a test keeps
/// the checked-in file current): every rule with its kind and the routes that reach it.
pub fn rules_markdown() -> Result<String, &'static DataError> {
    use std::fmt::Write as _;
    let rules = registry::rules()?;
    let entries = entries()?;
    let mut out = String::from(
        "# Rules and the routes that reach them\n\n\
         Generated from `src/policy/rules.tsv` and `src/policy/coverage.tsv` by \
         `cargo run -- generate`; do not edit. `policy.shadow` takes the ids marked \
         *shadowable*. How each route is proven: `inbound` rows are sent through the inbound \
         listener by `tests/it/coverage.rs` (enforced, and with every TIM rule shadowed).\n",
    );
    for (kind, title) in [
        (Kind::Tim, "TIM rules (shadowable)"),
        (Kind::Boundary, "Federation boundary (never shadowed)"),
    ] {
        let _ = write!(out, "\n## {title}\n");
        for rule in rules.iter().filter(|r| r.kind == kind) {
            let _ = write!(out, "\n### `{}`\n\n{}", rule.id, rule.effect);
            match rule.shadowed_with {
                Some(base) => {
                    let _ = writeln!(out, " (part of `{base}`: shadowed with it).");
                }
                None => out.push_str(".\n"),
            }
            let rows: Vec<&Entry> = entries.iter().filter(|e| e.rule == Some(rule.id)).collect();
            if rows.is_empty() {
                continue;
            }
            out.push_str("\n| route | via | trigger |\n|---|---|---|\n");
            for e in rows {
                let via = match e.via {
                    Via::Inbound => "inbound",
                    Via::Outbound => "outbound",
                    Via::Homeserver => "homeserver",
                    Via::Pending => "**pending**",
                    Via::None => "none",
                };
                let _ = writeln!(
                    out,
                    "| `{} {}` | {via} | {} |",
                    e.method,
                    e.template,
                    e.trigger.replace('|', "\\|")
                );
            }
        }
    }
    let _ = write!(
        out,
        "\n## Routes no rule reaches\n\n{} routes, each with the reason in `src/policy/coverage.tsv`.\n",
        entries.iter().filter(|e| e.via == Via::None).count()
    );
    let _ = write!(
        out,
        "\n## Request errors (not rules)\n\n{}\n",
        rules
            .iter()
            .filter(|r| r.kind == Kind::Request)
            .map(|r| format!("`{}`", r.id))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::endpoints::{Api, Endpoint, EndpointTable};

    /// What the inbound listener serves without operator configuration: the v1.11 table, the
    /// legacy endpoints served on purpose and the built-in single-sign-on pages.
    fn served() -> Vec<Endpoint> {
        let sso: Vec<String> = crate::inbound::sso::entries().map(str::to_owned).collect();
        EndpointTable::served(&sso).unwrap().endpoints().to_vec()
    }

    #[test]
    fn every_served_route_has_a_coverage_row() {
        let missing = uncovered(entries().unwrap(), &served());
        assert!(
            missing.is_empty(),
            "routes without a row in src/policy/coverage.tsv (list the rules that reach \
             them, or `-` with the reason none does): {missing:#?}"
        );
    }

    #[test]
    fn a_new_route_fails_the_table_and_an_r0_alias_shares_its_v3_rows() {
        let entries = entries().unwrap();
        let endpoint = |method: Method, template: &str| Endpoint {
            api: Api::Extra,
            method,
            template: template.to_owned(),
            deprecated: false,
            open: false,
            operation_id: String::new(),
        };
        let new = endpoint(Method::PUT, "/_matrix/client/v3/rooms/{roomId}/new_thing");
        assert_eq!(
            uncovered(entries, &[new]),
            ["PUT /_matrix/client/v3/rooms/{roomId}/new_thing"]
        );
        // An operator's explicit r0 spelling (an extra endpoint) is its v3 route.
        let alias = "/_matrix/client/r0/rooms/{roomId}/state/{eventType}/{stateKey}";
        assert!(uncovered(entries, &[endpoint(Method::PUT, alias)]).is_empty());
        assert!(
            spellings("/_matrix/client/v3/createRoom")
                .contains(&"/_matrix/client/r0/createRoom".to_owned())
        );
        let rules: Vec<_> = rows_for(entries, &Method::PUT, alias)
            .filter_map(|e| e.rule)
            .collect();
        assert!(
            rules.contains(&"A_25534") && rules.contains(&"A_28271"),
            "{rules:?}"
        );
    }

    #[test]
    fn every_row_names_a_served_route() {
        let served = served();
        let stray: Vec<String> = entries()
            .unwrap()
            .iter()
            .filter(|e| {
                !served
                    .iter()
                    .any(|s| s.method == e.method && s.template == e.template)
            })
            .map(|e| format!("line {}: {} {}", e.line, e.method, e.template))
            .collect();
        assert!(
            stray.is_empty(),
            "rows for routes nobody serves: {stray:#?}"
        );
    }

    /// Every TIM rule (and the boundary rules the inbound listener enforces on requests) is
    /// reached through at least one route; a rule without one is dead or undocumented.
    #[test]
    fn every_tim_rule_has_a_route() {
        let entries = entries().unwrap();
        let lonely: Vec<&str> = registry::rules()
            .unwrap()
            .iter()
            .filter(|r| r.kind == Kind::Tim && r.shadowed_with.is_none())
            .filter(|r| !entries.iter().any(|e| e.rule == Some(r.id)))
            .map(|r| r.id)
            .collect();
        assert!(lonely.is_empty(), "TIM rules without a route: {lonely:?}");
    }

    #[test]
    fn malformed_rows_name_their_line() {
        let row = |cells: Vec<&'static str>| data::Row { line: 7, cells };
        for (cells, message) in [
            (
                vec!["A_28271", "PUT x", "inbound", "t", "{}", "400 M_X"],
                "not `METHOD /template`",
            ),
            (
                vec!["A_0", "PUT /x", "inbound", "t", "{}", "400 M_X"],
                "not in rules.tsv",
            ),
            (
                vec!["body-parse", "PUT /x", "inbound", "t", "{}", "400 M_X"],
                "request error",
            ),
            (
                vec!["-", "PUT /x", "inbound", "t", "{}", "400 M_X"],
                "via `none`",
            ),
            (
                vec!["A_28271", "PUT /x", "inbound", "t", "-", "-"],
                "go with via `inbound`",
            ),
            (
                vec![
                    "A_28271",
                    "PUT /x",
                    "inbound",
                    "t",
                    "{\"who\":1}",
                    "400 M_X",
                ],
                "unknown member `who`",
            ),
            (
                vec!["A_28271", "PUT /x", "inbound", "t", "{}", "200 OK"],
                "expect `200 OK`",
            ),
        ] {
            let err = parse_row(&row(cells)).unwrap_err().to_string();
            assert!(
                err.starts_with("src/policy/coverage.tsv:7: ") && err.contains(message),
                "{err}"
            );
        }
    }
}
