//! A_25368-01: at most one user may be invited at room creation. This file also orchestrates
//! the other createRoom rules, because one createRoom body is a room's whole start and each
//! part of it is another route to what the rules stop:
//!
//! - `invite`, `invite_3pid` and `m.room.member` invites in `initial_state` are all invites
//!   (A_25368-01 counts them together; the invite rules of [`super::invite`] follow per user,
//!   3PID invites are refused by [`super::third_party_invite`]);
//! - the room version (A_26202/A_26203) and room type (A_28596);
//! - `creation_content`, `power_level_content_override` and every `initial_state` entry become
//!   events, so they pass the content rules of [`super::event`];
//! - the join rule the room starts with comes from `initial_state` when it has one (Synapse
//!   applies it over the preset), so a `public` join rule there makes a public room
//!   (A_26515-01) and on ePA a `knock`/`restricted` one is refused (A_28271).
//!
//! The body is edited as a JSON value in place, so unknown top-level and `creation_content`
//! members survive untouched (member order is kept too). Every outcome passes the request's
//! [`Gate`], so a shadowed rule neither refuses nor rewrites.

use serde_json::{Map, Value};

use crate::config::PolicyConfig;
use crate::error::MatrixError;
use crate::matrix::ids::UserId;
use crate::policy::public_room::{self, PublicRoom};
use crate::policy::shadow::Gate;
use crate::policy::{
    body_parse_error, event, invite, join_rules, room_type, room_version, third_party_invite,
};

pub const RULE: &str = "A_25368-01";
const MEMBER: &str = "m.room.member";
/// What the room-version rewrite does, for logs.
const VERSION_REWRITE: &str = "room_version set to policy.default_room_version";

/// What the listener must still do after the checks that need no lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateRoomPlan {
    /// Users invited by Matrix ID, each to be checked like an invite (more than one only when
    /// A_25368-01 is shadowed).
    pub invitees: Vec<UserId>,
    /// The body was changed and must be re-serialised.
    pub rewritten: bool,
}

/// One `initial_state` entry, as Synapse reads it (`state_key` defaults to "").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitialState<'a> {
    pub event_type: &'a str,
    pub state_key: &'a str,
    pub content: &'a Value,
}

/// The `initial_state` entries; anything Synapse could not read is a body error.
pub fn initial_state(
    create_room: &Map<String, Value>,
) -> Result<Vec<InitialState<'_>>, MatrixError> {
    let entries = match create_room.get("initial_state") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(body_parse_error()),
    };
    entries
        .iter()
        .map(|entry| {
            let event_type = entry.get("type").and_then(Value::as_str);
            let state_key = match entry.get("state_key") {
                None => Some(""),
                Some(key) => key.as_str(),
            };
            let content = entry.get("content").filter(|c| c.is_object());
            match (event_type, state_key, content) {
                (Some(event_type), Some(state_key), Some(content)) => Ok(InitialState {
                    event_type,
                    state_key,
                    content,
                }),
                _ => Err(body_parse_error()),
            }
        })
        .collect()
}

/// The users a createRoom body invites by Matrix ID, and how many 3PID invites it makes.
fn invited(
    create_room: &Map<String, Value>,
    state: &[InitialState<'_>],
) -> Result<(Vec<UserId>, usize), MatrixError> {
    let mut users = match create_room.get("invite") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .and_then(|id| UserId::parse(id).ok())
                    .ok_or_else(body_parse_error)
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(body_parse_error()),
    };
    for entry in state.iter().filter(|e| e.event_type == MEMBER) {
        users.extend(invite::member_invitee(entry.state_key, entry.content)?);
    }
    let third_party = match create_room.get("invite_3pid") {
        None | Some(Value::Null) => 0,
        Some(Value::Array(items)) => items.len(),
        Some(_) => return Err(body_parse_error()),
    } + state
        .iter()
        .filter(|e| e.event_type == third_party_invite::STATE_EVENT_TYPE)
        .count();
    Ok((users, third_party))
}

/// The join rule the room starts with, when `initial_state` sets it (the last entry wins, as
/// in Synapse's map of `initial_state`).
fn initial_join_rule<'a>(state: &[InitialState<'a>]) -> Option<&'a str> {
    state
        .iter()
        .rev()
        .find(|e| e.event_type == join_rules::EVENT_TYPE && e.state_key.is_empty())
        .and_then(|e| e.content.get("join_rule"))
        .and_then(Value::as_str)
}

