//! A_28596: rooms of type `de.gematik.tim.roomtype.default.v2` may not be created (read from
//! `creation_content.type`, the Matrix field for room types).

use serde_json::Value;

use crate::error::MatrixError;

pub const RULE: &str = "A_28596";
pub const FORBIDDEN_TYPE: &str = "de.gematik.tim.roomtype.default.v2";

pub fn check_room_type(create_room: &Value) -> Result<(), MatrixError> {
    let room_type = create_room
        .get("creation_content")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str);
    if room_type == Some(FORBIDDEN_TYPE) {
        return Err(MatrixError::bad_json(
            format!("Room type not permitted: {FORBIDDEN_TYPE}"),
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
    fn default_v2_room_type_is_refused_other_types_pass() {
        let err =
            check_room_type(&json!({"creation_content":{"type":FORBIDDEN_TYPE}})).unwrap_err();
        assert_eq!(
            err.error,
            "Room type not permitted: de.gematik.tim.roomtype.default.v2"
        );
        assert!(check_room_type(&json!({"creation_content":{"type":"m.space"}})).is_ok());
        assert!(check_room_type(&json!({"type": FORBIDDEN_TYPE})).is_ok());
    }
}
