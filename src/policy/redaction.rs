//! A_28358: events older than 24 h (`policy.redaction_max_age`) cannot be redacted. The age is
//! measured against now, in whole minutes like the reference, from the target event's
//! `origin_server_ts` as reported by the homeserver.
//!
//! Routes to a redaction: `PUT …/redact/{eventId}/{txnId}`, and an `m.room.redaction` event
//! with `content.redacts` sent through `PUT …/send/m.room.redaction/{txnId}` or `PUT …/state`
//! (how rooms from version 11 on, and Synapse with MSC4169, read a redaction's target).

use std::time::Duration;

use crate::error::MatrixError;
use crate::policy::LookupError;

pub const RULE: &str = "A_28358";
pub const EVENT_TYPE: &str = "m.room.redaction";

/// The target named in a redaction event's content, if any.
pub fn redacts(content: &serde_json::Value) -> Option<&str> {
    content.get("redacts").and_then(serde_json::Value::as_str)
}

/// Source of an event's `origin_server_ts` (ms since the epoch). `room_id`/`event_id` are the
/// raw, still percent-encoded path segments.
pub trait EventTimestampSource: Send + Sync {
    fn origin_server_ts(
        &self,
        room_id: &str,
        event_id: &str,
    ) -> impl Future<Output = Result<i64, LookupError>> + Send;
}

/// Pure part: is an event with `origin_ts_ms` still redactable at `now_ms`?
pub fn check_redaction_age(
    origin_ts_ms: i64,
    now_ms: i64,
    max_age: Duration,
) -> Result<(), MatrixError> {
    let age_minutes = now_ms.saturating_sub(origin_ts_ms) / 60_000;
    let max_minutes = i64::try_from(max_age.as_secs() / 60).unwrap_or(i64::MAX);
    if age_minutes > max_minutes {
        return Err(MatrixError::forbidden(
            "Event cannot be redacted, it is older than 24h - see A_28358",
            RULE,
        ));
    }
    Ok(())
}

/// Look the event up and apply the age rule. An event the homeserver does not have in that
/// room has no age to check: the homeserver answers such a redaction itself (400 for an event
/// of another room). Any other lookup failure refuses the redaction (fail closed).
pub async fn check_redaction<S: EventTimestampSource>(
    source: &S,
    room_id: &str,
    event_id: &str,
    now_ms: i64,
    max_age: Duration,
) -> Result<(), MatrixError> {
    match source.origin_server_ts(room_id, event_id).await {
        Ok(ts) => check_redaction_age(ts, now_ms, max_age),
        Err(LookupError::NotFound) => Ok(()),
        Err(e) => Err(e.into_matrix_error("A_28358-lookup", "EventDetails")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct Fixed(Result<i64, LookupError>);
    impl EventTimestampSource for Fixed {
        async fn origin_server_ts(&self, _: &str, _: &str) -> Result<i64, LookupError> {
            self.0.clone()
        }
    }

    #[test]
    fn older_than_24h_refused_in_whole_minutes() {
        let now = 10_000_000_000;
        assert!(check_redaction_age(now - 1440 * 60_000, now, DAY).is_ok());
        assert!(check_redaction_age(now - 1440 * 60_000 - 59_999, now, DAY).is_ok());
        assert_eq!(
            check_redaction_age(now - 1441 * 60_000, now, DAY)
                .unwrap_err()
                .rule,
            RULE
        );
    }

    #[tokio::test]
    async fn lookup_failures_fail_closed() {
        let err = check_redaction(&Fixed(Err(LookupError::NoAdminToken)), "!r", "$e", 0, DAY)
            .await
            .unwrap_err();
        assert_eq!(err.status, http::StatusCode::FORBIDDEN);
        let err = check_redaction(
            &Fixed(Err(LookupError::Upstream {
                status: 404,
                body: "{}".into(),
            })),
            "!r",
            "$e",
            0,
            DAY,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_GATEWAY);
        assert!(
            check_redaction(&Fixed(Ok(5)), "!r", "$e", 6, DAY)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn event_unknown_in_that_room_is_left_to_the_homeserver() {
        assert!(
            check_redaction(&Fixed(Err(LookupError::NotFound)), "!r", "$e", 0, DAY)
                .await
                .is_ok()
        );
    }
}
