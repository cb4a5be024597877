//! A_26021-01 (with A_25044, A_25045-01, A_26389, A_26390): the invitee's permission
//! configuration ("Berechtigungskonzept Stufe 2") decides whether an inviter may invite.
//!
//! The content lives in the invitee's global account data under a type chosen by the
//! deployment flavour. It is validated against the schema of its type before use: content
//! that does not fit is never evaluated and the invite is refused (fail closed), because a
//! half-understood block list is worse than none.

use serde_json::Value;

use crate::config::Flavour;
use crate::matrix::ids::UserId;

pub const TYPE_PRO: &str = "de.gematik.tim.account.permissionconfig.pro.v1";
pub const TYPE_EPA: &str = "de.gematik.tim.account.permissionconfig.epa.v1";
pub const TYPE_LEGACY: &str = "de.gematik.tim.account.permissionconfig.v1";

/// Which schema a content follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    Pro,
    Epa,
    Legacy,
}

impl ConfigKind {
    pub fn from_type(event_type: &str) -> Option<Self> {
        match event_type {
            TYPE_PRO => Some(Self::Pro),
            TYPE_EPA => Some(Self::Epa),
            TYPE_LEGACY => Some(Self::Legacy),
            _ => None,
        }
    }

    pub fn event_type(self) -> &'static str {
        match self {
            Self::Pro => TYPE_PRO,
            Self::Epa => TYPE_EPA,
            Self::Legacy => TYPE_LEGACY,
        }
    }

    /// Types to look for, in order: the flavour's own, then the legacy TI-M Basis type.
    pub fn lookup_order(flavour: Flavour) -> [Self; 2] {
        match flavour {
            Flavour::Pro => [Self::Pro, Self::Legacy],
            Flavour::Epa => [Self::Epa, Self::Legacy],
        }
    }
}

/// `defaultSetting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultSetting {
    AllowAll,
    BlockAll,
}

impl DefaultSetting {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "allow all" => Some(Self::AllowAll),
            "block all" => Some(Self::BlockAll),
            _ => None,
        }
    }
}

/// Why a content does not fit its schema (logged, never shown to the inviter).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidConfig {
    #[error("content is not a JSON object")]
    NotObject,
    #[error("defaultSetting missing or not 'allow all'/'block all'")]
    DefaultSetting,
    #[error("{0} is not an object of objects")]
    ServerMap(&'static str),
    #[error("userExceptions must map '@…' user ids to objects")]
    UserMap,
    #[error("groupExceptions must be a unique array of {{\"groupName\":\"isInsuredPerson\"}}")]
    Groups,
}

/// A validated permission configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionConfig {
    pub default: DefaultSetting,
    pub servers: Vec<String>,
    pub users: Vec<String>,
    pub insured_group: bool,
}

impl PermissionConfig {
    /// The configuration applied when the invitee has none.
    pub fn defaulted(default: DefaultSetting) -> Self {
        Self {
            default,
            servers: Vec::new(),
            users: Vec::new(),
            insured_group: false,
        }
    }

    /// Validate `content` against the schema of `kind`; other top-level members are ignored.
    pub fn parse(kind: ConfigKind, content: &Value) -> Result<Self, InvalidConfig> {
        let obj = content.as_object().ok_or(InvalidConfig::NotObject)?;
        let default = obj
            .get("defaultSetting")
            .and_then(Value::as_str)
            .and_then(DefaultSetting::parse)
            .ok_or(InvalidConfig::DefaultSetting)?;
        let server_key = match kind {
            ConfigKind::Pro | ConfigKind::Epa => "serverExceptions",
            ConfigKind::Legacy => "domainExceptions",
        };
        let servers = match obj.get(server_key) {
            None => Vec::new(),
            Some(Value::Object(map)) if map.values().all(Value::is_object) => {
                map.keys().cloned().collect()
            }
            Some(_) => return Err(InvalidConfig::ServerMap(server_key)),
        };
        let users = match obj.get("userExceptions") {
            None => Vec::new(),
            Some(Value::Object(map))
                if map.iter().all(|(k, v)| k.starts_with('@') && v.is_object()) =>
            {
                map.keys().cloned().collect()
            }
            Some(_) => return Err(InvalidConfig::UserMap),
        };
        let insured_group = match (kind, obj.get("groupExceptions")) {
            (ConfigKind::Pro, Some(groups)) => parse_groups(groups)?,
            _ => false,
        };
        Ok(Self {
            default,
            servers,
            users,
            insured_group,
        })
    }

