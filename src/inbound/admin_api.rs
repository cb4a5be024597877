//! The homeserver admin API calls rules need: global account data (permission config) and
//! event details (redaction age). The admin token is read on each call
//! (`homeserver.admin_token()`), so a token file written after start-up is picked up.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Map, Value};

use crate::config::HomeserverConfig;
use crate::matrix::ids::UserId;
use crate::policy::redaction::EventTimestampSource;
use crate::policy::{AccountDataSource, LookupError};

/// Unreserved characters stay, everything else is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Re-encode one raw path segment for a URL built by the proxy; `.`/`..` are refused so a
/// crafted ID cannot walk to another admin endpoint.
fn segment(raw: &str) -> Result<String, LookupError> {
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    if decoded.is_empty() || decoded == "." || decoded == ".." {
        return Err(LookupError::Malformed("invalid path segment".to_owned()));
    }
    Ok(utf8_percent_encode(&decoded, SEGMENT).to_string())
}

/// A homeserver's "there is no such thing": `404` with a Matrix error body. The errcode varies
/// (Synapse: `M_NOT_FOUND` "User not found", but `M_UNKNOWN` "No row found (events)" for an
/// event of another room). A 404 without a Matrix body (an admin API that is not routed, a
/// proxy in between) is not that, and stays a failure.
fn is_matrix_not_found(status: reqwest::StatusCode, body: &str) -> bool {
    status == reqwest::StatusCode::NOT_FOUND
        && serde_json::from_str::<Value>(body)
            .ok()
            .is_some_and(|v| v.get("errcode").is_some_and(Value::is_string))
}

#[derive(Debug, Clone)]
pub struct AdminApi {
    client: reqwest::Client,
    config: HomeserverConfig,
}

impl AdminApi {
    pub fn new(config: &HomeserverConfig, client: reqwest::Client) -> Self {
        Self {
            client,
            config: config.clone(),
        }
    }

    async fn get(&self, path: &str) -> Result<Value, LookupError> {
        let token = self.config.admin_token().ok_or(LookupError::NoAdminToken)?;
        let url = format!(
            "{}{}",
            self.config.admin_base().as_str().trim_end_matches('/'),
            path
        );
        let response = self
            .client
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| LookupError::Transport(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            if is_matrix_not_found(status, &body) {
                return Err(LookupError::NotFound);
            }
            return Err(LookupError::Upstream {
                status: status.as_u16(),
                body,
            });
        }
        response
            .json()
            .await
            .map_err(|e| LookupError::Malformed(e.without_url().to_string()))
    }
}

impl AccountDataSource for AdminApi {
    async fn global_account_data(&self, user: &UserId) -> Result<Map<String, Value>, LookupError> {
        let path = format!(
            "/_synapse/admin/v1/users/{}/accountdata",
            utf8_percent_encode(user.as_str(), SEGMENT)
        );
        let body = self.get(&path).await?;
        match body.get("account_data").and_then(|a| a.get("global")) {
            None => Ok(Map::new()),
            Some(Value::Object(map)) => Ok(map.clone()),
            Some(_) => Err(LookupError::Malformed(
                "account_data.global is not an object".to_owned(),
            )),
        }
    }
}

impl EventTimestampSource for AdminApi {
    async fn origin_server_ts(&self, room_id: &str, event_id: &str) -> Result<i64, LookupError> {
        let path = format!(
            "/_synapse/admin/v1/rooms/{}/context/{}",
            segment(room_id)?,
            segment(event_id)?
        );
        let body = self.get(&path).await?;
        body.get("event")
            .and_then(|e| e.get("origin_server_ts"))
            .and_then(Value::as_i64)
            .ok_or_else(|| LookupError::Malformed("event has no origin_server_ts".to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_reencoded_and_dot_segments_refused() {
        assert_eq!(segment("%21r%3Ahs1.test").unwrap(), "%21r%3Ahs1.test");
        assert_eq!(segment("!r:hs1.test").unwrap(), "%21r%3Ahs1.test");
        assert_eq!(segment("$a/b").unwrap(), "%24a%2Fb");
        assert!(segment("..").is_err());
        assert!(segment("%2E%2E").is_err());
    }

    #[test]
    fn only_a_matrix_404_means_not_found() {
        let not_found = reqwest::StatusCode::NOT_FOUND;
        assert!(is_matrix_not_found(
            not_found,
            r#"{"errcode":"M_NOT_FOUND","error":"User not found"}"#
        ));
        assert!(is_matrix_not_found(
            not_found,
            r#"{"errcode":"M_UNKNOWN","error":"No row found (events)"}"#
        ));
        assert!(!is_matrix_not_found(not_found, "<html>404</html>"));
        assert!(!is_matrix_not_found(not_found, r#"{"error":"x"}"#));
        assert!(!is_matrix_not_found(
            reqwest::StatusCode::BAD_REQUEST,
            r#"{"errcode":"M_NOT_FOUND"}"#
        ));
    }
}