pub fn prepare_create_room(
    body: &mut Value,
    policy: &PolicyConfig,
    gate: &Gate<'_>,
) -> Result<CreateRoomPlan, MatrixError> {
    let obj = body.as_object().ok_or_else(body_parse_error)?;
    let state = initial_state(obj)?;
    let (invitees, third_party) = invited(obj, &state)?;
    if invitees.len() + third_party > 1 {
        gate.check(Err(MatrixError::forbidden(
            "Only one user can be invited at room creation. - see A_25368-01",
            RULE,
        )))?;
    }
    if third_party > 0 {
        gate.check(Err(third_party_invite::refused(false)))?;
    }
    let inject_version = match obj.get("room_version") {
        None | Some(Value::Null) => true,
        Some(Value::String(v)) => {
            gate.check(room_version::check_room_version(
                v,
                &policy.allowed_room_versions,
            ))?;
            false
        }
        Some(_) => return Err(body_parse_error()),
    };
    gate.check(room_type::check_room_type(body))?;
    for (event_type, key) in [
        ("m.room.create", "creation_content"),
        ("m.room.power_levels", "power_level_content_override"),
    ] {
        if let Some(content) = obj.get(key) {
            event::check_content(gate, event_type, content)?;
        }
    }
    for entry in &state {
        event::check_content(gate, entry.event_type, entry.content)?;
    }
    let join_rule = initial_join_rule(&state);
    if let Some(rule) = join_rule {
        gate.check(join_rules::check_epa_join_rule(rule, policy.flavour))?;
    }
    let public = public_room::decide(body, join_rule, policy.flavour);

    let mut rewritten = false;
    match public {
        PublicRoom::Unchanged => {}
        PublicRoom::Refuse(refusal) => gate.check(Err(refusal))?,
        PublicRoom::StopFederation => {
            if gate.rewrite(public_room::RULE, public_room::REWRITE) {
                public_room::stop_federation(body)?;
                rewritten = true;
            }
        }
    }
    if inject_version && gate.rewrite(room_version::RULE, VERSION_REWRITE) {
        let obj = body.as_object_mut().ok_or_else(body_parse_error)?;
        obj.insert(
            "room_version".to_owned(),
            Value::String(policy.default_room_version.clone()),
        );
        rewritten = true;
    }
    Ok(CreateRoomPlan {
        invitees,
        rewritten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flavour;
    use crate::policy::shadow::tests::{Recorded, shadowing};
    use serde_json::json;

    fn prepare(body: &mut Value) -> Result<CreateRoomPlan, MatrixError> {
        prepare_create_room(body, &PolicyConfig::default(), &Gate::enforcing())
    }

    fn epa() -> PolicyConfig {
        PolicyConfig {
            flavour: Flavour::Epa,
            ..PolicyConfig::default()
        }
    }

    fn member(user: &str, membership: &str) -> Value {
        json!({"type":"m.room.member","state_key":user,"content":{"membership":membership}})
    }

    fn join_rule(rule: &str) -> Value {
        json!({"type":"m.room.join_rules","content":{"join_rule":rule}})
    }

    #[test]
    fn more_than_one_invitee_refused() {
        let err = prepare(&mut json!({"invite":["@a:x","@b:x"]})).unwrap_err();
        assert_eq!((err.status.as_u16(), err.rule), (403, RULE));
    }

    #[test]
    fn invitees_of_initial_state_and_invite_3pid_count_too() {
        let mut body =
            json!({"invite":["@a:hs1.test"],"initial_state":[member("@b:hs3.test","invite")]});
        assert_eq!(prepare(&mut body).unwrap_err().rule, RULE);
        let mut body =
            json!({"invite":["@a:hs1.test"],"invite_3pid":[{"medium":"email","address":"a@b"}]});
        assert_eq!(prepare(&mut body).unwrap_err().rule, RULE);
        // One invite in initial_state alone is the one invitee, checked like an invite.
        let mut body =
            json!({"initial_state":[member("@b:hs3.test","invite"), member("@c:hs1.test","join")]});
        let plan = prepare(&mut body).unwrap();
        assert_eq!(plan.invitees.len(), 1);
        assert_eq!(plan.invitees[0].as_str(), "@b:hs3.test");
    }

    #[test]
    fn third_party_invites_refused_on_both_createroom_routes() {
        let mut body = json!({"invite_3pid":[{"medium":"email","address":"a@b"}]});
        assert_eq!(
            prepare(&mut body).unwrap_err().rule,
            third_party_invite::RULE
        );
        let mut body = json!({"initial_state":[{"type":"m.room.third_party_invite","state_key":"tok","content":{"display_name":"a"}}]});
        assert_eq!(
            prepare(&mut body).unwrap_err().rule,
            third_party_invite::RULE
        );
    }

    #[test]
    fn default_version_injected_and_unknown_fields_survive() {
        let mut body = json!({"zz":{"nested":[1,2]},"invite":["@a:hs1.test"],
            "creation_content":{"custom.field":true},"preset":"public_chat","aa":null});
        let plan = prepare(&mut body).unwrap();
        assert!(plan.rewritten);
        assert_eq!(plan.invitees[0].as_str(), "@a:hs1.test");
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"zz":{"nested":[1,2]},"invite":["@a:hs1.test"],"creation_content":{"custom.field":true,"m.federate":false},"preset":"public_chat","aa":null,"room_version":"10"}"#
        );
    }

    #[test]
    fn unlisted_version_and_forbidden_type_refused() {
        assert_eq!(
            prepare(&mut json!({"room_version":"11"})).unwrap_err().rule,
            "A_26202/A_26203"
        );
        let mut typed = json!({"creation_content":{"type":"de.gematik.tim.roomtype.default.v2"}});
        assert_eq!(prepare(&mut typed).unwrap_err().rule, "A_28596");
        let mut ok = json!({"room_version":"9"});
        assert!(!prepare(&mut ok).unwrap().rewritten);
    }

    #[test]
    fn public_join_rule_in_initial_state_is_a_public_room() {
        let mut body = json!({"preset":"private_chat","room_version":"10","initial_state":[join_rule("public")]});
        assert!(prepare(&mut body).unwrap().rewritten);
        assert_eq!(body["creation_content"]["m.federate"], false);
        let mut body = json!({"preset":"private_chat","initial_state":[join_rule("public")]});
        let err = prepare_create_room(&mut body, &epa(), &Gate::enforcing()).unwrap_err();
        assert_eq!(err.rule, public_room::RULE);
        // Synapse keeps the last entry for a (type, state key): public, then invite, is private.
        let mut body =
            json!({"room_version":"10","initial_state":[join_rule("public"), join_rule("invite")]});
        assert!(!prepare(&mut body).unwrap().rewritten);
    }

    #[test]
    fn epa_refuses_knock_and_restricted_join_rules_at_creation() {
        for rule in ["knock", "restricted", "knock_restricted"] {
            let mut body = json!({"initial_state":[join_rule(rule)]});
            let err = prepare_create_room(&mut body, &epa(), &Gate::enforcing()).unwrap_err();
            assert_eq!(err.rule, join_rules::RULE, "{rule}");
            let mut body = json!({"initial_state":[join_rule(rule)]});
            assert!(prepare(&mut body).is_ok(), "{rule} on Pro");
        }
    }

    #[test]
    fn threads_and_reactions_refused_in_every_content_of_the_body() {
        let thread = json!({"m.relates_to":{"rel_type":"m.thread","event_id":"$e"}});
        for mut body in [
            json!({"creation_content": thread}),
            json!({"power_level_content_override": thread}),
            json!({"initial_state":[{"type":"m.room.topic","content":thread}]}),
        ] {
            assert_eq!(prepare(&mut body).unwrap_err().rule, "A_25395-02", "{body}");
        }
        let mut body = json!({"initial_state":[{"type":"m.reaction","state_key":"k","content":
            {"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"ab"}}}]});
        assert_eq!(prepare(&mut body).unwrap_err().rule, "A_26228-01");
    }

    #[test]
    fn malformed_initial_state_is_a_body_error() {
        for state in [
            json!({"type":"m.room.name"}),
            json!([{"content":{}}]),
            json!([{"type":"m.room.name","state_key":1,"content":{}}]),
            json!([{"type":"m.room.name","content":"x"}]),
        ] {
            let mut body = json!({ "initial_state": state });
            assert_eq!(prepare(&mut body).unwrap_err().rule, "body-parse", "{body}");
        }
    }

    #[test]
    fn shadowed_rewrites_leave_the_body_unchanged() {
        let shadow = shadowing(&["A_26515-01", "A_26202/A_26203", "A_25368-01"]);
        let recorded = Recorded::default();
        let gate = Gate::new(&shadow, &recorded);
        let original = json!({"preset":"public_chat","invite":["@a:hs1.test","@b:hs1.test"]});
        let mut body = original.clone();
        let plan = prepare_create_room(&mut body, &PolicyConfig::default(), &gate).unwrap();
        assert!(!plan.rewritten);
        assert_eq!(body, original);
        assert_eq!(plan.invitees.len(), 2);
        assert_eq!(
            *recorded.0.lock().unwrap(),
            vec![
                "refuse A_25368-01",
                "shadow rewrite A_26515-01: creation_content.m.federate set to false",
                "shadow rewrite A_26202/A_26203: room_version set to policy.default_room_version"
            ]
        );
    }
}
