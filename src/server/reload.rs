//! What a configuration reload compares, keeps and reports.
//!
//! A reload re-reads the file and the environment and validates the result completely before
//! anything changes. Most keys take effect on the next request; the keys in [`RESTART_ONLY`]
//! name resources bound once at start (sockets, the database pool), so a changed value there is
//! reported (log, admin listener) and the running value is kept until the next start.

use std::path::PathBuf;

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::Config;

/// A key a running process cannot change, and how to keep its running value.
pub struct RestartOnly {
    pub key: &'static str,
    keep: fn(running: &Config, loaded: &mut Config),
}

/// Keys that take effect only on the next start: listeners are bound and the connection limit
/// sized once, and the store's pool (with its background jobs' locks) lives for the process.
pub const RESTART_ONLY: &[RestartOnly] = &[
    RestartOnly {
        key: "inbound.listen",
        keep: |running, loaded| loaded.inbound.listen = running.inbound.listen,
    },
    RestartOnly {
        key: "inbound.max_connections",
        keep: |running, loaded| loaded.inbound.max_connections = running.inbound.max_connections,
    },
    RestartOnly {
        key: "outbound.listen",
        keep: |running, loaded| loaded.outbound.listen = running.outbound.listen,
    },
    RestartOnly {
        key: "admin.listen",
        keep: |running, loaded| loaded.admin.listen = running.admin.listen,
    },
    RestartOnly {
        key: "info_api.enabled",
        keep: |running, loaded| loaded.info_api.enabled = running.info_api.enabled,
    },
    RestartOnly {
        key: "info_api.listen",
        keep: |running, loaded| loaded.info_api.listen = running.info_api.listen,
    },
    RestartOnly {
        key: "database",
        keep: |running, loaded| loaded.database = running.database.clone(),
    },
];

/// Keys (dotted paths, leaves or whole lists) whose values differ.
pub fn changed_keys(old: &Config, new: &Config) -> Vec<String> {
    let (Ok(old), Ok(new)) = (serde_json::to_value(old), serde_json::to_value(new)) else {
        // Serializing plain config data does not fail; if it ever did, call it all changed.
        return vec![String::new()];
    };
    let mut keys = Vec::new();
    diff(&old, &new, "", &mut keys);
    keys
}

fn diff(old: &serde_json::Value, new: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut names: Vec<&String> = a.keys().chain(b.keys()).collect();
            names.sort();
            names.dedup();
            for name in names {
                let key = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                match (a.get(name), b.get(name)) {
                    (Some(x), Some(y)) => diff(x, y, &key, out),
                    _ => out.push(key),
                }
            }
        }
        (a, b) if a != b => out.push(path.to_owned()),
        _ => {}
    }
}

/// Put the running values of [`RESTART_ONLY`] keys back into `loaded`; returns the changed
/// keys that now wait for a restart.
pub fn keep_restart_only(running: &Config, loaded: &mut Config) -> Vec<String> {
    let changed = changed_keys(running, loaded);
    let mut waiting = Vec::new();
    for entry in RESTART_ONLY {
        let prefix = format!("{}.", entry.key);
        let mut affected: Vec<&String> = changed
            .iter()
            .filter(|k| *k == entry.key || k.starts_with(&prefix))
            .collect();
        if !affected.is_empty() {
            (entry.keep)(running, loaded);
            waiting.append(&mut affected);
        }
    }
    let mut waiting: Vec<String> = waiting.into_iter().cloned().collect();
    waiting.sort();
    waiting
}

/// SHA-256 (hex) of the effective configuration (file plus environment, restart-only keys at
/// their running values): two processes with the same hash run the same configuration.
pub fn config_hash(config: &Config) -> String {
    let bytes = serde_json::to_vec(config).unwrap_or_default();
    format!("{:x}", Sha256::digest(&bytes))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// How a reload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new configuration is active.
    Applied,
    /// Nothing that can change while running changed.
    Unchanged,
    /// The new configuration is invalid; the old one keeps running.
    Rejected,
}

impl Outcome {
    /// Label of `timproxy_config_reloads_total{outcome}`.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Rejected => "rejected",
        }
    }
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReloadReport {
    pub outcome: Outcome,
    /// When the reload ran (RFC 3339).
    pub at: String,
    /// Hash of the configuration active afterwards.
    pub hash: String,
    /// Keys that changed and are active now.
    pub changed: Vec<String>,
    /// Keys that changed in the file or environment but wait for a restart.
    pub restart_required: Vec<String>,
    /// Why the new configuration was refused (file:line:column and key where known).
    pub error: Option<String>,
}

impl ReloadReport {
    /// A refused reload: `hash` is the configuration that keeps running.
    pub(super) fn rejected(hash: String, error: String) -> Self {
        let mut report = Self::new(Outcome::Rejected, hash);
        report.error = Some(error);
        report
    }

    pub(super) fn new(outcome: Outcome, hash: String) -> Self {
        Self {
            outcome,
            at: rfc3339(OffsetDateTime::now_utc()),
            hash,
            changed: Vec::new(),
            restart_required: Vec::new(),
            error: None,
        }
    }
}