    /// Does this configuration let `inviter` invite? `inviter_is_insurance`: the inviter's
    /// server is an insurance (ePA) server per the federation list.
    pub fn allows(&self, inviter: &UserId, inviter_is_insurance: bool) -> bool {
        let matched = self.users.iter().any(|u| u == inviter.as_str())
            || self.servers.iter().any(|s| s == inviter.server_name())
            || (self.insured_group && inviter_is_insurance);
        match self.default {
            DefaultSetting::AllowAll => !matched,
            DefaultSetting::BlockAll => matched,
        }
    }
}

/// Pro `groupExceptions`: unique items, each an object whose `groupName` is a known group.
fn parse_groups(groups: &Value) -> Result<bool, InvalidConfig> {
    let items = groups.as_array().ok_or(InvalidConfig::Groups)?;
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(InvalidConfig::Groups);
        }
        let name = item
            .as_object()
            .and_then(|o| o.get("groupName"))
            .and_then(Value::as_str);
        if name != Some("isInsuredPerson") {
            return Err(InvalidConfig::Groups);
        }
    }
    Ok(!items.is_empty())
}

/// The decision for one invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Block,
    Invalid(InvalidConfig),
}

/// Decide from the content found under `kind` (`None` = the invitee has none).
pub fn decide(
    kind: ConfigKind,
    content: Option<&Value>,
    server_default: DefaultSetting,
    inviter: &UserId,
    inviter_is_insurance: bool,
) -> Decision {
    let config = match content {
        None => PermissionConfig::defaulted(server_default),
        Some(content) => match PermissionConfig::parse(kind, content) {
            Ok(config) => config,
            Err(e) => return Decision::Invalid(e),
        },
    };
    if config.allows(inviter, inviter_is_insurance) {
        Decision::Allow
    } else {
        Decision::Block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shared vectors (copied into `tests/data/`) must pass 100 %.
    #[test]
    fn permission_config_vectors_all_pass() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/permission-config-cases.json"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(cases.len(), 59);
        let mut failures = Vec::new();
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let kind = ConfigKind::from_type(case["account_data_type"].as_str().unwrap()).unwrap();
            let content = match &case["config"] {
                Value::Null => None,
                other => Some(other),
            };
            let default = case
                .get("server_default_setting")
                .and_then(Value::as_str)
                .map(|s| DefaultSetting::parse(s).unwrap())
                .unwrap_or(DefaultSetting::AllowAll);
            let inviter = UserId::parse(case["inviter"].as_str().unwrap()).unwrap();
            let insurance = case["inviter_server_is_insurance"].as_bool().unwrap();
            let got = match decide(kind, content, default, &inviter, insurance) {
                Decision::Allow => "allow",
                Decision::Block => "block",
                Decision::Invalid(_) => "invalid_config",
            };
            if got != case["expected"].as_str().unwrap() {
                failures.push(format!("{name}: got {got}"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn several_matches_invert_the_default_once() {
        let config = PermissionConfig::parse(
            ConfigKind::Pro,
            &serde_json::json!({"defaultSetting":"block all","serverExceptions":{"a.b":{}},"userExceptions":{"@x:a.b":{}}}),
        )
        .unwrap();
        assert!(config.allows(&UserId::parse("@x:a.b").unwrap(), false));
    }

    #[test]
    fn lookup_order_falls_back_to_legacy() {
        assert_eq!(
            ConfigKind::lookup_order(Flavour::Epa),
            [ConfigKind::Epa, ConfigKind::Legacy]
        );
        assert_eq!(
            ConfigKind::lookup_order(Flavour::Pro)[0].event_type(),
            TYPE_PRO
        );
    }
}
