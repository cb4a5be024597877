//! The clients' `useragent` request header (TIM-PROXY digest §9): a JSON object whose keys
//! fill the report fields `UA-A`, `UA-P`, `UA-OS`, `UA-OS-VERSION`, `UA-PTV`, `UA-PV` and
//! `UA-cid`.
//!
//! The reference parses it strictly (all eight keys present, no others, `Auspraegung` and
//! `Plattform` from fixed sets) and loses the whole report when a client gets it wrong. Here a
//! bad header only costs the fields it got wrong: each falls back to `"n/a"`, and every
//! [`Malformation`] is counted by the caller (`timproxy_useragent_invalid_total{reason}`), so an
//! operator sees which clients send what, while the report itself is never lost.
//!
//! A missing key, `null` or an empty string is no malformation: the field is simply not
//! available. Unknown keys (such as `Matrix-Domain`, which no report field takes) are ignored.

use serde_json::{Map, Value};

use super::NOT_AVAILABLE;

/// Request header carrying the client description (not `User-Agent`).
pub const HEADER: &str = "useragent";
/// Longest header accepted. The eight keys with realistic values take about 250 bytes; a
/// header far beyond that is not a client description and is not parsed at all.
pub const MAX_HEADER_BYTES: usize = 2048;
/// Longest value accepted for one field (characters); a longer one is reported as `"n/a"`.
pub const MAX_FIELD_CHARS: usize = 128;

/// `Auspraegung` values the spec defines (`UA-A`).
pub const AUSPRAEGUNGEN: &[&str] = &["Org-Admin-Client", "Messenger-Client"];
/// `Plattform` values the spec defines (`UA-P`).
pub const PLATTFORMEN: &[&str] = &["mobil", "stationaer", "web"];

/// What was wrong with a `useragent` header; the `reason` label of the warning counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformation {
    /// Longer than [`MAX_HEADER_BYTES`]: not parsed.
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not JSON.
    NotJson,
    /// JSON, but not an object.
    NotObject,
    /// A known key with a value that is neither a string nor `null`.
    WrongType,
    /// A string value longer than [`MAX_FIELD_CHARS`].
    FieldTooLong,
    /// `Auspraegung` or `Plattform` outside the values the spec defines.
    UnknownValue,
}

impl Malformation {
    /// The metric label value.
    pub fn reason(self) -> &'static str {
        match self {
            Malformation::TooLong => "too_long",
            Malformation::NotUtf8 => "not_utf8",
            Malformation::NotJson => "not_json",
            Malformation::NotObject => "not_object",
            Malformation::WrongType => "wrong_type",
            Malformation::FieldTooLong => "field_too_long",
            Malformation::UnknownValue => "unknown_value",
        }
    }
}

/// The user-agent parts of a report; `"n/a"` for what the client did not (validly) say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent {
    /// `Auspraegung` → `UA-A`.
    pub auspraegung: String,
    /// `Plattform` → `UA-P`.
    pub plattform: String,
    /// `OS` → `UA-OS`.
    pub os: String,
    /// `OS-Version` → `UA-OS-VERSION`.
    pub os_version: String,
    /// `Produkttypversion` → `UA-PTV`.
    pub produkttypversion: String,
    /// `Produktversion` → `UA-PV`.
    pub produktversion: String,
    /// `client_id` → `UA-cid` (the reference never fills it).
    pub client_id: String,
}

impl Default for UserAgent {
    fn default() -> Self {
        let na = || NOT_AVAILABLE.to_owned();
        Self {
            auspraegung: na(),
            plattform: na(),
            os: na(),
            os_version: na(),
            produkttypversion: na(),
            produktversion: na(),
            client_id: na(),
        }
    }
}

/// The result of reading a header: the fields, and what was wrong with it (empty for a
/// well-formed or absent header; at most one entry per kind).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    pub agent: UserAgent,
    pub malformations: Vec<Malformation>,
}

impl Parsed {
    fn only(malformation: Malformation) -> Self {
        Parsed {
            agent: UserAgent::default(),
            malformations: vec![malformation],
        }
    }

    fn note(&mut self, malformation: Malformation) {
        if !self.malformations.contains(&malformation) {
            self.malformations.push(malformation);
        }
    }
}