/// The active configuration, as the admin listener shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ConfigStatus {
    /// [`config_hash`] of the active configuration.
    pub hash: String,
    /// When it became active (RFC 3339).
    pub loaded_at: String,
    /// The file it came from (`None`: built-in defaults plus environment).
    pub file: Option<PathBuf>,
    /// How many configurations were applied since start (1 = the one from the start).
    pub generation: u64,
    /// Keys whose new values wait for a restart.
    pub restart_required: Vec<String>,
    /// The latest reload attempt, if any.
    pub last_reload: Option<ReloadReport>,
}

impl ConfigStatus {
    pub(super) fn started(config: &Config, file: Option<PathBuf>) -> Self {
        Self {
            hash: config_hash(config),
            loaded_at: rfc3339(OffsetDateTime::now_utc()),
            file,
            generation: 1,
            restart_required: Vec::new(),
            last_reload: None,
        }
    }

    /// The status after `report`.
    pub(super) fn after(&self, report: &ReloadReport) -> Self {
        let mut next = self.clone();
        if report.outcome == Outcome::Applied {
            next.hash = report.hash.clone();
            next.loaded_at = report.at.clone();
            next.generation += 1;
        }
        if report.outcome != Outcome::Rejected {
            next.restart_required = report.restart_required.clone();
        }
        next.last_reload = Some(report.clone());
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_restart_only_key_is_a_config_key_and_is_kept_and_reported() {
        let running = Config::default();
        let tree = serde_json::to_value(&running).unwrap();
        let changed: Config = serde_yaml::from_str(
            "inbound:\n  listen: 127.0.0.1:1\n  max_connections: 7\noutbound:\n  listen: 127.0.0.1:2\n\
             admin:\n  listen: 127.0.0.1:3\ninfo_api:\n  enabled: false\n  listen: 127.0.0.1:4\n\
             database:\n  url: postgres://db/x\n",
        )
        .unwrap();
        for entry in RESTART_ONLY {
            let exists = entry
                .key
                .split('.')
                .try_fold(&tree, |node, key| node.get(key));
            assert!(exists.is_some(), "{} is not a config key", entry.key);
        }
        let mut loaded = changed.clone();
        let waiting = keep_restart_only(&running, &mut loaded);
        assert_eq!(loaded, running, "every changed key was a restart-only one");
        for entry in RESTART_ONLY {
            assert!(
                waiting
                    .iter()
                    .any(|k| k == entry.key || k.starts_with(&format!("{}.", entry.key))),
                "{} changed but was not reported: {waiting:?}",
                entry.key
            );
        }
    }

    /// The README's reload table and the example configuration's "(restart)" marks name
    /// exactly these keys.
    #[test]
    fn restart_only_keys_are_documented_where_operators_look() {
        let readme = include_str!("../../README.md");
        let row = readme
            .lines()
            .find(|l| l.contains("**need a restart**"))
            .expect("README reload table has the restart row");
        let example = include_str!("../../timproxy.example.yaml");
        let lines: Vec<&str> = example.lines().collect();
        for entry in RESTART_ONLY {
            let written = if entry.key.contains('.') {
                format!("`{}`", entry.key)
            } else {
                format!("`{}.*`", entry.key)
            };
            assert!(row.contains(&written), "README restart row lacks {written}");
            let (section, key) = entry.key.split_once('.').unwrap_or((entry.key, ""));
            let start = lines
                .iter()
                .position(|l| *l == format!("{section}:"))
                .unwrap_or_else(|| panic!("no section {section} in the example"));
            let at = if key.is_empty() {
                start
            } else {
                start
                    + lines[start..]
                        .iter()
                        .position(|l| l.starts_with(&format!("  {key}:")))
                        .unwrap_or_else(|| panic!("no {} in the example", entry.key))
            };
            let marked = lines[start..=at.min(lines.len() - 1)]
                .iter()
                .rev()
                .take(4)
                .chain(lines.get(at + 1))
                .any(|l| l.trim_start().starts_with('#') && l.contains("(restart"));
            assert!(
                marked,
                "{} is not marked (restart) in the example",
                entry.key
            );
        }
    }

    #[test]
    fn reloadable_keys_pass_through_and_are_named() {
        let running = Config::default();
        let mut loaded: Config = serde_yaml::from_str(
            "inbound:\n  listen: 127.0.0.1:1\n  extra_endpoints: ['GET /x']\npolicy:\n  presence_status_max: 10\n",
        )
        .unwrap();
        let waiting = keep_restart_only(&running, &mut loaded);
        assert_eq!(waiting, ["inbound.listen"]);
        assert_eq!(loaded.inbound.extra_endpoints, ["GET /x"]);
        assert_eq!(
            changed_keys(&running, &loaded),
            ["inbound.extra_endpoints", "policy.presence_status_max"]
        );
        assert_ne!(config_hash(&running), config_hash(&loaded));
    }
}
