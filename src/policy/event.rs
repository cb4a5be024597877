//! The content rules every event a client sends must pass, whatever route it takes: threads
//! (A_25395-02) and reactions (A_26228-01, `reaction-rel-type`).
//!
//! Routes that carry event content: `PUT …/send/{eventType}/{txnId}`, `PUT …/state/{eventType}/
//! {stateKey}` (Synapse reads relations of state events too), `PUT …/redact/{eventId}/{txnId}`
//! (the body is the redaction's content), and createRoom, whose `creation_content`,
//! `power_level_content_override` and `initial_state` entries become the room's first events.
//! Membership routes (`POST …/join`, `…/invite`, `…/leave`, …) carry only `reason`, which
//! Synapse copies into the event by itself, so no relation can ride on them.

use serde_json::Value;

use super::shadow::Gate;
use super::{reaction, threads};
use crate::error::MatrixError;

/// Check the content of one event of type `event_type`.
pub fn check_content(
    gate: &Gate<'_>,
    event_type: &str,
    content: &Value,
) -> Result<(), MatrixError> {
    gate.check(threads::check_threads(content))?;
    if event_type == reaction::EVENT_TYPE {
        gate.check(reaction::check_key(content))?;
        gate.check(reaction::check_rel_type(content))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn threads_are_refused_in_any_event_type_reactions_only_in_reactions() {
        let gate = Gate::enforcing();
        let thread = json!({"m.relates_to":{"rel_type":"m.thread","event_id":"$e"}});
        for event_type in ["m.room.message", "m.room.topic", "m.reaction", "x.custom"] {
            assert_eq!(
                check_content(&gate, event_type, &thread).unwrap_err().rule,
                threads::RULE
            );
        }
        let two = json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍👍"}});
        assert_eq!(
            check_content(&gate, "m.reaction", &two).unwrap_err().rule,
            reaction::RULE
        );
        assert!(check_content(&gate, "m.room.topic", &two).is_ok());
    }
}
