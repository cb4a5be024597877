//! TI-Messenger information API (`TiMessengerInformation.yaml`, reference port 7777).
//!
//! Endpoints (base path `/tim-information`):
//! - `GET /tim-information` (and `/tim-information/`): the `InfoObject` (title, version,
//!   optional description and contact from `info_api.*`).
//! - `GET /tim-information/v1/server/findByIk?ikNumber=…`: `{"serverName": …}` of the list
//!   entry carrying that IK number. IK numbers only exist in VZD lists; a list from the
//!   registration service has none, so this answers 404 there.
//! - `GET /tim-information/v1/server/isInsurance?serverName=…`: `{"isInsurance": …}`.
//!   **Decision:** an unknown server answers `200 {"isInsurance":false}` (the OpenAPI lists
//!   only 200/400/401 for this operation; the reference's 404 is not in the spec, and
//!   synapse-invite-checker also answers `false`). An unknown server is, by definition, not an
//!   insurance server of the federation.
//!
//! Authentication: `Authorization: Bearer <Matrix OpenID token>`, verified with
//! `GET {homeserver.url}/_matrix/federation/v1/openid/userinfo?access_token=…` at the **local**
//! homeserver. An OpenID token can only be checked by the homeserver that issued it, and the
//! API carries no server name to find that homeserver, so tokens issued by other homeservers
//! are not verifiable and get 401 (same as the reference). Successful verifications are
//! cached (bounded, TTL `info_api.token_cache`) under a SHA-256 of the token; the token
//! itself is never stored or logged. Tokens the homeserver refused are remembered the same way
//! for a short while (`info_api.invalid_token_cache`, default 30 s), so a client repeating a
//! bad token does not make the proxy ask the homeserver each time. A homeserver that cannot be
//! reached yields 503, not 401 (and is not remembered), so an outage is not mistaken for a bad
//! token. Error bodies never repeat the `Authorization` value (the reference echoes it).
//!
//! Every error body is `{"errorCode":"<status>","errorMessage":"…"}` (reference wording, see
//! `tests/data/error-bodies.json`, listener `info`); with no valid, unexpired federation list
//! the list-backed endpoints answer 503.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use url::Url;

use crate::config::Config;
use crate::federation::{FederationHandle, Membership};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// API version reported by `GET /tim-information` (TiMessengerInformation.yaml `info.version`).
pub const API_VERSION: &str = "1.0.0";
const LISTENER: &str = "info";
const USERINFO_PATH: &str = "/_matrix/federation/v1/openid/userinfo";

/// Setting up the API failed.
#[derive(Debug, thiserror::Error)]
pub enum InfoApiError {
    #[error("information API: {0}")]
    Setup(String),
}

/// Shared state of the information API.
pub struct InfoApiState {
    federation: FederationHandle,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    userinfo_url: Url,
    /// SHA-256(token) → Matrix user id.
    tokens: moka::future::Cache<[u8; 32], Arc<str>>,
    /// SHA-256 of tokens the homeserver refused, for `info_api.invalid_token_cache.ttl`.
    invalid: moka::future::Cache<[u8; 32], ()>,
    info: InfoObject,
}

impl std::fmt::Debug for InfoApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfoApiState")
            .field("userinfo_url", &self.userinfo_url.as_str())
            .finish()
    }
}

#[derive(Debug, Clone, Serialize)]
struct InfoObject {
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<String>,
    version: &'static str,
}

