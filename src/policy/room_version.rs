//! A_26202 / A_26203: only the configured room versions (`policy.allowed_room_versions`,
//! default 9 and 10) may be created or upgraded to.

use http::StatusCode;

use crate::error::MatrixError;

pub const RULE: &str = "A_26202/A_26203";

pub fn check_room_version(version: &str, allowed: &[String]) -> Result<(), MatrixError> {
    if allowed.iter().any(|v| v == version) {
        return Ok(());
    }
    Err(MatrixError::new(
        StatusCode::BAD_REQUEST,
        "M_UNSUPPORTED_ROOM_VERSION",
        format!(
            "Room version {version} is not supported. Allowed versions are: {}. - see A_26202, A_26203",
            allowed.join(", ")
        ),
        RULE,
    ))
}

/// `POST /rooms/{roomId}/upgrade`: the version asked for (`new_version`), which must then
/// pass [`check_room_version`].
pub fn upgrade_version(body: &serde_json::Value) -> Result<&str, MatrixError> {
    body.get("new_version")
        .and_then(|v| v.as_str())
        .ok_or_else(crate::policy::body_parse_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allowed() -> Vec<String> {
        vec!["9".into(), "10".into()]
    }

    fn check_upgrade(body: &serde_json::Value, allowed: &[String]) -> Result<(), MatrixError> {
        check_room_version(upgrade_version(body)?, allowed)
    }

    #[test]
    fn upgrade_to_unlisted_version_is_refused_with_reference_message() {
        let err = check_upgrade(&json!({"new_version":"11"}), &allowed()).unwrap_err();
        assert_eq!(err.errcode, "M_UNSUPPORTED_ROOM_VERSION");
        assert_eq!(
            err.error,
            "Room version 11 is not supported. Allowed versions are: 9, 10. - see A_26202, A_26203"
        );
        assert!(check_upgrade(&json!({"new_version":"10"}), &allowed()).is_ok());
        assert_eq!(
            check_upgrade(&json!({}), &allowed()).unwrap_err().rule,
            "body-parse"
        );
    }
}
