//! A_28271: an existing room may not be made public afterwards
//! (`PUT …/state/m.room.join_rules/…` with `join_rule: public`). On TI-M ePA the rooms of
//! insured persons must stay invite-only, so `knock`, `restricted` and `knock_restricted` are
//! refused there too (a room anyone may ask to join is a public room by another name), also
//! when a room starts with such a join rule (createRoom `initial_state`).

use http::StatusCode;
use serde_json::Value;

use crate::config::Flavour;
use crate::error::MatrixError;

pub const RULE: &str = "A_28271";
pub const EVENT_TYPE: &str = "m.room.join_rules";

/// Join rules refused on ePA besides `public`.
const EPA_REFUSED: [&str; 3] = ["knock", "restricted", "knock_restricted"];

/// `content` of an `m.room.join_rules` event sent to an existing room.
pub fn check_join_rules(content: &Value, flavour: Flavour) -> Result<(), MatrixError> {
    let rule = content.get("join_rule").and_then(Value::as_str);
    if rule == Some("public") {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_ROOM_STATE",
            "Subsequent creation of public rooms not permitted",
            RULE,
        ));
    }
    rule.map_or(Ok(()), |rule| check_epa_join_rule(rule, flavour))
}

/// The ePA part alone: a room may never have a join rule that lets anyone ask to join.
pub fn check_epa_join_rule(rule: &str, flavour: Flavour) -> Result<(), MatrixError> {
    if flavour == Flavour::Epa && EPA_REFUSED.contains(&rule) {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_ROOM_STATE",
            format!("Join rule '{rule}' is not permitted in TI-M ePA rooms"),
            RULE,
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn public_join_rule_refused_invite_allowed() {
        for flavour in [Flavour::Pro, Flavour::Epa] {
            assert_eq!(
                check_join_rules(&json!({"join_rule":"public"}), flavour)
                    .unwrap_err()
                    .rule,
                RULE
            );
            assert!(check_join_rules(&json!({"join_rule":"invite"}), flavour).is_ok());
        }
    }

    #[test]
    fn knock_and_restricted_refused_only_on_epa() {
        for rule in ["knock", "restricted", "knock_restricted"] {
            let content = json!({ "join_rule": rule });
            assert!(check_join_rules(&content, Flavour::Pro).is_ok(), "{rule}");
            let err = check_join_rules(&content, Flavour::Epa).unwrap_err();
            assert_eq!(err.errcode, "M_INVALID_ROOM_STATE");
            assert!(err.error.contains(rule));
        }
    }
}
