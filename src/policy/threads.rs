//! A_25395-02: message threads are not supported; events relating with `rel_type: m.thread`
//! are refused, and so is the unstable `io.element.thread`, which clients still display as a
//! thread. `m.relates_to` stays in clear text in encrypted events, so this works for
//! `m.room.encrypted` too. Which routes carry event content is decided in [`super::event`].

use serde_json::Value;

use crate::error::MatrixError;

pub const RULE: &str = "A_25395-02";
/// Relation types that make an event part of a thread.
pub const THREAD_REL_TYPES: [&str; 2] = ["m.thread", "io.element.thread"];

pub fn check_threads(content: &Value) -> Result<(), MatrixError> {
    let rel_type = content
        .get("m.relates_to")
        .and_then(|r| r.get("rel_type"))
        .and_then(Value::as_str);
    if rel_type.is_some_and(|r| THREAD_REL_TYPES.contains(&r)) {
        return Err(MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            "M_FORBIDDEN",
            "Message threading is not supported \u{2013} see A_25395-02",
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
    fn thread_relation_refused_reply_allowed() {
        let err = check_threads(&json!({"m.relates_to":{"rel_type":"m.thread","event_id":"$e"}}))
            .unwrap_err();
        assert_eq!(
            err.error,
            "Message threading is not supported – see A_25395-02"
        );
        assert!(
            check_threads(&json!({"m.relates_to":{"m.in_reply_to":{"event_id":"$e"}}})).is_ok()
        );
        assert!(check_threads(&json!({"body":"hi"})).is_ok());
    }

    #[test]
    fn unstable_thread_relation_refused_too() {
        let content = json!({"m.relates_to":{"rel_type":"io.element.thread","event_id":"$e"}});
        assert_eq!(check_threads(&content).unwrap_err().rule, RULE);
    }
}
