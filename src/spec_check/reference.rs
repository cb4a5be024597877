//! A reference Messenger Proxy configuration (`application.yml`, hoplite YAML with
//! `${ENV}` / `${ENV:-default}` substitutions) translated to the equivalent `timproxy.yaml`.
//!
//! The mapping is data (`reference_keys.tsv`): one row per reference setting with its
//! Kubernetes environment variable, the timproxy key and how the value converts. Substitutions
//! are resolved as the reference resolves them at start: from the environment, else the
//! default after `:-`. The result is printed, each key annotated with the setting it came from,
//! and checked with the same parsing and validation `serve` runs. Every setting in the file that
//! has no equivalent gets one warning at its `line:col`, saying what timproxy does instead; a
//! value the reference would not accept either (a port that is no number) is an error. Values
//! are never echoed in diagnostics (the file holds the admin password).

use std::sync::LazyLock;

use serde_yaml::Value;

use crate::config::{Config, ConfigError};

use super::Sink;
use super::config_file;
use super::locate::{Locator, Pos};

const RULE: &str = "reference-config";
/// Stands in for the file name in `ConfigError` locations of the translated text.
const TRANSLATED: &str = "<translated>";

/// How a reference value becomes a timproxy value (`reference_keys.tsv`, column 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// A port: `0.0.0.0:PORT` (the reference binds every interface).
    Listen,
    String,
    Url,
    Bool,
    Port,
    /// Whole seconds → a humantime duration.
    Seconds,
    /// Whole minutes → a humantime duration.
    Minutes,
    /// Whole days → a humantime duration.
    Days,
    /// A hoplite duration (`1h`, `30m`) → a humantime duration.
    Duration,
    /// A logback level name (`INFO`) → the tracing filter (`info`).
    LogLevel,
    /// `registrationServiceConfig.baseUrl`, joined with the port as the reference joins them.
    RegistrationBase,
    /// `registrationServiceConfig.servicePort`.
    RegistrationPort,
    /// `logInfoConfig.url`: also turns raw-data reports on (the reference always sends them).
    RawDataUrl,
    /// A host or `https://host/` (the reference accepts both) → a one-host list.
    SsoHost,
    /// `PROXY` / `CLIENT` → whether the proxy evaluates permission configs.
    Concept,
    /// `ALLOW_ALL` / `BLOCK_ALL` → `allow all` / `block all`.
    RejectionPolicy,
    /// Unused by the reference; must agree with `logInfoConfig.homeFQDN`.
    ServerNameCheck,
    /// Set only when it differs from the homeserver URL (`null` = the same).
    AdminUrl,
    /// Only `/actuator` has an equivalent (timproxy's probe paths are fixed).
    ProbeBasePath,
    /// No equivalent.
    None,
}

impl Conversion {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "listen" => Self::Listen,
            "string" => Self::String,
            "url" => Self::Url,
            "bool" => Self::Bool,
            "port" => Self::Port,
            "seconds" => Self::Seconds,
            "minutes" => Self::Minutes,
            "days" => Self::Days,
            "duration" => Self::Duration,
            "log_level" => Self::LogLevel,
            "rs_base" => Self::RegistrationBase,
            "rs_port" => Self::RegistrationPort,
            "raw_data_url" => Self::RawDataUrl,
            "sso_host" => Self::SsoHost,
            "concept" => Self::Concept,
            "rejection_policy" => Self::RejectionPolicy,
            "server_name_check" => Self::ServerNameCheck,
            "admin_url" => Self::AdminUrl,
            "probe_base_path" => Self::ProbeBasePath,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// One row of `reference_keys.tsv`.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Dotted reference key, e.g. `inboundProxy.port`.
    pub reference: &'static str,
    /// Its environment variable in the reference's Kubernetes configuration.
    pub env: Option<&'static str>,
    /// Dotted timproxy key, e.g. `inbound.listen`.
    pub timproxy: Option<&'static str>,
    pub conversion: Conversion,
    /// For settings without an equivalent: why, and what to use instead.
    pub note: &'static str,
}

