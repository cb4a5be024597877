//! Federation lists: the registration service's JSON (`{"version", "domainList": [...]}`) or a
//! VZD compact JWS. For a JWS only the header's algorithm and the payload are checked here;
//! the signature and x5c chain are verified by `fetch-federation` against the configured trust
//! anchors, which spec-check does not have — it says so in a warning instead of pretending.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use super::locate::{Locator, Pos};
use super::{Sink, read_document};
use crate::matrix::ids::validate_server_name;

const RULE: &str = "federation-list";

/// Three base64url parts separated by dots, and the first decodes to a JSON object.
pub fn looks_like_jws(text: &str) -> bool {
    let t = text.trim();
    let parts: Vec<&str> = t.split('.').collect();
    parts.len() == 3
        && parts[..2].iter().all(|p| !p.is_empty())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && decode_json(parts[0]).is_some_and(|v| v.is_object())
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(part.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn check(text: &str, sink: &mut Sink<'_>) {
    if looks_like_jws(text) {
        check_jws(text.trim(), sink);
        return;
    }
    let Some((value, loc)) = read_document(text, sink) else {
        return;
    };
    check_list(&value, Some(&loc), "", sink);
}

fn check_jws(text: &str, sink: &mut Sink<'_>) {
    let parts: Vec<&str> = text.split('.').collect();
    let Some(header) = parts.first().and_then(|p| decode_json(p)) else {
        sink.error(None, RULE, "JWS header is not base64url-encoded JSON");
        return;
    };
    match header.get("alg").and_then(Value::as_str) {
        Some("BP256R1" | "ES256") => {}
        Some(alg) => sink.error(None, RULE, format!("JWS alg `{alg}` is not accepted (BP256R1, or ES256 when federation.allow_es256 is set)")),
        None => sink.error(None, RULE, "JWS header has no `alg`"),
    }
    if header
        .get("x5c")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        sink.error(None, RULE, "JWS header has no `x5c` certificate chain");
    }
    match parts.get(1).and_then(|p| decode_json(p)) {
        Some(payload) => check_list(&payload, None, "JWS payload: ", sink),
        None => sink.error(None, RULE, "JWS payload is not base64url-encoded JSON"),
    }
    sink.warning(
        None,
        "jws-signature",
        "the JWS signature and x5c chain are not checked by spec-check; `timproxy fetch-federation` verifies them against federation.trust_anchors",
    );
}

/// `loc`: positions in the file (absent for a JWS payload); `prefix` starts every message.
fn check_list(value: &Value, loc: Option<&Locator<'_>>, prefix: &str, sink: &mut Sink<'_>) {
    let at = |keys: &[&str]| loc.and_then(|l| l.locate(keys));
    let Some(obj) = value.as_object() else {
        sink.error(
            None,
            RULE,
            format!("{prefix}a federation list must be a JSON object"),
        );
        return;
    };
    match obj.get("version") {
        None => sink.error(None, RULE, format!("{prefix}missing required `version`")),
        Some(v) if v.as_i64().is_some_and(|n| n >= 0) => {}
        Some(v) => sink.error(
            at(&["version"]),
            RULE,
            format!("{prefix}`version` must be a non-negative integer, got {v}"),
        ),
    }
    let Some(list) = obj.get("domainList") else {
        sink.error(None, RULE, format!("{prefix}missing required `domainList`"));
        return;
    };
    let list_pos = at(&["domainList"]);
    let Some(entries) = list.as_array() else {
        sink.error(
            list_pos,
            RULE,
            format!("{prefix}`domainList` must be an array"),
        );
        return;
    };
    if entries.is_empty() {
        sink.warning(
            list_pos,
            RULE,
            format!("{prefix}`domainList` is empty: every federation check will fail"),
        );
    }
    // Entries are located in order: each domain is searched after the previous entry's, so a
    // domain listed twice is reported at its second occurrence.
    let mut cursor = loc.and_then(|l| l.find_path(&["domainList"])).unwrap_or(0);
    let mut value_pos = |needle: &str| -> Option<Pos> {
        let l = loc?;
        let found = l.find_value(needle, cursor)?;
        cursor = found + needle.len();
        Some(l.pos(found))
    };
    let mut seen: Vec<&str> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(entry) = entry.as_object() else {
            sink.error(
                list_pos,
                RULE,
                format!("{prefix}domainList[{i}] must be an object"),
            );
            continue;
        };
        let Some(domain) = entry.get("domain").and_then(Value::as_str) else {
            sink.error(
                list_pos,
                RULE,
                format!("{prefix}domainList[{i}] has no `domain` string"),
            );
            continue;
        };
        let pos = value_pos(domain).or(list_pos);
        if validate_server_name(domain).is_err() {
            sink.error(pos, RULE, format!("{prefix}domainList[{i}]: `{domain}` is not a valid server name (hostname[:port])"));
        } else if domain.chars().any(|c| c.is_ascii_uppercase()) {
            sink.warning(pos, RULE, format!("{prefix}domainList[{i}]: `{domain}` has upper-case letters; server names are compared case-sensitively"));
        }
        if seen.contains(&domain) {
            sink.error(
                pos,
                RULE,
                format!("{prefix}domainList[{i}]: `{domain}` is listed more than once"),
            );
        }
        seen.push(domain);
        match entry.get("isInsurance") {
            Some(Value::Bool(_)) => {}
            None => sink.error(pos, RULE, format!("{prefix}domainList[{i}] (`{domain}`) has no `isInsurance`")),
            Some(other) => sink.error(pos, RULE, format!("{prefix}domainList[{i}] (`{domain}`): `isInsurance` must be a boolean, got {other}")),
        }
        if !entry.contains_key("telematikID") {
            sink.warning(
                pos,
                RULE,
                format!("{prefix}domainList[{i}] (`{domain}`) has no `telematikID`"),
            );
        }
        for key in ["ik", "iks"] {
            match entry.get(key) {
                None | Some(Value::Null) => {}
                Some(Value::Array(iks)) => {
                    for ik in iks {
                        let ok = ik
                            .as_str()
                            .is_some_and(|s| s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit()));
                        if !ok {
                            sink.warning(pos, RULE, format!("{prefix}domainList[{i}] (`{domain}`): IK number {ik} is not 9 digits"));
                        }
                    }
                }
                Some(_) => sink.error(
                    pos,
                    RULE,
                    format!(
                        "{prefix}domainList[{i}] (`{domain}`): `{key}` must be an array of strings"
                    ),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Vec<String> {
        Sink::findings("f", |sink| check(text, sink))
    }

    #[test]
    fn registration_service_list_checks() {
        let good = r#"{"version":3,"domainList":[{"domain":"a.test","isInsurance":false,"telematikID":"1"}]}"#;
        assert!(run(good).is_empty());
        let bad = "{\n\"version\": \"3\",\n\"domainList\": [\n {\"domain\": \"a.test\", \"isInsurance\": false, \"telematikID\": \"1\"},\n {\"domain\": \"a.test\", \"isInsurance\": \"no\", \"telematikID\": \"2\"},\n {\"domain\": \"bad name\", \"isInsurance\": true}\n]}";
        let d = run(bad);
        assert_eq!(d.len(), 5, "{d:#?}");
        assert!(d[0].starts_with("f:2:1: error: `version`"), "{d:?}");
        assert!(d[1].contains("listed more than once"), "{d:?}");
        assert!(d[2].contains("`isInsurance` must be a boolean"), "{d:?}");
        assert!(
            d[3].starts_with("f:6:13: error:") && d[3].contains("not a valid server name"),
            "{d:?}"
        );
        assert!(d[4].contains("no `telematikID`"), "{d:?}");
    }

    #[test]
    fn jws_payload_is_checked_and_the_signature_is_not() {
        let enc = |v: &str| URL_SAFE_NO_PAD.encode(v);
        let jws = format!(
            "{}.{}.{}",
            enc(r#"{"alg":"none"}"#),
            enc(r#"{"version":1,"domainList":[{"domain":"x.test","isInsurance":false}]}"#),
            enc("sig")
        );
        assert!(looks_like_jws(&jws));
        let d = run(&jws);
        assert_eq!(d.len(), 4, "{d:#?}");
        assert!(d[0].contains("alg `none`"));
        assert!(d[1].contains("x5c"));
        assert!(d[2].starts_with("f: warning: JWS payload: domainList[0]"));
        assert!(d[3].ends_with("[jws-signature]"));
        assert!(!looks_like_jws("a.b.c"));
    }
}
