//! A_28271: an existing room may not be made public afterwards
//! (`PUT …/state/m.room.join_rules/…` with `join_rule: public`).

use http::StatusCode;
use serde_json::Value;

use crate::error::MatrixError;

pub const RULE: &str = "A_28271";
pub const EVENT_TYPE: &str = "m.room.join_rules";

pub fn check_join_rules(content: &Value) -> Result<(), MatrixError> {
    if content.get("join_rule").and_then(Value::as_str) == Some("public") {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_ROOM_STATE",
            "Subsequent creation of public rooms not permitted",
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
        assert_eq!(
            check_join_rules(&json!({"join_rule":"public"}))
                .unwrap_err()
                .rule,
            RULE
        );
        assert!(check_join_rules(&json!({"join_rule":"invite"})).is_ok());
    }
}
