//! A_26262: the legacy media configuration endpoint `GET /_matrix/media/v3/config` is not
//! offered (clients use the authenticated `/_matrix/client/v1/media/config`).

use http::StatusCode;

use crate::error::MatrixError;

pub const RULE: &str = "A_26262";
pub const TEMPLATE: &str = "/_matrix/media/v3/config";

pub fn blocked() -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Unrecognized request",
        RULE,
    )
}
