//! A_25368-01: at most one user may be invited at room creation. This file also orchestrates
//! the other createRoom rules (room type A_28596, room version A_26202/A_26203, public rooms
//! A_26515-01); the invitee's federation/permission checks follow in [`super::invite`].
//!
//! The body is edited as a JSON value in place, so unknown top-level and `creation_content`
//! members survive untouched (member order is kept too).

use serde_json::Value;

use crate::config::PolicyConfig;
use crate::error::MatrixError;
use crate::matrix::ids::UserId;
use crate::policy::{body_parse_error, public_room, room_type, room_version};

pub const RULE: &str = "A_25368-01";

/// What the listener must still do after the pure checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoomPlan {
    /// The one invitee, to be checked like an invite.
    pub invitee: Option<UserId>,
    /// The body was changed and must be re-serialised.
    pub rewritten: bool,
}

pub fn prepare_create_room(
    body: &mut Value,
    policy: &PolicyConfig,
) -> Result<CreateRoomPlan, MatrixError> {
    let obj = body.as_object_mut().ok_or_else(body_parse_error)?;
    let invitees: Vec<&str> = match obj.get("invite") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or_else(body_parse_error))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(body_parse_error()),
    };
    if invitees.len() > 1 {
        return Err(MatrixError::forbidden(
            "Only one user can be invited at room creation. - see A_25368-01",
            RULE,
        ));
    }
    let invitee = match invitees.first() {
        Some(id) => Some(UserId::parse(id).map_err(|_| body_parse_error())?),
        None => None,
    };
    let mut rewritten = false;
    match obj.get("room_version") {
        None | Some(Value::Null) => {
            obj.insert(
                "room_version".to_owned(),
                Value::String(policy.default_room_version.clone()),
            );
            rewritten = true;
        }
        Some(Value::String(v)) => {
            room_version::check_room_version(v, &policy.allowed_room_versions)?
        }
        Some(_) => return Err(body_parse_error()),
    }
    room_type::check_room_type(body)?;
    rewritten |= public_room::apply_public_room(body, policy.flavour)?;
    Ok(CreateRoomPlan { invitee, rewritten })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn more_than_one_invitee_refused() {
        let mut body = json!({"invite":["@a:x","@b:x"]});
        let err = prepare_create_room(&mut body, &PolicyConfig::default()).unwrap_err();
        assert_eq!((err.status.as_u16(), err.rule), (403, RULE));
    }

    #[test]
    fn default_version_injected_and_unknown_fields_survive() {
        let mut body = json!({"zz":{"nested":[1,2]},"invite":["@a:hs1.test"],
            "creation_content":{"custom.field":true},"preset":"public_chat","aa":null});
        let plan = prepare_create_room(&mut body, &PolicyConfig::default()).unwrap();
        assert!(plan.rewritten);
        assert_eq!(plan.invitee.unwrap().as_str(), "@a:hs1.test");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"zz":{"nested":[1,2]},"invite":["@a:hs1.test"],"creation_content":{"custom.field":true,"m.federate":false},"preset":"public_chat","aa":null,"room_version":"10"}"#
        );
    }

    #[test]
    fn unlisted_version_and_forbidden_type_refused() {
        let p = PolicyConfig::default();
        assert_eq!(
            prepare_create_room(&mut json!({"room_version":"11"}), &p)
                .unwrap_err()
                .rule,
            "A_26202/A_26203"
        );
        let mut typed = json!({"creation_content":{"type":"de.gematik.tim.roomtype.default.v2"}});
        assert_eq!(
            prepare_create_room(&mut typed, &p).unwrap_err().rule,
            "A_28596"
        );
        let mut ok = json!({"room_version":"9"});
        assert!(!prepare_create_room(&mut ok, &p).unwrap().rewritten);
    }
}
