//! A_26515-01: public rooms must not federate. On TI-M Pro a public createRoom is rewritten to
//! `creation_content["m.federate"] = false` (only that member is touched); TI-M ePA refuses
//! public rooms outright.

use http::StatusCode;
use serde_json::{Map, Value};

use crate::config::Flavour;
use crate::error::MatrixError;

pub const RULE: &str = "A_26515-01";

fn is_public(create_room: &Value) -> bool {
    create_room.get("visibility").and_then(Value::as_str) == Some("public")
        || create_room.get("preset").and_then(Value::as_str) == Some("public_chat")
}

/// Apply the rule in place; `Ok(true)` when the body was changed.
pub fn apply_public_room(create_room: &mut Value, flavour: Flavour) -> Result<bool, MatrixError> {
    if !is_public(create_room) {
        return Ok(false);
    }
    if flavour == Flavour::Epa {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_ROOM_STATE",
            "Creation of a public room is not allowed",
            RULE,
        ));
    }
    let Some(obj) = create_room.as_object_mut() else {
        return Ok(false);
    };
    let content = obj
        .entry("creation_content")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(content) = content.as_object_mut() else {
        return Err(MatrixError::bad_json(
            "Failed to deserialize request body",
            "body-parse",
        ));
    };
    if content.get("m.federate") == Some(&Value::Bool(false)) {
        return Ok(false);
    }
    content.insert("m.federate".to_owned(), Value::Bool(false));
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn public_room_gets_m_federate_false_and_keeps_unknown_fields() {
        let mut body = json!({"zz_unknown":1,"preset":"public_chat","creation_content":{"x.custom":"k","m.federate":true},"a":2});
        assert!(apply_public_room(&mut body, Flavour::Pro).unwrap());
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"zz_unknown":1,"preset":"public_chat","creation_content":{"x.custom":"k","m.federate":false},"a":2}"#
        );
    }

    #[test]
    fn private_rooms_untouched_and_epa_refuses_public() {
        let mut private = json!({"preset":"private_chat"});
        assert!(!apply_public_room(&mut private, Flavour::Pro).unwrap());
        assert_eq!(private, json!({"preset":"private_chat"}));
        let mut public = json!({"visibility":"public"});
        let err = apply_public_room(&mut public, Flavour::Epa).unwrap_err();
        assert_eq!(err.errcode, "M_INVALID_ROOM_STATE");
    }
}
