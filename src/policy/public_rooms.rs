//! A_26520 / A_28590: the room directory is not published over federation; both methods of
//! `/_matrix/federation/v1/publicRooms` are refused before any authentication.

use crate::error::MatrixError;

pub const RULE: &str = "A_26520/A_28590";
pub const TEMPLATE: &str = "/_matrix/federation/v1/publicRooms";

pub fn blocked() -> MatrixError {
    MatrixError::forbidden("A_26520, A_28590", RULE)
}
