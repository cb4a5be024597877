//! Third-party (3PID) invites are refused on every route (`third-party-invite`).
//!
//! A 3PID invite names an e-mail address or phone number, not a Matrix ID, so neither the
//! federation rule (A_25534) nor the invitee's permission configuration (A_26021-01) nor the
//! ePA insured rule can be evaluated for it; TIM identifies users by Matrix ID and has no
//! identity servers. The reference refuses them on `POST …/invite` only (its request model
//! requires `user_id`); the routes through which Synapse performs one are:
//!
//! - `POST …/rooms/{roomId}/invite` with `medium` and `address` (Synapse then ignores
//!   `user_id`);
//! - createRoom `invite_3pid`;
//! - an `m.room.third_party_invite` state event (`PUT …/state`, createRoom `initial_state`),
//!   which is what a 3PID invite is in the room;
//! - federation `exchange_third_party_invite` and `3pid/onbind`, which turn such an invite
//!   into a membership.

use serde_json::Value;

use crate::error::MatrixError;

pub const RULE: &str = "third-party-invite";
/// The state event a 3PID invite leaves in the room.
pub const STATE_EVENT_TYPE: &str = "m.room.third_party_invite";

/// The refusal. `POST …/invite` without `user_id` keeps the reference's answer (400, "userId is
/// missing"), which clients and test suites already know.
pub fn refused(reference_answer: bool) -> MatrixError {
    if reference_answer {
        MatrixError::bad_json("InviteUser.Request.userId is missing", RULE)
    } else {
        MatrixError::forbidden(
            "Third-party invites are not supported: invite users by their Matrix ID",
            RULE,
        )
    }
}

/// Is a `POST …/invite` body a 3PID invite (Synapse's test: `medium` and `address` present)?
pub fn is_client_3pid_invite(body: &Value) -> bool {
    body.get("medium").is_some() && body.get("address").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;
    use serde_json::json;

    #[test]
    fn medium_and_address_make_a_3pid_invite_whatever_else_is_there() {
        assert!(is_client_3pid_invite(
            &json!({"medium":"email","address":"a@b.example","user_id":"@a:hs1.test"})
        ));
        assert!(!is_client_3pid_invite(&json!({"user_id":"@a:hs1.test"})));
        assert!(!is_client_3pid_invite(&json!({"medium":"email"})));
    }

    #[test]
    fn refusal_keeps_the_reference_answer_where_it_had_one() {
        let reference = refused(true);
        assert_eq!(
            (reference.status, reference.error.as_str()),
            (
                StatusCode::BAD_REQUEST,
                "InviteUser.Request.userId is missing"
            )
        );
        assert_eq!(refused(false).status, StatusCode::FORBIDDEN);
        assert_eq!(refused(false).rule, RULE);
    }
}
