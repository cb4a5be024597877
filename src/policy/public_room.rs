//! A_26515-01: public rooms must not federate. On TI-M Pro a public createRoom is rewritten to
//! `creation_content["m.federate"] = false` (only that member is touched); TI-M ePA refuses
//! public rooms outright.
//!
//! A room is public when its `preset` is `public_chat`, its `visibility` is `public` (Synapse
//! then defaults the preset to `public_chat`), or it starts with the join rule `public` from
//! `initial_state`, which Synapse applies over the preset.

use http::StatusCode;
use serde_json::{Map, Value};

use crate::config::Flavour;
use crate::error::MatrixError;
use crate::policy::body_parse_error;

pub const RULE: &str = "A_26515-01";
/// What the Pro rewrite does, for logs.
pub const REWRITE: &str = "creation_content.m.federate set to false";

/// What the rule asks for one createRoom body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicRoom {
    /// Not public, or already `m.federate: false`.
    Unchanged,
    /// Pro: set `creation_content["m.federate"] = false`.
    StopFederation,
    /// ePA: no public rooms.
    Refuse(MatrixError),
}

/// `initial_join_rule`: the join rule `initial_state` gives the room, if any.
pub fn decide(
    create_room: &Value,
    initial_join_rule: Option<&str>,
    flavour: Flavour,
) -> PublicRoom {
    let public = create_room.get("visibility").and_then(Value::as_str) == Some("public")
        || create_room.get("preset").and_then(Value::as_str) == Some("public_chat")
        || initial_join_rule == Some("public");
    if !public {
        return PublicRoom::Unchanged;
    }
    if flavour == Flavour::Epa {
        return PublicRoom::Refuse(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_ROOM_STATE",
            "Creation of a public room is not allowed",
            RULE,
        ));
    }
    let federate = create_room
        .get("creation_content")
        .and_then(|c| c.get("m.federate"));
    if federate == Some(&Value::Bool(false)) {
        PublicRoom::Unchanged
    } else {
        PublicRoom::StopFederation
    }
}

/// Apply [`PublicRoom::StopFederation`]: set `m.federate: false`, keeping every other member.
pub fn stop_federation(create_room: &mut Value) -> Result<(), MatrixError> {
    let obj = create_room.as_object_mut().ok_or_else(body_parse_error)?;
    let content = obj
        .entry("creation_content")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
        .ok_or_else(body_parse_error)?;
    content.insert("m.federate".to_owned(), Value::Bool(false));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn public_room_gets_m_federate_false_and_keeps_unknown_fields() {
        let mut body = json!({"zz_unknown":1,"preset":"public_chat","creation_content":{"x.custom":"k","m.federate":true},"a":2});
        assert_eq!(
            decide(&body, None, Flavour::Pro),
            PublicRoom::StopFederation
        );
        stop_federation(&mut body).unwrap();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"zz_unknown":1,"preset":"public_chat","creation_content":{"x.custom":"k","m.federate":false},"a":2}"#
        );
        assert_eq!(decide(&body, None, Flavour::Pro), PublicRoom::Unchanged);
    }

    #[test]
    fn private_rooms_untouched_and_epa_refuses_public() {
        let private = json!({"preset":"private_chat"});
        assert_eq!(decide(&private, None, Flavour::Pro), PublicRoom::Unchanged);
        let PublicRoom::Refuse(err) = decide(&json!({"visibility":"public"}), None, Flavour::Epa)
        else {
            panic!("ePA must refuse public rooms");
        };
        assert_eq!(err.errcode, "M_INVALID_ROOM_STATE");
    }

    #[test]
    fn initial_public_join_rule_makes_a_private_preset_public() {
        let body = json!({"preset":"private_chat"});
        assert_eq!(
            decide(&body, Some("public"), Flavour::Pro),
            PublicRoom::StopFederation
        );
        assert!(matches!(
            decide(&body, Some("public"), Flavour::Epa),
            PublicRoom::Refuse(_)
        ));
        assert_eq!(
            decide(&body, Some("invite"), Flavour::Pro),
            PublicRoom::Unchanged
        );
    }

    #[test]
    fn creation_content_that_is_not_an_object_is_a_body_error() {
        let mut body = json!({"preset":"public_chat","creation_content":[1]});
        assert_eq!(stop_federation(&mut body).unwrap_err().rule, "body-parse");
    }
}