impl Mapping {
    /// The environment variable that sets the timproxy key (`TIMPROXY_SECTION__KEY`).
    pub fn timproxy_env(&self) -> Option<String> {
        self.timproxy
            .map(|key| format!("TIMPROXY_{}", key.to_ascii_uppercase().replace('.', "__")))
    }
}

/// The table, parsed once. A malformed row is a build defect; a unit test reads every row.
pub static MAPPINGS: LazyLock<Vec<Mapping>> = LazyLock::new(|| {
    include_str!("reference_keys.tsv")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|line| {
            let mut cols = line.split('\t');
            let reference = cols.next()?;
            let env = cols.next()?;
            let timproxy = cols.next()?;
            let conversion = Conversion::parse(cols.next()?)?;
            let note = cols.next().unwrap_or("");
            let dash = |s: &'static str| (s != "-").then_some(s);
            Some(Mapping {
                reference,
                env: dash(env),
                timproxy: dash(timproxy),
                conversion,
                note,
            })
        })
        .collect()
});

/// Top-level sections of the reference configuration.
fn is_reference_section(key: &str) -> bool {
    MAPPINGS
        .iter()
        .any(|m| m.reference.split('.').next() == Some(key))
}

/// Does a parsed document look like a reference configuration (its sections, none of ours)?
pub fn looks_like_reference(value: &serde_json::Value) -> bool {
    value.as_object().is_some_and(|obj| {
        obj.keys().any(|k| is_reference_section(k))
            && !obj.keys().any(|k| config_file::is_section(k))
    })
}

/// A scalar after `${…}` substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Resolved {
    /// `None` when a substitution had neither a value nor a default.
    text: Option<String>,
    /// How the value came about, for the annotation (`${VAR}` from the environment, …).
    origin: Vec<String>,
    /// Variables with neither a value nor a default.
    unresolved: Vec<String>,
}

/// Resolve every `${NAME}` / `${NAME:-default}` in `raw` as hoplite does at start.
fn substitute(raw: &str, env: &dyn Fn(&str) -> Option<String>) -> Resolved {
    let mut out = String::new();
    let mut origin = Vec::new();
    let mut unresolved = Vec::new();
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.split_once(":-") {
            Some((name, default)) => (name.trim(), Some(default)),
            None => (inner.trim(), None),
        };
        match (env(name), default) {
            (Some(value), _) => {
                origin.push(format!("${{{name}}} from the environment"));
                out.push_str(&value);
            }
            (None, Some(default)) => {
                origin.push(format!("${{{name}}} unset: its default"));
                out.push_str(default);
            }
            (None, None) => unresolved.push(name.to_owned()),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Resolved {
        text: unresolved.is_empty().then_some(out),
        origin,
        unresolved,
    }
}

/// A scalar's text as hoplite reads it; `None` for mappings and sequences.
fn scalar_text(value: &Value) -> Option<Option<String>> {
    match value {
        Value::Null => Some(None),
        Value::Bool(b) => Some(Some(b.to_string())),
        Value::Number(n) => Some(Some(n.to_string())),
        Value::String(s) => Some(Some(s.clone())),
        Value::Tagged(t) => scalar_text(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => None,
    }
}

/// Every leaf of the document: dotted key path and value.
fn leaves(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    match value {
        Value::Mapping(map) => {
            for (k, v) in map {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => scalar_text(other).flatten().unwrap_or_default(),
                };
                prefix.push(key);
                leaves(v, prefix, out);
                prefix.pop();
            }
        }
        other => out.push((prefix.clone(), other.clone())),
    }
}

/// One translated key: its value (YAML text) and where it came from.
#[derive(Debug, Clone)]
struct Entry {
    key: String,
    value: Value,
    note: String,
    /// The reference setting's position, for validation findings on this key.
    pos: Option<Pos>,
}

/// Translate `text` (a reference configuration) into the sink's output and diagnostics.
pub fn check(text: &str, sink: &mut Sink<'_>) {
    translate(text, &|name| std::env::var(name).ok(), sink);
}

/// [`check`] with the environment given (tests).
pub fn translate(text: &str, env: &dyn Fn(&str) -> Option<String>, sink: &mut Sink<'_>) {
    let document: Value = match serde_yaml::from_str(text) {
        Ok(document) => document,
        Err(e) => {
            let pos = e.location().map(|l| Pos {
                line: l.line(),
                column: l.column(),
            });
            sink.error(pos, "syntax", e.to_string());
            return;
        }
    };
    let loc = Locator::new(text);
    let mut found = Vec::new();
    leaves(&document, &mut Vec::new(), &mut found);

    let mut translator = Translator {
        sink,
        env,
        entries: Vec::new(),
        registration: (None, None),
        home_fqdn: None,
        matrix_domain: None,
        homeserver_url: None,
        admin_url: None,
    };
    for (path, value) in &found {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        let dotted = path.join(".");
        let pos = loc.locate(&keys);
        match MAPPINGS.iter().find(|m| m.reference == dotted) {
            Some(mapping) => translator.setting(mapping, value, pos),
            None => translator.sink.warning(
                pos,
                RULE,
                format!("`{dotted}` is not a setting of the reference Messenger Proxy; ignored"),
            ),
        }
    }
    translator.finish();
    let Translator { sink, entries, .. } = translator;
    let yaml = render(sink.path(), &entries);
    validate(&yaml, &entries, sink);
    sink.sort_by_position();
    sink.set_output(yaml);
}

struct Translator<'s, 'p, 'e> {
    sink: &'s mut Sink<'p>,
    env: &'e dyn Fn(&str) -> Option<String>,
    entries: Vec<Entry>,
    /// `registrationServiceConfig.baseUrl` and `.servicePort`, joined at the end.
    registration: (Option<(String, Option<Pos>)>, Option<String>),
    home_fqdn: Option<String>,
    matrix_domain: Option<(String, Option<Pos>)>,
    homeserver_url: Option<String>,
    admin_url: Option<(String, Option<Pos>, String)>,
}