impl InfoApiState {
    pub fn new(
        config: &Config,
        federation: FederationHandle,
        metrics: Arc<Metrics>,
    ) -> Result<Self, InfoApiError> {
        let base = config.homeserver.url.as_str().trim_end_matches('/');
        let userinfo_url = Url::parse(&format!("{base}{USERINFO_PATH}"))
            .map_err(|e| InfoApiError::Setup(format!("homeserver.url: {e}")))?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.homeserver.connect_timeout)
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| InfoApiError::Setup(format!("HTTP client: {e}")))?;
        let cache = &config.info_api.token_cache;
        let tokens = moka::future::Cache::builder()
            .max_capacity(cache.max_entries)
            .time_to_live(cache.ttl)
            .build();
        let refused = &config.info_api.invalid_token_cache;
        let invalid = moka::future::Cache::builder()
            .max_capacity(refused.max_entries)
            .time_to_live(refused.ttl)
            .build();
        Ok(Self {
            federation,
            metrics,
            http,
            userinfo_url,
            tokens,
            invalid,
            info: InfoObject {
                title: config.info_api.title.clone(),
                description: config.info_api.description.clone(),
                contact: config.info_api.contact.clone(),
                version: API_VERSION,
            },
        })
    }

    /// The state for a reloaded configuration (`new`; `old` is the one this state was built
    /// from). Resolved tokens stay cached while the homeserver and the cache settings are
    /// unchanged.
    pub fn reconfigure(&self, old: &Config, new: &Config) -> Result<Self, InfoApiError> {
        let mut next = Self::new(new, self.federation.clone(), self.metrics.clone())?;
        if old.homeserver == new.homeserver && old.info_api.token_cache == new.info_api.token_cache
        {
            next.tokens = self.tokens.clone();
        }
        Ok(next)
    }
}

/// The API's routes; unknown paths get axum's plain 404 (like the reference). Each request
/// runs on the state current when it arrived ([`Live`]).
pub fn router(state: impl Into<Live<InfoApiState>>) -> Router {
    let state: Live<InfoApiState> = state.into();
    Router::new()
        .route("/tim-information", get(info))
        .route("/tim-information/", get(info))
        .route("/tim-information/v1/server/findByIk", get(find_by_ik))
        .route("/tim-information/v1/server/isInsurance", get(is_insurance))
        .with_state(state)
}

/// Serve the API on `listener` until `shutdown` fires (in-flight requests finish first).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: impl Into<Live<InfoApiState>>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

/// A rejection: status, reference wording, and the rule name for logs and metrics.
#[derive(Debug)]
struct InfoError {
    status: StatusCode,
    message: String,
    rule: &'static str,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    #[serde(rename = "errorCode")]
    error_code: String,
    #[serde(rename = "errorMessage")]
    error_message: &'a str,
}

impl InfoError {
    fn new(status: StatusCode, message: impl Into<String>, rule: &'static str) -> Self {
        Self {
            status,
            message: message.into(),
            rule,
        }
    }

    fn into_response(self) -> Response {
        let body = ErrorBody {
            error_code: self.status.as_u16().to_string(),
            error_message: &self.message,
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// Record metrics and a log line for one finished request.
fn finish(
    state: &InfoApiState,
    endpoint: &'static str,
    result: Result<Response, InfoError>,
) -> Response {
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            state.metrics.reject(LISTENER, err.rule);
            tracing::info!(
                rule = err.rule,
                endpoint,
                status = err.status.as_u16(),
                "info API request rejected"
            );
            err.into_response()
        }
    };
    state
        .metrics
        .request(LISTENER, endpoint, response.status().as_u16());
    response
}

/// A query parameter the endpoint needs; missing, it is the caller's 400 under `rule`.
fn required_param(
    query: Option<&str>,
    name: &str,
    rule: &'static str,
) -> Result<String, InfoError> {
    query_param(query, name).ok_or_else(|| {
        InfoError::new(
            StatusCode::BAD_REQUEST,
            format!("missing query parameter '{name}'"),
            rule,
        )
    })
}

async fn info(State(state): State<Arc<InfoApiState>>, headers: HeaderMap) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        Ok(axum::Json(&state.info).into_response())
    }
    .await;
    finish(&state, "/tim-information", result)
}

async fn find_by_ik(
    State(state): State<Arc<InfoApiState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let ik = required_param(query.as_deref(), "ikNumber", "info-missing-ik")?;
        let list = state.federation.fresh().map_err(list_unavailable)?;
        match list.find_by_ik(&ik) {
            Some(entry) => {
                Ok(axum::Json(serde_json::json!({ "serverName": entry.domain })).into_response())
            }
            None => Err(InfoError::new(
                StatusCode::NOT_FOUND,
                format!("no domain associated with ikNumber={ik}"),
                "info-ik-not-found",
            )),
        }
    }
    .await;
    finish(&state, "/tim-information/v1/server/findByIk", result)
}

