//! timproxy configuration files: the same parsing and validation `serve` runs
//! ([`Config::from_yaml_with_env`] without environment overrides, then [`Config::validate`]),
//! so a file that passes here starts. Validation stops at the first problem, as in `serve`;
//! parse errors carry serde_norway's position, semantic ones are located by their key path.
//! File paths in the config (certificates, trust anchors) are resolved against the working
//! directory, exactly like `serve` does.

use std::sync::LazyLock;

use crate::config::{Config, ConfigError};
use crate::matrix::endpoints::{Classification, EndpointTable, parse_extra};

use super::Sink;
use super::endpoints::placeholder_path;
use super::locate::{Locator, Pos};

const RULE: &str = "config";
/// Stands in for the file name in `ConfigError` locations so the position can be split off.
const MARK: &str = "\u{1}";

/// Top-level sections of the configuration, taken from the `Config` type itself.
static SECTIONS: LazyLock<Vec<String>> =
    LazyLock::new(|| match serde_yaml::to_value(Config::default()) {
        Ok(serde_yaml::Value::Mapping(map)) => map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    });

/// Is `key` a top-level section of the configuration?
pub fn is_section(key: &str) -> bool {
    SECTIONS.iter().any(|s| s == key)
}

/// `line:col` from the location string of a `ConfigError::Invalid`.
fn position(location: &str) -> Option<Pos> {
    let rest = location.strip_prefix(MARK)?.strip_prefix(':')?;
    let (line, column) = rest.split_once(':')?;
    Some(Pos {
        line: line.parse().ok()?,
        column: column.parse().ok()?,
    })
}

pub fn check(text: &str, sink: &mut Sink<'_>) {
    let loc = Locator::new(text);
    let config = match Config::from_yaml_with_env(text, MARK, &[]) {
        Ok(config) => config,
        Err(ConfigError::Invalid { location, message }) => {
            sink.error(position(&location), RULE, message);
            return;
        }
        Err(other) => {
            sink.error(None, RULE, other.to_string().replace(MARK, ""));
            return;
        }
    };
    match config.validate(MARK) {
        Ok(()) => {}
        Err(ConfigError::Semantic { key, message, .. }) => {
            let keys: Vec<&str> = key.split('.').collect();
            sink.error(loc.locate(&keys), RULE, format!("{key}: {message}"));
            return;
        }
        Err(other) => {
            sink.error(None, RULE, other.to_string().replace(MARK, ""));
            return;
        }
    }
    check_extra_endpoints(&config, &loc, sink);
}

/// Extra endpoints must compile into the matcher; one that is already served (v1.11, legacy or
/// an alias spelling) is noise.
fn check_extra_endpoints(config: &Config, loc: &Locator<'_>, sink: &mut Sink<'_>) {
    let extras = &config.inbound.extra_endpoints;
    if extras.is_empty() {
        return;
    }
    let list_pos = loc.locate(&["inbound", "extra_endpoints"]);
    if let Err(e) = EndpointTable::served(extras) {
        sink.error(list_pos, RULE, format!("inbound.extra_endpoints: {e}"));
        return;
    }
    let Ok(plain) = EndpointTable::served(&[]) else {
        return;
    };
    for extra in extras {
        let Ok(endpoint) = parse_extra(extra) else {
            continue;
        };
        if let Classification::Matched {
            endpoint: known, ..
        } = plain.classify(&endpoint.method, &placeholder_path(&endpoint.template))
        {
            let from = loc.find_path(&["inbound", "extra_endpoints"]).unwrap_or(0);
            let pos = loc
                .find_value(&endpoint.template, from)
                .map(|o| loc.pos(o))
                .or(list_pos);
            sink.warning(
                pos,
                RULE,
                format!(
                    "inbound.extra_endpoints: `{extra}` is already served as `{} {}`",
                    known.method, known.template
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Vec<String> {
        Sink::findings("c.yaml", |sink| check(text, sink))
    }

    #[test]
    fn sections_come_from_the_config_type() {
        assert!(is_section("inbound") && is_section("policy") && is_section("cleanup"));
        assert!(!is_section("services"));
    }

    #[test]
    fn parse_errors_keep_their_position_and_semantic_errors_find_their_key() {
        assert_eq!(
            run("inbound:\n  lisen: 0.0.0.0:1\n"),
            vec![
                "c.yaml:2:3: error: inbound: unknown field `lisen`, expected one of `listen`, `tls`, `well_known_server_port`, `max_body_bytes`, `whoami_cache`, `expose_synapse_admin`, `max_connections`, `header_read_timeout`, `write_timeout`, `extra_endpoints`, `sso_endpoints`, `trusted_proxies` [config]"
            ]
        );
        assert_eq!(
            run("# ports\nadmin:\n  listen: 0.0.0.0:8090\n"),
            vec![
                "c.yaml:3:3: error: admin.listen: port 8090 is already used by inbound.listen [config]"
            ]
        );
        assert!(run("").is_empty());
    }

    #[test]
    fn extra_endpoint_already_in_v1_11_warns() {
        let d = run(
            "inbound:\n  extra_endpoints:\n    - GET /_matrix/client/v3/sync\n    - GET /_synapse/client/oidc/callback\n",
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].starts_with("c.yaml:3:11: warning:"), "{d:?}");
    }
}