impl UserAgent {
    /// Read the raw header value (`None`: no header). Never fails: see the module comment.
    pub fn parse(header: Option<&[u8]>) -> Parsed {
        let Some(raw) = header else {
            return Parsed::default();
        };
        if raw.len() > MAX_HEADER_BYTES {
            return Parsed::only(Malformation::TooLong);
        }
        let Ok(text) = std::str::from_utf8(raw) else {
            return Parsed::only(Malformation::NotUtf8);
        };
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Parsed::only(Malformation::NotObject),
            Err(_) => return Parsed::only(Malformation::NotJson),
        };
        let mut parsed = Parsed::default();
        let agent = UserAgent {
            auspraegung: field(&object, "Auspraegung", Some(AUSPRAEGUNGEN), &mut parsed),
            plattform: field(&object, "Plattform", Some(PLATTFORMEN), &mut parsed),
            os: field(&object, "OS", None, &mut parsed),
            os_version: field(&object, "OS-Version", None, &mut parsed),
            produkttypversion: field(&object, "Produkttypversion", None, &mut parsed),
            produktversion: field(&object, "Produktversion", None, &mut parsed),
            client_id: field(&object, "client_id", None, &mut parsed),
        };
        parsed.agent = agent;
        parsed
    }
}

/// One field: the trimmed string, or `"n/a"` (noting why when the client got it wrong).
fn field(
    object: &Map<String, Value>,
    key: &str,
    allowed: Option<&[&str]>,
    parsed: &mut Parsed,
) -> String {
    let value = match object.get(key) {
        None | Some(Value::Null) => return NOT_AVAILABLE.to_owned(),
        Some(Value::String(value)) => value.trim(),
        Some(_) => {
            parsed.note(Malformation::WrongType);
            return NOT_AVAILABLE.to_owned();
        }
    };
    if value.is_empty() {
        return NOT_AVAILABLE.to_owned();
    }
    if value.chars().count() > MAX_FIELD_CHARS {
        parsed.note(Malformation::FieldTooLong);
        return NOT_AVAILABLE.to_owned();
    }
    if allowed.is_some_and(|allowed| !allowed.contains(&value)) {
        parsed.note(Malformation::UnknownValue);
        return NOT_AVAILABLE.to_owned();
    }
    value.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{"Auspraegung":"Messenger-Client","Plattform":"mobil","OS":"Android","OS-Version":"14","Produkttypversion":"1.1","Produktversion":"2.0.0","client_id":"cid-1","Matrix-Domain":"home.de"}"#;

    fn parse(header: &str) -> Parsed {
        UserAgent::parse(Some(header.as_bytes()))
    }

    #[test]
    fn every_field_comes_from_its_key() {
        let parsed = parse(FULL);
        assert_eq!(parsed.malformations, []);
        let ua = parsed.agent;
        assert_eq!(ua.auspraegung, "Messenger-Client");
        assert_eq!(ua.plattform, "mobil");
        assert_eq!(ua.os, "Android");
        assert_eq!(ua.os_version, "14");
        assert_eq!(ua.produkttypversion, "1.1");
        assert_eq!(ua.produktversion, "2.0.0");
        assert_eq!(ua.client_id, "cid-1");
    }

    #[test]
    fn every_defined_auspraegung_and_plattform_is_kept() {
        for a in AUSPRAEGUNGEN {
            for p in PLATTFORMEN {
                let parsed = parse(&format!(r#"{{"Auspraegung":"{a}","Plattform":"{p}"}}"#));
                assert_eq!(parsed.malformations, []);
                assert_eq!(parsed.agent.auspraegung, *a);
                assert_eq!(parsed.agent.plattform, *p);
            }
        }
    }

    #[test]
    fn absent_header_gives_defaults_without_a_warning() {
        assert_eq!(UserAgent::parse(None), Parsed::default());
        assert_eq!(UserAgent::parse(None).agent.os, NOT_AVAILABLE);
    }

    #[test]
    fn missing_null_and_empty_values_are_not_available_without_a_warning() {
        let parsed = parse(r#"{"OS":null,"OS-Version":"  ","Produktversion":"","client_id":"c"}"#);
        assert_eq!(parsed.malformations, []);
        assert_eq!(
            parsed.agent,
            UserAgent {
                client_id: "c".to_owned(),
                ..UserAgent::default()
            }
        );
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let parsed = parse(r#"{"OS":"iOS","Extra":{"x":[1]},"Matrix-Domain":7}"#);
        assert_eq!(parsed.malformations, []);
        assert_eq!(parsed.agent.os, "iOS");
    }

    #[test]
    fn values_are_trimmed() {
        assert_eq!(parse(r#"{"OS":"  Linux \t"}"#).agent.os, "Linux");
    }

    #[test]
    fn not_json_gives_defaults_and_a_warning() {
        for header in ["Mozilla/5.0", "{\"OS\":", "", "{'OS':'x'}"] {
            assert_eq!(
                parse(header),
                Parsed::only(Malformation::NotJson),
                "{header:?}"
            );
        }
    }

    #[test]
    fn json_other_than_an_object_gives_defaults_and_a_warning() {
        for header in ["[1,2]", "\"Messenger-Client\"", "42", "null", "true"] {
            assert_eq!(
                parse(header),
                Parsed::only(Malformation::NotObject),
                "{header:?}"
            );
        }
    }

    #[test]
    fn non_utf8_gives_defaults_and_a_warning() {
        let raw = b"{\"OS\":\"Linux\xff\"}";
        assert_eq!(
            UserAgent::parse(Some(raw)),
            Parsed::only(Malformation::NotUtf8)
        );
    }

    #[test]
    fn an_over_long_header_is_not_parsed() {
        let padding = "x".repeat(MAX_HEADER_BYTES);
        let header = format!(r#"{{"OS":"Linux","pad":"{padding}"}}"#);
        assert_eq!(parse(&header), Parsed::only(Malformation::TooLong));
        // Exactly at the limit it is still read.
        let fill = MAX_HEADER_BYTES - r#"{"OS":"Linux","pad":""}"#.len();
        let header = format!(r#"{{"OS":"Linux","pad":"{}"}}"#, "x".repeat(fill));
        assert_eq!(header.len(), MAX_HEADER_BYTES);
        assert_eq!(parse(&header).agent.os, "Linux");
    }

    #[test]
    fn wrong_types_cost_only_their_field() {
        let parsed = parse(
            r#"{"Auspraegung":"Org-Admin-Client","OS":["Linux"],"OS-Version":14,"Produktversion":{"v":1},"client_id":true}"#,
        );
        assert_eq!(parsed.malformations, [Malformation::WrongType]);
        assert_eq!(
            parsed.agent,
            UserAgent {
                auspraegung: "Org-Admin-Client".to_owned(),
                ..UserAgent::default()
            }
        );
    }

    #[test]
    fn an_over_long_field_costs_only_that_field() {
        let long = "v".repeat(MAX_FIELD_CHARS + 1);
        let parsed = parse(&format!(r#"{{"OS":"Linux","Produktversion":"{long}"}}"#));
        assert_eq!(parsed.malformations, [Malformation::FieldTooLong]);
        assert_eq!(parsed.agent.os, "Linux");
        assert_eq!(parsed.agent.produktversion, NOT_AVAILABLE);
        // Characters, not bytes: 128 umlauts are fine.
        let umlauts = "ä".repeat(MAX_FIELD_CHARS);
        let parsed = parse(&format!(r#"{{"OS":"{umlauts}"}}"#));
        assert_eq!(parsed.malformations, []);
        assert_eq!(parsed.agent.os, umlauts);
    }

    #[test]
    fn undefined_auspraegung_or_plattform_is_not_available_with_a_warning() {
        let parsed = parse(r#"{"Auspraegung":"Browser","Plattform":"Mobil","OS":"iOS"}"#);
        assert_eq!(parsed.malformations, [Malformation::UnknownValue]);
        assert_eq!(parsed.agent.auspraegung, NOT_AVAILABLE);
        assert_eq!(parsed.agent.plattform, NOT_AVAILABLE);
        assert_eq!(parsed.agent.os, "iOS");
    }

    #[test]
    fn several_problems_are_each_noted_once() {
        let long = "v".repeat(MAX_FIELD_CHARS + 1);
        let parsed = parse(&format!(
            r#"{{"Auspraegung":1,"Plattform":"tv","OS":2,"client_id":"{long}"}}"#
        ));
        assert_eq!(
            parsed.malformations,
            [
                Malformation::WrongType,
                Malformation::UnknownValue,
                Malformation::FieldTooLong
            ]
        );
        assert_eq!(parsed.agent, UserAgent::default());
    }

    #[test]
    fn reasons_are_distinct_metric_labels() {
        let all = [
            Malformation::TooLong,
            Malformation::NotUtf8,
            Malformation::NotJson,
            Malformation::NotObject,
            Malformation::WrongType,
            Malformation::FieldTooLong,
            Malformation::UnknownValue,
        ];
        let reasons: std::collections::HashSet<_> = all.iter().map(|m| m.reason()).collect();
        assert_eq!(reasons.len(), all.len());
        assert!(reasons.iter().all(|r| {
            r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }));
    }
}
