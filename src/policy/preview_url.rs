//! A_26344: URL previews are disabled (the homeserver would fetch arbitrary URLs on behalf of
//! users and leak what they read).

use http::StatusCode;

use crate::error::MatrixError;

pub const RULE: &str = "A_26344";
pub const TEMPLATES: [&str; 2] = [
    "/_matrix/media/v3/preview_url",
    "/_matrix/client/v1/media/preview_url",
];

pub fn blocked() -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Unrecognized request",
        RULE,
    )
}