impl Translator<'_, '_, '_> {
    fn push(&mut self, key: &str, value: Value, note: String, pos: Option<Pos>) {
        self.entries.push(Entry {
            key: key.to_owned(),
            value,
            note,
            pos,
        });
    }

    fn invalid(&mut self, mapping: &Mapping, pos: Option<Pos>, expected: &str) {
        self.sink.error(
            pos,
            RULE,
            format!("{}: the value is not {expected}", mapping.reference),
        );
    }

    /// One setting of the file.
    fn setting(&mut self, mapping: &Mapping, value: &Value, pos: Option<Pos>) {
        let Some(raw) = scalar_text(value) else {
            self.invalid(mapping, pos, "a single value");
            return;
        };
        let resolved = match raw {
            Some(raw) => substitute(&raw, self.env),
            None => Resolved {
                text: None,
                origin: Vec::new(),
                unresolved: Vec::new(),
            },
        };
        if !resolved.unresolved.is_empty() {
            let vars = resolved
                .unresolved
                .iter()
                .map(|v| format!("${{{v}}}"))
                .collect::<Vec<_>>()
                .join(", ");
            let hint = match mapping.timproxy_env() {
                Some(var) => format!("; where timproxy runs, set {var} instead"),
                None => String::new(),
            };
            self.sink.warning(
                pos,
                RULE,
                format!(
                    "{}: {vars} is not set here and has no default, so the setting is left out (timproxy's default applies){hint}",
                    mapping.reference
                ),
            );
            return;
        }
        // hoplite reads `null` and an empty value as "not set" for optional settings.
        let text = resolved
            .text
            .filter(|t| !t.is_empty() && t != "null")
            .map(|t| t.trim().to_owned());
        let mut note = mapping.reference.to_owned();
        if !resolved.origin.is_empty() {
            note.push_str(&format!(" ({})", resolved.origin.join(", ")));
        }
        self.convert(mapping, text, note, pos);
    }

    fn convert(&mut self, mapping: &Mapping, text: Option<String>, note: String, pos: Option<Pos>) {
        let key = mapping.timproxy.unwrap_or_default();
        let Some(text) = text else {
            // Unset: strings that may be empty keep timproxy's (empty) default; everything else
            // simply is not set.
            if mapping.conversion == Conversion::String {
                self.push(key, Value::String(String::new()), note, pos);
            }
            return;
        };
        match mapping.conversion {
            Conversion::Listen => match text.parse::<u16>() {
                Ok(port) => self.push(key, Value::String(format!("0.0.0.0:{port}")), note, pos),
                Err(_) => self.invalid(mapping, pos, "a port number"),
            },
            Conversion::Port => match text.parse::<u16>() {
                Ok(port) => self.push(key, Value::Number(port.into()), note, pos),
                Err(_) => self.invalid(mapping, pos, "a port number"),
            },
            Conversion::String => self.push(key, Value::String(text), note, pos),
            Conversion::Url => {
                if url::Url::parse(&text).is_ok() {
                    if key == "homeserver.url" {
                        self.homeserver_url = Some(text.clone());
                    }
                    self.push(key, Value::String(text), note, pos);
                } else {
                    self.invalid(mapping, pos, "a URL");
                }
            }
            Conversion::Bool => match text.to_ascii_lowercase().as_str() {
                "true" => self.push(key, Value::Bool(true), note, pos),
                "false" => self.push(key, Value::Bool(false), note, pos),
                _ => self.invalid(mapping, pos, "true or false"),
            },
            Conversion::Seconds | Conversion::Minutes | Conversion::Days => {
                match text.parse::<u32>() {
                    Ok(n) => {
                        let unit = match (mapping.conversion, n) {
                            (Conversion::Seconds, _) => "s",
                            (Conversion::Minutes, _) => "m",
                            (_, 1) => "day",
                            _ => "days",
                        };
                        self.push(key, Value::String(format!("{n}{unit}")), note, pos);
                    }
                    Err(_) => self.invalid(mapping, pos, "a whole number"),
                }
            }
            Conversion::LogLevel => match text.to_ascii_lowercase().as_str() {
                level @ ("trace" | "debug" | "info" | "warn" | "error") => {
                    self.push(key, Value::String(level.to_owned()), note, pos);
                }
                // logback's other names
                "warning" => self.push(key, Value::String("warn".into()), note, pos),
                "all" => self.push(key, Value::String("trace".into()), note, pos),
                "off" => self.push(key, Value::String("off".into()), note, pos),
                _ => self.invalid(
                    mapping,
                    pos,
                    "a log level (TRACE, DEBUG, INFO, WARN, ERROR)",
                ),
            },
            Conversion::Duration => match humantime::parse_duration(&text) {
                Ok(_) => self.push(key, Value::String(text), note, pos),
                Err(_) => self.invalid(mapping, pos, "a duration such as 1h or 30m"),
            },
            Conversion::RegistrationBase => self.registration.0 = Some((text, pos)),
            Conversion::RegistrationPort => self.registration.1 = Some(text),
            Conversion::RawDataUrl => {
                if url::Url::parse(&text).is_ok() {
                    self.push(key, Value::String(text), note.clone(), pos);
                    self.push(
                        "raw_data.enabled",
                        Value::Bool(true),
                        format!("{note}: the reference always sends reports"),
                        pos,
                    );
                } else {
                    self.invalid(mapping, pos, "a URL");
                }
            }
            Conversion::SsoHost => {
                // The reference compared the request's Host with it; timproxy's sso_hosts
                // entry names the destination host, with a port only where the URL has one.
                let host = url::Url::parse(&text)
                    .ok()
                    .and_then(|u| {
                        let host = u.host_str()?.to_owned();
                        Some(match u.port() {
                            Some(port) => format!("{host}:{port}"),
                            None => host,
                        })
                    })
                    .unwrap_or(text);
                self.push(key, Value::Sequence(vec![Value::String(host)]), note, pos);
            }
            Conversion::Concept => match text.as_str() {
                "PROXY" => self.push(key, Value::Bool(true), note, pos),
                "CLIENT" => self.push(key, Value::Bool(false), note, pos),
                _ => self.invalid(mapping, pos, "PROXY or CLIENT"),
            },
            Conversion::RejectionPolicy => match text.as_str() {
                "ALLOW_ALL" => self.push(key, Value::String("allow all".into()), note, pos),
                "BLOCK_ALL" => self.push(key, Value::String("block all".into()), note, pos),
                _ => self.invalid(mapping, pos, "ALLOW_ALL or BLOCK_ALL"),
            },
            Conversion::ServerNameCheck => self.matrix_domain = Some((text, pos)),
            Conversion::AdminUrl => {
                if url::Url::parse(&text).is_ok() {
                    self.admin_url = Some((text, pos, note));
                } else {
                    self.invalid(mapping, pos, "a URL");
                }
            }
            Conversion::ProbeBasePath => {
                if text.trim_end_matches('/') != "/actuator" {
                    self.sink.warning(
                        pos,
                        RULE,
                        format!("{}: no equivalent: {}", mapping.reference, mapping.note),
                    );
                }
            }
            Conversion::None => self.sink.warning(
                pos,
                RULE,
                format!("{}: no equivalent: {}", mapping.reference, mapping.note),
            ),
        }
        if mapping.reference == "logInfoConfig.homeFQDN"
            && let Some(Entry {
                value: Value::String(name),
                ..
            }) = self.entries.last()
        {
            self.home_fqdn = Some(name.clone());
        }
    }

    /// Settings that depend on others.
    fn finish(&mut self) {
        if let (Some((base, pos)), port) = self.registration.clone() {
            let joined = match port {
                Some(port) => format!("{}:{port}", base.trim_end_matches('/')),
                None => base,
            };
            match url::Url::parse(&joined) {
                Ok(_) => self.push(
                    "registration_service.url",
                    Value::String(joined),
                    "registrationServiceConfig.baseUrl + \":\" + servicePort".to_owned(),
                    pos,
                ),
                Err(_) => self.sink.error(
                    pos,
                    RULE,
                    "registrationServiceConfig.baseUrl: baseUrl:servicePort is not a URL",
                ),
            }
        }
        if let Some((domain, pos)) = self.matrix_domain.clone() {
            match &self.home_fqdn {
                Some(fqdn) if *fqdn == domain => {}
                Some(_) => self.sink.warning(
                    pos,
                    RULE,
                    "synapse.adminApi.matrixDomain: differs from logInfoConfig.homeFQDN; the reference does not use it, timproxy has one server name (homeserver.server_name, taken from homeFQDN)",
                ),
                None => self.push(
                    "homeserver.server_name",
                    Value::String(domain),
                    "synapse.adminApi.matrixDomain (no logInfoConfig.homeFQDN)".to_owned(),
                    pos,
                ),
            }
        }
        if let Some((admin, pos, note)) = self.admin_url.clone() {
            let same = self
                .homeserver_url
                .as_deref()
                .is_some_and(|url| url.trim_end_matches('/') == admin.trim_end_matches('/'));
            if !same {
                self.push("homeserver.admin_url", Value::String(admin), note, pos);
            }
        }
    }
}

