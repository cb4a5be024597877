//! Permission configs (A_26021-01, A_26389, A_26390, A_25044): schema of the account-data
//! type plus what the schema cannot say — identifiers that can never match an inviter,
//! duplicate keys, exceptions that are redundant or do not do what they seem to, members
//! that the type ignores.
//!
//! Schema errors are exactly the cases in which the proxy refuses every invite to the user
//! (fail closed, `policy::permission_config` returns `InvalidConfig`); the shared vectors
//! `permission-config-cases.json` pin that: every `invalid_config` case has an error here and
//! every other case none. Unlike the proxy, this check reports *all* problems of a document.

use serde_json::{Map, Value};

use super::locate::{Locator, Pos};
use super::{Checker, Sink, read_document};
use crate::matrix::ids::{UserId, validate_server_name};
use crate::policy::permission_config::{
    ConfigKind, DefaultSetting, TYPE_EPA, TYPE_LEGACY, TYPE_PRO,
};

/// Members of permission-config content that identify the kind.
pub const PERMISSION_MEMBERS: [&str; 5] = [
    "defaultSetting",
    "serverExceptions",
    "userExceptions",
    "groupExceptions",
    "domainExceptions",
];

const TYPE_PREFIX: &str = "de.gematik.tim.account.permissionconfig";
/// The only group `groupExceptions` knows.
const INSURED_GROUP: &str = "isInsuredPerson";

const SCHEMA: &str = "permission-config";
const ID: &str = "permission-config-id";
const REDUNDANT: &str = "permission-config-redundant";
const IGNORED: &str = "permission-config-ignored";

/// A whole account-data event `{"type": "de.gematik.tim.account.permissionconfig…", "content": …}`.
pub fn is_event(value: &Value) -> bool {
    value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| t.starts_with(TYPE_PREFIX))
        && value.get("content").is_some()
}

fn type_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::Pro => "pro.v1",
        ConfigKind::Epa => "epa.v1",
        ConfigKind::Legacy => "legacy v1",
    }
}

/// Check a permission-config document (content or event).
pub fn check_document(checker: &Checker, text: &str, sink: &mut Sink<'_>) {
    let Some((value, loc)) = read_document(text, sink) else {
        return;
    };
    if is_event(&value) {
        let event_type = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(kind) = ConfigKind::from_type(event_type) else {
            sink.error(
                loc.locate(&["type"]),
                SCHEMA,
                format!("unknown permission-config type `{event_type}`; expected {TYPE_PRO}, {TYPE_EPA} or {TYPE_LEGACY}"),
            );
            return;
        };
        check_content(kind, &value["content"], &["content"], &loc, sink);
    } else {
        let kind = checker
            .options()
            .permission_type
            .unwrap_or_else(|| infer_kind(&value));
        check_content(kind, &value, &[], &loc, sink);
    }
}

/// Bare content names no type: legacy when it uses the legacy server map only, else Pro.
fn infer_kind(content: &Value) -> ConfigKind {
    if content.get("domainExceptions").is_some() && content.get("serverExceptions").is_none() {
        ConfigKind::Legacy
    } else {
        ConfigKind::Pro
    }
}

struct Ctx<'a, 'b, 's> {
    base: &'a [&'a str],
    loc: &'a Locator<'b>,
    sink: &'a mut Sink<'s>,
}

impl Ctx<'_, '_, '_> {
    fn at(&self, keys: &[&str]) -> Option<Pos> {
        let mut path: Vec<&str> = self.base.to_vec();
        path.extend_from_slice(keys);
        self.loc
            .locate(&path)
            .or_else(|| self.loc.locate(self.base))
    }

    /// Position of a value inside the member `key` (first occurrence after the key).
    fn value_at(&self, key: &str, value: &str) -> Option<Pos> {
        let mut path: Vec<&str> = self.base.to_vec();
        path.push(key);
        let from = self.loc.find_path(&path).unwrap_or(0);
        self.loc
            .find_value(value, from)
            .map(|o| self.loc.pos(o))
            .or_else(|| self.at(&[key]))
    }
}

