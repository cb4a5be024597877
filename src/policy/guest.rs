//! Guest registration (`POST /register?kind=guest`) is disabled: TIM users are always
//! identified accounts.

use crate::error::MatrixError;

pub const RULE: &str = "guest-disabled";

/// `query`: the raw query string of the register request.
pub fn check_register(query: Option<&str>) -> Result<(), MatrixError> {
    let guest = query.is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "kind" && v == "guest")
    });
    if guest {
        return Err(MatrixError::forbidden("Guest access is disabled", RULE));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_kind_refused_user_kind_allowed() {
        assert_eq!(
            check_register(Some("kind=guest")).unwrap_err().error,
            "Guest access is disabled"
        );
        assert!(check_register(Some("kind=user")).is_ok());
        assert!(check_register(None).is_ok());
    }
}