/// Every key of the configuration, dotted, in the configuration type's order (the order of
/// `timproxy.example.yaml`), so the translation reads like the example file.
static KEY_ORDER: LazyLock<Vec<String>> = LazyLock::new(|| {
    let mut out = Vec::new();
    if let Ok(tree) = serde_yaml::to_value(Config::default()) {
        let mut found = Vec::new();
        leaves(&tree, &mut Vec::new(), &mut found);
        out.extend(found.into_iter().map(|(path, _)| path.join(".")));
    }
    out
});

fn key_rank(key: &str) -> usize {
    KEY_ORDER
        .iter()
        .position(|k| k == key)
        .unwrap_or(usize::MAX)
}

/// The translated configuration: sections in the configuration's order, keys in the table's
/// order, each annotated with the reference setting it came from.
fn render(source: &str, entries: &[Entry]) -> String {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by_key(|e| key_rank(&e.key));
    let mut out = format!(
        "# timproxy.yaml equivalent of the reference configuration {source} (timproxy spec-check).\n\
         # Keys not listed keep timproxy's defaults (timproxy.example.yaml); settings without an\n\
         # equivalent are reported as warnings.\n"
    );
    let mut open: Vec<&str> = Vec::new();
    for entry in sorted {
        let parts: Vec<&str> = entry.key.split('.').collect();
        let (leaf, parents) = parts.split_last().unwrap_or((&"", &[]));
        let common = open
            .iter()
            .zip(parents.iter())
            .take_while(|(a, b)| a == b)
            .count();
        open.truncate(common);
        for (depth, parent) in parents.iter().enumerate().skip(common) {
            out.push_str(&format!("{}{parent}:\n", "  ".repeat(depth)));
            open.push(parent);
        }
        out.push_str(&format!(
            "{}{leaf}: {}  # {}\n",
            "  ".repeat(parents.len()),
            yaml_scalar(&entry.value),
            entry.note
        ));
    }
    out
}

