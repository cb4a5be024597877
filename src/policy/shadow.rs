//! Per-rule shadow mode (`policy.shadow`): a shadowed rule is still evaluated, but what it
//! would have done — refuse the request or rewrite it — is only reported, and the request goes
//! on unchanged. Operators use it to roll a rule out safely and to see what it would block.
//!
//! Every rule outcome of a request passes through one [`Gate`]: an enforced refusal comes back
//! as the error that ends the request, a shadowed one is reported and the checks go on; a
//! rewrite is applied only when the gate says so. The gate does not log or count itself; the
//! listener gives it a [`Reporter`] that does (`timproxy_rejections_total{mode="shadow"}`,
//! `timproxy_rewrites_total{mode=…}`).
//!
//! Which ids may be listed is decided by the rule registry ([`super::registry`]): TIM rules
//! only, never the rules that guard the federation boundary.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::registry;
use crate::error::MatrixError;

/// One entry of `policy.shadow`: a TIM rule id, checked against the registry when the
/// configuration is read (so a refusal names the file, line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowRule(&'static str);

impl ShadowRule {
    pub fn parse(id: &str) -> Result<Self, String> {
        registry::check_shadowable(id).map(|rule| Self(rule.id))
    }

    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl std::fmt::Display for ShadowRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Serialize for ShadowRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for ShadowRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Checked inside the string's own visit, so a YAML error points at the entry itself
        // (`policy.shadow[1]`, its line and column), not at the list.
        struct Id;
        impl serde::de::Visitor<'_> for Id {
            type Value = ShadowRule;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a TIM rule id")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<ShadowRule, E> {
                ShadowRule::parse(id).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Id)
    }
}

/// Whether an outcome took effect or was only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Shadow,
}

impl Mode {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
        }
    }
}

/// Receives what the gate decided, for logs and metrics. Enforced refusals are not reported
/// here: they end the request, and the listener reports them with the answer it sends.
pub trait Reporter: Sync {
    /// A shadowed rule would have refused the request with `error`.
    fn would_refuse(&self, error: &MatrixError);
    /// `rule` rewrote the request (`Mode::Enforce`) or would have (`Mode::Shadow`); `change`
    /// says what, without any user data.
    fn rewrite(&self, rule: &'static str, change: &'static str, mode: Mode);
}

/// A reporter that drops everything (unit tests, callers without a listener).
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;

impl Reporter for Silent {
    fn would_refuse(&self, _: &MatrixError) {}
    fn rewrite(&self, _: &'static str, _: &'static str, _: Mode) {}
}

/// The shadow decision for the rule outcomes of one request.
pub struct Gate<'a> {
    shadow: &'a [ShadowRule],
    reporter: &'a dyn Reporter,
}

impl<'a> Gate<'a> {
    pub fn new(shadow: &'a [ShadowRule], reporter: &'a dyn Reporter) -> Self {
        Self { shadow, reporter }
    }

    /// A gate that enforces every rule and reports nothing.
    pub fn enforcing() -> Gate<'static> {
        Gate {
            shadow: &[],
            reporter: &Silent,
        }
    }

    /// Is `rule` (or the rule it is part of) shadowed?
    pub fn is_shadowed(&self, rule: &str) -> bool {
        if self.shadow.is_empty() {
            return false;
        }
        let key = registry::shadow_key(rule);
        self.shadow.iter().any(|s| s.as_str() == key)
    }

    /// Pass one rule outcome: `Err` stops the request unless the rule is shadowed, in which
    /// case it is reported and the checks go on.
    pub fn check(&self, outcome: Result<(), MatrixError>) -> Result<(), MatrixError> {
        match outcome {
            Err(error) if self.is_shadowed(error.rule) => {
                self.reporter.would_refuse(&error);
                Ok(())
            }
            other => other,
        }
    }

    /// May `rule` apply its rewrite (`change`)? Reported either way.
    pub fn rewrite(&self, rule: &'static str, change: &'static str) -> bool {
        let mode = if self.is_shadowed(rule) {
            Mode::Shadow
        } else {
            Mode::Enforce
        };
        self.reporter.rewrite(rule, change, mode);
        mode == Mode::Enforce
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Records what a gate reported.
    #[derive(Default)]
    pub struct Recorded(pub Mutex<Vec<String>>);

    impl Reporter for Recorded {
        fn would_refuse(&self, error: &MatrixError) {
            self.0
                .lock()
                .unwrap()
                .push(format!("refuse {}", error.rule));
        }
        fn rewrite(&self, rule: &'static str, change: &'static str, mode: Mode) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} rewrite {rule}: {change}", mode.label()));
        }
    }

    pub fn shadowing(ids: &[&str]) -> Vec<ShadowRule> {
        ids.iter()
            .map(|id| ShadowRule::parse(id).unwrap())
            .collect()
    }

    #[test]
    fn shadowed_refusals_are_reported_and_let_through() {
        let shadow = shadowing(&["A_28271"]);
        let recorded = Recorded::default();
        let gate = Gate::new(&shadow, &recorded);
        let refusal = MatrixError::forbidden("no", "A_28271");
        assert_eq!(gate.check(Err(refusal)), Ok(()));
        let enforced = MatrixError::forbidden("no", "A_25395-02");
        assert_eq!(gate.check(Err(enforced.clone())), Err(enforced));
        assert_eq!(*recorded.0.lock().unwrap(), vec!["refuse A_28271"]);
    }

    #[test]
    fn parts_of_a_rule_follow_its_setting() {
        let shadow = shadowing(&["A_28358"]);
        let gate = Gate::new(&shadow, &Silent);
        assert!(gate.is_shadowed("A_28358-lookup"));
        assert!(!gate.is_shadowed("A_28596"));
    }

    #[test]
    fn rewrites_apply_unless_shadowed_and_are_reported_either_way() {
        let shadow = shadowing(&["A_26515-01"]);
        let recorded = Recorded::default();
        let gate = Gate::new(&shadow, &recorded);
        assert!(!gate.rewrite("A_26515-01", "m.federate false"));
        assert!(gate.rewrite("A_26202/A_26203", "room_version"));
        assert_eq!(
            *recorded.0.lock().unwrap(),
            vec![
                "shadow rewrite A_26515-01: m.federate false",
                "enforce rewrite A_26202/A_26203: room_version"
            ]
        );
    }

    #[test]
    fn boundary_and_unknown_ids_are_refused_when_read() {
        let err = serde_json::from_str::<ShadowRule>("\"x-matrix-missing\"").unwrap_err();
        assert!(err.to_string().contains("federation boundary"), "{err}");
        assert!(serde_json::from_str::<ShadowRule>("\"A_0\"").is_err());
        let ok: ShadowRule = serde_json::from_str("\"A_26515-01\"").unwrap();
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"A_26515-01\"");
    }
}
