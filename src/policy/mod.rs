//! TIM rules, one per file; each file's first doc comment names its requirement number.
//!
//! Rules are pure functions over parsed input and state snapshots. The few that need data
//! from elsewhere (account data, event timestamps, federation membership) take it through the
//! small traits defined here and in their files, so they are unit-testable without a network.

pub mod blocked_endpoints;
pub mod coverage;
pub mod create_room;
pub mod data;
pub mod event;
pub mod event_domains;
pub mod guest;
pub mod invite;
pub mod join_rules;
pub mod media_server;
pub mod permission_config;
pub mod presence;
pub mod public_room;
pub mod reaction;
pub mod redaction;
pub mod registry;
pub mod room_type;
pub mod room_version;
pub mod shadow;
pub mod third_party_invite;
pub mod threads;
pub mod versions;

use http::StatusCode;
use serde_json::{Map, Value};

use crate::error::MatrixError;
use crate::federation::list::{FederationHandle, Membership};
use crate::matrix::ids::UserId;

pub use blocked_endpoints::blocked_endpoint;

/// Check that every policy table compiled into the binary can be read (blocked endpoints,
/// rule registry, coverage matrix). The inbound listener refuses to start otherwise.
pub fn check_tables() -> Result<(), &'static data::DataError> {
    blocked_endpoints::table()?;
    registry::rules()?;
    coverage::entries()?;
    Ok(())
}

/// A failed lookup at the homeserver's admin API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no admin access token configured")]
    NoAdminToken,
    #[error("{0}")]
    Transport(String),
    /// The homeserver answered `404 M_NOT_FOUND`: it has no such user, or no such event in
    /// that room. Not a failure: each rule decides what "nothing there" means for it.
    #[error("homeserver has no such entry")]
    NotFound,
    #[error("homeserver answered {status}")]
    Upstream { status: u16, body: String },
    #[error("unexpected answer: {0}")]
    Malformed(String),
}

impl LookupError {
    /// Fail closed: missing token or transport problems are 403, upstream errors 502 with the
    /// homeserver's body (as the reference does). Rules handle [`LookupError::NotFound`]
    /// before they get here; one that does not fails closed with a 403. Apart from that, the
    /// homeserver (or, for a missing admin token, the proxy's configuration) failed, not the
    /// client.
    pub fn into_matrix_error(self, rule: &'static str, api: &str) -> MatrixError {
        let error = match &self {
            LookupError::NotFound => {
                MatrixError::forbidden(format!("Could not use {api} API, cause: not found"), rule)
            }
            LookupError::NoAdminToken => MatrixError::forbidden(
                "Could not get admin access token cause: no admin token configured",
                rule,
            )
            .from_internal(),
            LookupError::Transport(e) | LookupError::Malformed(e) => {
                MatrixError::forbidden(format!("Could not use {api} API, cause: {e}"), rule)
                    .from_upstream()
            }
            LookupError::Upstream { body, .. } => MatrixError::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                format!("Could not use {api} API, cause: {body}"),
                rule,
            ),
        };
        error.caused_by(self)
    }
}

/// Global account data of a (local) user: event type → content.
pub trait AccountDataSource: Send + Sync {
    fn global_account_data(
        &self,
        user: &UserId,
    ) -> impl Future<Output = Result<Map<String, Value>, LookupError>> + Send;
}

/// Federation membership of a server name (with refresh-on-miss where the source has it).
pub trait FederationList: Send + Sync {
    fn membership(&self, server_name: &str) -> impl Future<Output = Membership> + Send;
}

impl FederationList for FederationHandle {
    async fn membership(&self, server_name: &str) -> Membership {
        self.check(server_name).await
    }
}

/// Parse a JSON object body; anything else is the reference's `body-parse` error.
pub fn parse_object(body: &[u8]) -> Result<Value, MatrixError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(body_parse_error()),
    }
}

/// An event content body reduced to its `m.relates_to` (the only part the message rules
/// read), without building the rest: message bodies are the most frequent request bodies and
/// can be large. The body must still be one well-formed JSON object.
pub fn parse_relation(body: &[u8]) -> Result<Value, MatrixError> {
    #[derive(serde::Deserialize)]
    struct RelationOnly {
        #[serde(rename = "m.relates_to", default)]
        relates_to: Option<Value>,
    }
    // A derived struct would also accept a JSON array; content must be an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(body_parse_error());
    }
    let parsed: RelationOnly = serde_json::from_slice(body).map_err(|_| body_parse_error())?;
    let mut content = serde_json::Map::new();
    if let Some(relation) = parsed.relates_to {
        content.insert("m.relates_to".to_owned(), relation);
    }
    Ok(Value::Object(content))
}

pub fn body_parse_error() -> MatrixError {
    MatrixError::bad_json("Failed to deserialize request body", "body-parse")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_is_extracted_and_non_objects_refused() {
        let v = parse_relation(br#" {"body":"x","m.relates_to":{"rel_type":"m.thread"}}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"m.relates_to":{"rel_type":"m.thread"}})
        );
        assert_eq!(
            parse_relation(br#"{"body":"x"}"#).unwrap(),
            serde_json::json!({})
        );
        for bad in [&b"[1]"[..], b"\"x\"", b"{", b"", b"{\"a\":1}x"] {
            assert_eq!(parse_relation(bad).unwrap_err().rule, "body-parse");
        }
    }

    #[test]
    fn non_object_bodies_are_body_parse_errors() {
        assert_eq!(parse_object(b"[1]").unwrap_err().rule, "body-parse");
        assert_eq!(parse_object(b"{").unwrap_err().errcode, "M_BAD_JSON");
        assert!(parse_object(b"{}").is_ok());
    }
}
