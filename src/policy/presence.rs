//! Presence `status_msg` length limit (`policy.presence_status_max`, default 250, counted in
//! UTF-16 code units like the reference).

use http::StatusCode;
use serde_json::Value;

use crate::error::MatrixError;

pub const RULE: &str = "presence-status-length";

pub fn check_presence(body: &Value, max: usize) -> Result<(), MatrixError> {
    let len = body
        .get("status_msg")
        .and_then(Value::as_str)
        .map(|s| s.encode_utf16().count())
        .unwrap_or(0);
    if len > max {
        return Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            "M_TOO_LARGE",
            format!("'status_msg' is longer than {max} characters."),
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
    fn long_status_refused_limit_inclusive() {
        assert!(
            check_presence(
                &json!({"presence":"online","status_msg":"x".repeat(250)}),
                250
            )
            .is_ok()
        );
        let err = check_presence(&json!({"status_msg":"x".repeat(251)}), 250).unwrap_err();
        assert_eq!(err.error, "'status_msg' is longer than 250 characters.");
        assert_eq!(err.status, StatusCode::FORBIDDEN);
    }
}