async fn is_insurance(
    State(state): State<Arc<InfoApiState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let result = async {
        authenticate(&state, &headers).await?;
        let server = required_param(query.as_deref(), "serverName", "info-missing-servername")?;
        let is_insurance = match state.federation.check(&server).await {
            Membership::Member { is_insurance } => is_insurance,
            Membership::NotMember => false,
            Membership::Unavailable(reason) => return Err(list_unavailable(reason)),
        };
        Ok(axum::Json(serde_json::json!({ "isInsurance": is_insurance })).into_response())
    }
    .await;
    finish(&state, "/tim-information/v1/server/isInsurance", result)
}

fn list_unavailable(reason: String) -> InfoError {
    InfoError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("federation list unavailable: {reason}"),
        "info-list-unavailable",
    )
}

/// First non-empty value of `name` in a URL query.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// Check the bearer OpenID token; returns the Matrix user id it belongs to.
async fn authenticate(state: &InfoApiState, headers: &HeaderMap) -> Result<Arc<str>, InfoError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(InfoError::new(
            StatusCode::UNAUTHORIZED,
            "missing 'authorization' header",
            "info-auth-missing",
        ));
    };
    // The header is never echoed: it may hold a token or credentials of another scheme.
    let token = match value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) {
        Some(token) if !token.is_empty() => token,
        _ => {
            return Err(InfoError::new(
                StatusCode::UNAUTHORIZED,
                "malformed bearer token",
                "info-auth-malformed",
            ));
        }
    };
    let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    let refused = || {
        InfoError::new(
            StatusCode::UNAUTHORIZED,
            "no mxid associated with bearer token",
            "info-auth-failed",
        )
    };
    if state.invalid.contains_key(&key) {
        return Err(refused());
    }
    let lookup = state
        .tokens
        .try_get_with(key, resolve_token(state, token))
        .await;
    match lookup {
        Ok(user) => Ok(user),
        Err(err) => Err(match &*err {
            TokenError::Invalid => {
                state.invalid.insert(key, ()).await;
                refused()
            }
            TokenError::Unavailable(reason) => {
                tracing::warn!(reason = %reason, "info API: homeserver userinfo unavailable");
                InfoError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "homeserver unavailable to verify the token",
                    "info-homeserver-unavailable",
                )
            }
        }),
    }
}

#[derive(Debug)]
enum TokenError {
    /// The homeserver does not know the token.
    Invalid,
    /// The homeserver could not be asked (network error, 5xx); not cached.
    Unavailable(String),
}

#[derive(serde::Deserialize)]
struct UserInfo {
    sub: String,
}

async fn resolve_token(state: &InfoApiState, token: &str) -> Result<Arc<str>, TokenError> {
    let mut url = state.userinfo_url.clone();
    url.query_pairs_mut().append_pair("access_token", token);
    // reqwest errors can embed the URL (and with it the token): report only the kind.
    let response = state.http.get(url).send().await.map_err(|e| {
        TokenError::Unavailable(if e.is_timeout() {
            "timeout".to_owned()
        } else {
            "connection failed".to_owned()
        })
    })?;
    let status = response.status();
    if status.is_server_error() {
        return Err(TokenError::Unavailable(format!("HTTP {status}")));
    }
    if status != StatusCode::OK {
        return Err(TokenError::Invalid);
    }
    let info: UserInfo = response.json().await.map_err(|_| TokenError::Invalid)?;
    if !info.sub.starts_with('@') || !info.sub.contains(':') {
        return Err(TokenError::Invalid);
    }
    Ok(Arc::from(info.sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_decodes_and_skips_empty_values() {
        assert_eq!(
            query_param(Some("serverName=a%2Eb&x=1"), "serverName").as_deref(),
            Some("a.b")
        );
        assert_eq!(query_param(Some("serverName="), "serverName"), None);
        assert_eq!(query_param(None, "serverName"), None);
        assert_eq!(
            query_param(Some("ikNumber=&ikNumber=123"), "ikNumber").as_deref(),
            Some("123")
        );
    }
}
