//! `POST /_matrix/client/v1/login/get_token` is disabled: TIM does not allow an existing
//! session to mint login tokens for further devices (reference behaviour, any method).

use http::StatusCode;

use crate::error::MatrixError;

pub const RULE: &str = "get_token-disabled";
pub const TEMPLATE: &str = "/_matrix/client/v1/login/get_token";

pub fn blocked() -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Unrecognized request",
        RULE,
    )
}