/// Check content against the schema of `kind`; `base` is the key path of the content in the
/// document (empty, or `["content"]` for an event).
pub fn check_content(
    kind: ConfigKind,
    content: &Value,
    base: &[&str],
    loc: &Locator<'_>,
    sink: &mut Sink<'_>,
) {
    let mut cx = Ctx { base, loc, sink };
    let Some(obj) = content.as_object() else {
        let pos = cx.at(&[]);
        cx.sink.error(
            pos,
            SCHEMA,
            format!(
                "permission config content must be a JSON object, got {}",
                json_type(content)
            ),
        );
        return;
    };
    let default = check_default(&mut cx, obj);
    let server_key = match kind {
        ConfigKind::Pro | ConfigKind::Epa => "serverExceptions",
        ConfigKind::Legacy => "domainExceptions",
    };
    let servers = check_server_map(&mut cx, obj, server_key);
    let users = check_user_map(&mut cx, obj);
    match (kind, obj.get("groupExceptions")) {
        (ConfigKind::Pro, Some(groups)) => check_groups(&mut cx, groups),
        (_, Some(_)) => {
            let pos = cx.at(&["groupExceptions"]);
            cx.sink.warning(
                pos,
                IGNORED,
                format!(
                    "`groupExceptions` exists only in pro.v1 and is ignored in {}",
                    type_name(kind)
                ),
            );
        }
        _ => {}
    }
    for (key, _) in obj {
        let known = matches!(
            key.as_str(),
            "defaultSetting" | "userExceptions" | "groupExceptions"
        ) || key == server_key;
        if known {
            continue;
        }
        let pos = cx.at(&[key]);
        let message = match (key.as_str(), kind) {
            ("domainExceptions", _) => format!("`domainExceptions` is the legacy (permissionconfig.v1) name and is ignored in {}; use `serverExceptions`", type_name(kind)),
            ("serverExceptions", _) => "`serverExceptions` is ignored in the legacy type (permissionconfig.v1), which uses `domainExceptions`".to_owned(),
            _ => format!("unknown member `{key}` is ignored"),
        };
        cx.sink.warning(pos, IGNORED, message);
    }
    if let (Some(default), Some(servers)) = (default, servers) {
        for user in &users {
            if servers.iter().any(|s| s == user.server_name()) {
                let pos = cx.at(&["userExceptions", user.as_str()]);
                let message = match default {
                    DefaultSetting::AllowAll => format!(
                        "`{user}` has no effect: its server `{}` is already in {server_key}; under \"allow all\" every exception blocks, and a user exception cannot re-allow a user of a blocked server",
                        user.server_name()
                    ),
                    DefaultSetting::BlockAll => format!(
                        "`{user}` is redundant: its server `{}` in {server_key} already allows every user of that server",
                        user.server_name()
                    ),
                };
                cx.sink.warning(pos, REDUNDANT, message);
            }
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_default(cx: &mut Ctx<'_, '_, '_>, obj: &Map<String, Value>) -> Option<DefaultSetting> {
    let pos = cx.at(&["defaultSetting"]);
    match obj.get("defaultSetting") {
        None => {
            cx.sink.error(
                pos,
                SCHEMA,
                "missing required `defaultSetting` (\"allow all\" or \"block all\")",
            );
            None
        }
        Some(Value::String(s)) => {
            let parsed = DefaultSetting::parse(s);
            if parsed.is_none() {
                let normalised = s.to_lowercase().replace(['_', '-'], " ");
                let hint = if DefaultSetting::parse(normalised.trim()).is_some() {
                    format!(" (did you mean \"{}\"?)", normalised.trim())
                } else {
                    String::new()
                };
                cx.sink.error(
                    pos,
                    SCHEMA,
                    format!("`defaultSetting` must be exactly \"allow all\" or \"block all\", got \"{s}\"{hint}"),
                );
            }
            parsed
        }
        Some(other) => {
            cx.sink.error(
                pos,
                SCHEMA,
                format!(
                    "`defaultSetting` must be a string, got {}",
                    json_type(other)
                ),
            );
            None
        }
    }
}

/// Returns the server names when the map is valid (for the redundancy check).
fn check_server_map(
    cx: &mut Ctx<'_, '_, '_>,
    obj: &Map<String, Value>,
    key: &str,
) -> Option<Vec<String>> {
    let value = obj.get(key)?;
    let Some(map) = value.as_object() else {
        let pos = cx.at(&[key]);
        cx.sink.error(
            pos,
            SCHEMA,
            format!(
                "`{key}` must be an object mapping server names to {{}}, got {}",
                json_type(value)
            ),
        );
        return None;
    };
    let mut valid = true;
    for (server, v) in map {
        let pos = cx.at(&[key, server]);
        if !v.is_object() {
            valid = false;
            cx.sink.error(
                pos,
                SCHEMA,
                format!(
                    "`{key}` entry `{server}` must map to an object ({{}}), got {}",
                    json_type(v)
                ),
            );
        }
        if validate_server_name(server).is_err() {
            let hint = if server.starts_with('@') {
                "; it looks like a user ID, which belongs in `userExceptions`"
            } else if server.contains('*') {
                "; wildcards are not supported (names are compared exactly)"
            } else {
                ""
            };
            cx.sink.error(pos, ID, format!("`{server}` is not a valid server name (hostname[:port]) and can never match an inviter{hint}"));
        } else if server.chars().any(|c| c.is_ascii_uppercase()) {
            cx.sink.warning(
                pos,
                ID,
                format!("`{server}` has upper-case letters: server names are compared case-sensitively, so it does not match `{}`", server.to_ascii_lowercase()),
            );
        }
    }
    valid.then(|| map.keys().cloned().collect())
}

fn check_user_map(cx: &mut Ctx<'_, '_, '_>, obj: &Map<String, Value>) -> Vec<UserId> {
    let mut users = Vec::new();
    let Some(value) = obj.get("userExceptions") else {
        return users;
    };
    let Some(map) = value.as_object() else {
        let pos = cx.at(&["userExceptions"]);
        cx.sink.error(
            pos,
            SCHEMA,
            format!(
                "`userExceptions` must be an object mapping user IDs to {{}}, got {}",
                json_type(value)
            ),
        );
        return users;
    };
    let mut lowered: Vec<String> = Vec::new();
    for (user, v) in map {
        let pos = cx.at(&["userExceptions", user]);
        if !v.is_object() {
            cx.sink.error(
                pos,
                SCHEMA,
                format!(
                    "`userExceptions` entry `{user}` must map to an object ({{}}), got {}",
                    json_type(v)
                ),
            );
        }
        if !user.starts_with('@') {
            cx.sink.error(
                pos,
                SCHEMA,
                format!("`userExceptions` key `{user}` must be a user ID starting with `@`"),
            );
            continue;
        }
        match UserId::parse(user) {
            Err(e) => cx.sink.error(
                pos,
                ID,
                format!("`{user}` is not a valid user ID ({e}) and can never match an inviter"),
            ),
            Ok(id) => {
                let lower = user.to_lowercase();
                if lowered.contains(&lower) {
                    cx.sink.warning(pos, ID, format!("`{user}` differs from another entry only in case; user IDs are compared exactly"));
                } else if user.chars().any(|c| c.is_uppercase()) {
                    cx.sink.warning(pos, ID, format!("`{user}` has upper-case letters: user IDs are compared exactly, so it does not match `{lower}`"));
                }
                lowered.push(lower);
                users.push(id);
            }
        }
    }
    users
}

fn check_groups(cx: &mut Ctx<'_, '_, '_>, groups: &Value) {
    let Some(items) = groups.as_array() else {
        let pos = cx.at(&["groupExceptions"]);
        cx.sink.error(
            pos,
            SCHEMA,
            format!("`groupExceptions` must be an array of {{\"groupName\": \"{INSURED_GROUP}\"}}, got {}", json_type(groups)),
        );
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let name = item.get("groupName");
        let pos = match name.and_then(Value::as_str).or(item.as_str()) {
            Some(n) => cx.value_at("groupExceptions", n),
            None => cx.at(&["groupExceptions"]),
        };
        if items[..i].contains(item) {
            cx.sink.error(
                pos,
                SCHEMA,
                format!(
                    "`groupExceptions` item {i} repeats an earlier item (items must be unique)"
                ),
            );
            continue;
        }
        match (item, name) {
            (Value::String(s), _) => cx.sink.error(
                pos,
                SCHEMA,
                format!("`groupExceptions` items are objects: write {{\"groupName\": \"{s}\"}} instead of \"{s}\""),
            ),
            (Value::Object(_), Some(Value::String(n))) if n == INSURED_GROUP => {}
            (Value::Object(_), Some(Value::String(n))) => cx.sink.error(
                pos,
                SCHEMA,
                format!("unknown group `{n}` in `groupExceptions`; the only group is `{INSURED_GROUP}`"),
            ),
            (Value::Object(_), Some(other)) => {
                cx.sink.error(pos, SCHEMA, format!("`groupName` must be a string, got {}", json_type(other)))
            }
            (Value::Object(_), None) => cx.sink.error(pos, SCHEMA, "`groupExceptions` item without `groupName`"),
            (other, _) => cx.sink.error(
                pos,
                SCHEMA,
                format!("`groupExceptions` item {i} must be an object {{\"groupName\": …}}, got {}", json_type(other)),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec_check::{Options, Severity};

    fn check(text: &str) -> Vec<(Severity, String, String)> {
        let checker = Checker::new(Options::default()).unwrap();
        let mut sink = Sink::new("t");
        check_document(&checker, text, &mut sink);
        sink.into_diagnostics()
            .into_iter()
            .map(|d| {
                (
                    d.severity,
                    d.rule,
                    format!("{}:{}", d.line.unwrap_or(0), d.column.unwrap_or(0)),
                )
            })
            .collect()
    }

    #[test]
    fn every_problem_is_reported_with_its_position() {
        let text = "{\n  \"defaultSetting\": \"Allow All\",\n  \"serverExceptions\": {\"*.example.org\": {}, \"hs1.test\": true},\n  \"userExceptions\": {\"alice:hs1\": {}, \"@bob\": {}},\n  \"groupExceptions\": [\"isInsuredPerson\"]\n}";
        let d = check(text);
        let errors: Vec<_> = d.iter().filter(|x| x.0 == Severity::Error).collect();
        assert_eq!(errors.len(), 6, "{d:#?}");
        assert_eq!(errors[0].2, "2:3");
        assert!(errors.iter().any(|e| e.1 == ID && e.2 == "3:24"), "{d:#?}");
        assert!(errors.iter().any(|e| e.2 == "5:23"), "{d:#?}");
    }

    #[test]
    fn redundant_user_exception_and_ignored_members_warn() {
        let d = check(
            r#"{"defaultSetting":"allow all","serverExceptions":{"hs1.test":{}},"userExceptions":{"@a:hs1.test":{}},"domainExceptions":{},"note":1}"#,
        );
        let rules: Vec<&str> = d.iter().map(|x| x.1.as_str()).collect();
        assert_eq!(rules, vec![IGNORED, IGNORED, REDUNDANT], "{d:#?}");
        assert!(d.iter().all(|x| x.0 == Severity::Warning));
    }

    #[test]
    fn duplicate_keys_and_events_of_unknown_type_are_errors() {
        let d = check(
            r#"{"defaultSetting":"allow all","userExceptions":{"@a:h.test":{},"@a:h.test":{}}}"#,
        );
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].0, d[0].1.as_str()),
            (Severity::Error, "duplicate-key")
        );
        let d = check(r#"{"type":"de.gematik.tim.account.permissionconfig.foo.v1","content":{}}"#);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1, SCHEMA);
    }

    #[test]
    fn legacy_content_is_inferred_from_domain_exceptions() {
        assert_eq!(
            infer_kind(&serde_json::json!({"domainExceptions":{}})),
            ConfigKind::Legacy
        );
        assert_eq!(
            infer_kind(&serde_json::json!({"defaultSetting":"allow all"})),
            ConfigKind::Pro
        );
        assert!(
            check(r#"{"defaultSetting":"block all","domainExceptions":{"hs1.test":{}}}"#)
                .is_empty()
        );
    }
}