/// One value on one line (flow style for lists).
fn yaml_scalar(value: &Value) -> String {
    match value {
        Value::Sequence(items) => format!(
            "[{}]",
            items.iter().map(yaml_scalar).collect::<Vec<_>>().join(", ")
        ),
        other => serde_yaml::to_string(other)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

/// The translation must load as `serve` loads it. Files it names live where timproxy will run,
/// so an unreadable one is a warning here, not an error.
fn validate(yaml: &str, entries: &[Entry], sink: &mut Sink<'_>) {
    let config = match Config::from_yaml_with_env(yaml, TRANSLATED, &[]) {
        Ok(config) => config,
        Err(e) => {
            sink.error(
                None,
                RULE,
                format!(
                    "the translation does not load: {}",
                    e.to_string().replace(TRANSLATED, "")
                ),
            );
            return;
        }
    };
    match config.validate(TRANSLATED) {
        Ok(()) => {}
        Err(ConfigError::Semantic { key, message, .. }) => {
            let pos = entries.iter().find(|e| e.key == key).and_then(|e| e.pos);
            if message.starts_with("cannot read") {
                sink.warning(
                    pos,
                    RULE,
                    format!("{key}: {message} (it must exist where timproxy runs)"),
                );
            } else {
                sink.error(pos, RULE, format!("translated {key}: {message}"));
            }
        }
        Err(other) => sink.error(None, RULE, other.to_string().replace(TRANSLATED, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// (diagnostics as text, translation)
    fn run(text: &str, env: &dyn Fn(&str) -> Option<String>) -> (Vec<String>, String) {
        let mut sink = Sink::new("application.yml");
        translate(text, env, &mut sink);
        let (diagnostics, output) = sink.into_parts();
        (
            diagnostics.iter().map(ToString::to_string).collect(),
            output.unwrap_or_default(),
        )
    }

    fn load(yaml: &str) -> Config {
        Config::from_yaml_with_env(yaml, "t", &[]).unwrap()
    }

    #[test]
    fn every_row_parses_and_names_a_real_timproxy_key() {
        let rows = include_str!("reference_keys.tsv")
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .count();
        assert_eq!(
            MAPPINGS.len(),
            rows,
            "a row of reference_keys.tsv does not parse"
        );
        let mut seen = std::collections::BTreeSet::new();
        for m in MAPPINGS.iter() {
            assert!(seen.insert(m.reference), "{} twice", m.reference);
            if let Some(key) = m.timproxy {
                assert!(
                    KEY_ORDER.iter().any(|k| k == key),
                    "{key} is not a timproxy key"
                );
            } else {
                assert!(
                    !m.note.is_empty(),
                    "{}: no equivalent needs a note",
                    m.reference
                );
            }
        }
        assert_eq!(
            MAPPINGS
                .iter()
                .find(|m| m.reference == "inboundProxy.port")
                .and_then(Mapping::timproxy_env),
            Some("TIMPROXY_INBOUND__LISTEN".to_owned())
        );
    }

    #[test]
    fn substitutions_resolve_like_the_reference_at_start() {
        let env = |name: &str| (name == "SET").then(|| "v".to_owned());
        let text = |raw: &str| substitute(raw, &env).text;
        assert_eq!(text("${SET}"), Some("v".into()));
        assert_eq!(text("${SET:-d}"), Some("v".into()));
        assert_eq!(text("${UNSET:-d}"), Some("d".into()));
        assert_eq!(text("${UNSET:-}"), Some(String::new()));
        assert_eq!(
            text("http://${SET}:${UNSET:-80}/x"),
            Some("http://v:80/x".into())
        );
        assert_eq!(text("plain"), Some("plain".into()));
        assert_eq!(text("${unterminated"), Some("${unterminated".into()));
        let missing = substitute("${UNSET}", &env);
        assert_eq!(
            (missing.text, missing.unresolved),
            (None, vec!["UNSET".to_owned()])
        );
    }

    const LOCAL: &str = "\
registrationServiceConfig:
  baseUrl: \"http://localhost\"
  servicePort: \"8080\"
  federationListEndpoint: \"/backend/federation\"
federationListCache:
  updateIntervalMinutes: 1
inboundProxy:
  homeserverUrl: \"http://localhost:8083\"
  synapsePort: 8083
  port: 8090
  enforceDomainList: true
  accessTokenToUserIdCacheDuration: 1h
outboundProxy:
  port: 8093
  domainWhiteList: \"\"
  ssoDomain: \"\"
actuatorConfig:
  port: 1233
  basePath: \"/actuator\"
logInfoConfig:
  homeFQDN: \"home.de\"
timAuthorizationCheckConfiguration:
  concept: \"CLIENT\"
  inviteRejectionPolicy: \"BLOCK_ALL\"
synapse:
  adminApi:
    matrixDomain: synapse
    baseUrl: http://localhost:8083
    username: admin
    password: hunter2-secret
orphanedRoomCleanup:
  enabled: true
  checkIntervalDays: 1
  roomAgeThresholdDays: 1
";

    #[test]
    fn a_local_configuration_translates_into_a_config_that_loads() {
        let (diagnostics, yaml) = run(LOCAL, &no_env);
        let config = load(&yaml);
        assert_eq!(config.inbound.listen.to_string(), "0.0.0.0:8090");
        assert_eq!(config.outbound.listen.to_string(), "0.0.0.0:8093");
        assert_eq!(config.admin.listen.to_string(), "0.0.0.0:1233");
        assert_eq!(config.inbound.well_known_server_port, 8083);
        assert_eq!(config.homeserver.url.as_str(), "http://localhost:8083/");
        assert_eq!(
            config.homeserver.admin_url, None,
            "same as the homeserver URL"
        );
        assert_eq!(config.homeserver.server_name, "home.de");
        assert_eq!(
            config.registration_service.url.as_str(),
            "http://localhost:8080/"
        );
        assert_eq!(
            config.federation.refresh_interval,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(
            config.inbound.whoami_cache.ttl,
            std::time::Duration::from_secs(3600)
        );
        assert!(config.federation.enforce);
        assert!(
            !config.policy.invite_permission_check,
            "CLIENT: the clients check"
        );
        assert_eq!(config.policy.default_permission, "block all");
        assert!(config.outbound.passthrough.is_empty());
        assert!(config.outbound.sso_hosts.is_empty());
        assert!(config.cleanup.enabled);
        assert_eq!(
            config.cleanup.min_age,
            std::time::Duration::from_secs(86_400)
        );
        assert!(
            yaml.contains("  listen: 0.0.0.0:8090  # inboundProxy.port\n"),
            "{yaml}"
        );
        // One warning per setting without an equivalent, at its position; an empty
        // domainWhiteList, the standard basePath and a matrixDomain nobody reads but that
        // differs from homeFQDN are told apart.
        assert_eq!(
            diagnostics,
            vec![
                "application.yml:27:5: warning: synapse.adminApi.matrixDomain: differs from logInfoConfig.homeFQDN; the reference does not use it, timproxy has one server name (homeserver.server_name, taken from homeFQDN) [reference-config]",
                "application.yml:29:5: warning: synapse.adminApi.username: no equivalent: timproxy calls the admin API with an access token instead of logging in: put the admin user's token into a file named by homeserver.admin_token_file [reference-config]",
                "application.yml:30:5: warning: synapse.adminApi.password: no equivalent: timproxy calls the admin API with an access token instead of logging in: put the admin user's token into a file named by homeserver.admin_token_file [reference-config]",
            ]
        );
    }

    #[test]
    fn the_admin_password_is_never_echoed() {
        let (diagnostics, yaml) = run(LOCAL, &no_env);
        assert!(!yaml.contains("hunter2"));
        assert!(diagnostics.iter().all(|d| !d.contains("hunter2")));
        let from_env = "synapse:\n  adminApi:\n    password: ${PW}\n";
        let (diagnostics, yaml) = run(from_env, &|_| Some("hunter2-env".to_owned()));
        assert!(!yaml.contains("hunter2") && diagnostics.iter().all(|d| !d.contains("hunter2")));
    }

    #[test]
    fn values_the_reference_would_refuse_are_errors_at_their_position() {
        let text = "inboundProxy:\n  port: eighty\ntimAuthorizationCheckConfiguration:\n  concept: MAYBE\norphanedRoomCleanup:\n  checkIntervalDays: -1\n  unknownKey: 1\n";
        let (diagnostics, yaml) = run(text, &no_env);
        assert_eq!(
            diagnostics,
            vec![
                "application.yml:2:3: error: inboundProxy.port: the value is not a port number [reference-config]",
                "application.yml:4:3: error: timAuthorizationCheckConfiguration.concept: the value is not PROXY or CLIENT [reference-config]",
                "application.yml:6:3: error: orphanedRoomCleanup.checkIntervalDays: the value is not a whole number [reference-config]",
                "application.yml:7:3: warning: `orphanedRoomCleanup.unknownKey` is not a setting of the reference Messenger Proxy; ignored [reference-config]",
            ]
        );
        load(&yaml);
    }

    #[test]
    fn an_unset_variable_without_default_is_left_out_with_the_timproxy_variable_to_set() {
        let (diagnostics, yaml) = run(
            "inboundProxy:\n  homeserverUrl: ${HOMESERVER_URL}\n",
            &no_env,
        );
        assert_eq!(
            diagnostics,
            vec![
                "application.yml:2:3: warning: inboundProxy.homeserverUrl: ${HOMESERVER_URL} is not set here and has no default, so the setting is left out (timproxy's default applies); where timproxy runs, set TIMPROXY_HOMESERVER__URL instead [reference-config]"
            ]
        );
        assert!(!yaml.contains("homeserver:"), "{yaml}");
        let (diagnostics, yaml) = run(
            "inboundProxy:\n  homeserverUrl: ${HOMESERVER_URL}\n",
            &|_| Some("http://synapse:8083".to_owned()),
        );
        assert!(diagnostics.is_empty(), "{diagnostics:?}");
        assert!(yaml.contains("  url: http://synapse:8083  # inboundProxy.homeserverUrl (${HOMESERVER_URL} from the environment)\n"), "{yaml}");
    }

    #[test]
    fn the_sso_domain_becomes_an_sso_host_keeping_a_named_port() {
        for (value, entry) in [
            ("https://sso.home.example/", "sso.home.example"),
            ("https://sso.home.example:8443/", "sso.home.example:8443"),
            ("sso.home.example", "sso.home.example"),
        ] {
            let (diagnostics, yaml) =
                run(&format!("outboundProxy:\n  ssoDomain: {value}\n"), &no_env);
            assert!(diagnostics.is_empty(), "{diagnostics:?}");
            assert_eq!(
                load(&yaml).outbound.sso_hosts,
                vec![entry.to_owned()],
                "{yaml}"
            );
        }
    }

    #[test]
    fn a_translation_timproxy_would_refuse_is_an_error() {
        // The reference let the actuator share the inbound port; timproxy refuses the clash.
        let text = "inboundProxy:\n  port: 8090\nactuatorConfig:\n  port: 8090\n";
        let (diagnostics, _) = run(text, &no_env);
        assert_eq!(
            diagnostics,
            vec![
                "application.yml:4:3: error: translated admin.listen: port 8090 is already used by inbound.listen [reference-config]"
            ]
        );
    }

    #[test]
    fn reference_files_are_told_from_timproxy_files() {
        let j = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
        assert!(looks_like_reference(&j(
            r#"{"inboundProxy":{"port":8090}}"#
        )));
        assert!(!looks_like_reference(&j(
            r#"{"inbound":{"listen":"0.0.0.0:1"}}"#
        )));
        assert!(!looks_like_reference(&j(r#"{"services":{}}"#)));
    }
}
