//! Access token → user, resolved with the homeserver's `whoami` and cached.
//!
//! Keys are SHA-256 hashes of the token, so the cache never holds a usable credential. Entries
//! live `inbound.whoami_cache.ttl`; a 401 from the homeserver evicts, so a revoked token stops
//! resolving at once. Only rules that need the user (createRoom, invite) resolve it.

use std::sync::Arc;

use http::{HeaderMap, StatusCode, header};
use moka::future::Cache;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::MatrixError;
use crate::matrix::ids::UserId;
use crate::metrics::Metrics;

/// The access token of a request: `Authorization: Bearer …` or the `access_token` query
/// parameter.
pub fn access_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut parts = value.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (parts.next(), parts.next())
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_owned());
        }
    }
    let query = query?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "access_token")
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

/// Clones share one cache (a reload that leaves its settings alone keeps it).
#[derive(Clone)]
pub struct WhoamiCache {
    cache: Cache<[u8; 32], Arc<UserId>>,
    client: reqwest::Client,
    url: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for WhoamiCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhoamiCache")
            .field("entries", &self.cache.entry_count())
            .finish()
    }
}

fn unauthorized(errcode: &'static str, error: &str, rule: &'static str) -> MatrixError {
    MatrixError::new(StatusCode::UNAUTHORIZED, errcode, error, rule)
}

impl WhoamiCache {
    pub fn new(config: &Config, client: reqwest::Client, metrics: Arc<Metrics>) -> Self {
        let cache = Cache::builder()
            .max_capacity(config.inbound.whoami_cache.max_entries)
            .time_to_live(config.inbound.whoami_cache.ttl)
            .build();
        let url = format!(
            "{}/_matrix/client/v3/account/whoami",
            config.homeserver.url.as_str().trim_end_matches('/')
        );
        Self {
            cache,
            client,
            url,
            metrics,
        }
    }

    /// Resolve `token` (from [`access_token`]); `None` → 401 `M_MISSING_TOKEN`.
    pub async fn resolve(&self, token: Option<&str>) -> Result<Arc<UserId>, MatrixError> {
        let token = token.ok_or_else(|| {
            unauthorized("M_MISSING_TOKEN", "missing token", "access-token-missing")
        })?;
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(user) = self.cache.get(&key).await {
            Metrics::outcome(&self.metrics.whoami_cache, "hit");
            return Ok(user);
        }
        Metrics::outcome(&self.metrics.whoami_cache, "miss");
        let response = self
            .client
            .get(&self.url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                MatrixError::bad_gateway("homeserver unreachable", "whoami")
                    .caused_by(e.without_url())
            })?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            self.cache.invalidate(&key).await;
            return Err(unauthorized(
                "M_UNKNOWN_TOKEN",
                "invalid token",
                "access-token-invalid",
            ));
        }
        if !status.is_success() {
            return Err(MatrixError::bad_gateway(
                format!("whoami answered {}", status.as_u16()),
                "whoami",
            ));
        }
        let body: serde_json::Value = response.json().await.map_err(|e| {
            MatrixError::bad_gateway("whoami answer is not JSON", "whoami")
                .caused_by(e.without_url())
        })?;
        let user = body
            .get("user_id")
            .and_then(|v| v.as_str())
            .and_then(|s| UserId::parse(s).ok())
            .ok_or_else(|| MatrixError::bad_gateway("whoami answer has no user_id", "whoami"))?;
        let user = Arc::new(user);
        self.cache.insert(key, user.clone()).await;
        Ok(user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn token_from_bearer_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            access_token(&h, Some("a=1&access_token=q%2Bt")),
            Some("q+t".to_owned())
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(
            access_token(&h, Some("access_token=q")),
            Some("abc".to_owned())
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("X-Matrix origin=a"),
        );
        assert_eq!(access_token(&h, None), None);
    }
}
