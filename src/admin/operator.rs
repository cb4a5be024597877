//! The admin listener's operator surface: the active configuration, reload, and the log filter.
//!
//! Reading is open to whoever reaches the admin listener (it is never published: loopback by
//! default, the pod IP in Kubernetes with the port left off the Service). Changing something —
//! a reload, a log filter — needs `Authorization: Bearer <admin.token>` when a token is
//! configured, and otherwise comes only from a loopback client (`kubectl exec`, `docker exec`,
//! a sidecar), so binding the listener to the pod IP for kubelet probes does not hand control
//! to the pod network.
//!
//! Besides timproxy's own paths, the reference's log-level paths are answered:
//! `GET /actuator/logging/levels`, `PUT /actuator/logging/{level}`,
//! `PUT /actuator/logging/{level}/{logger}` (202, reset after `admin.log_level_reset_after`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AdminState;
use crate::logging::{ACCEPTED_LEVELS, LogControl};
use crate::server::reload::{ConfigStatus, Outcome, ReloadReport};

/// What the operator endpoints act on; the server implements it.
pub trait Operations: Send + Sync {
    /// The active configuration.
    fn config_status(&self) -> ConfigStatus;
    /// Re-read, validate and apply the configuration (serialised with other reloads).
    fn reload(&self) -> BoxFuture<'_, ReloadReport>;
}

/// Who may change things, and the defaults for log-filter changes.
#[derive(Clone, Default)]
pub struct OperatorAccess {
    /// `admin.token` / `admin.token_file`, hashed (compared as hashes).
    token_hash: Option<[u8; 32]>,
    /// `admin.log_level_reset_after`.
    pub reset_after: Duration,
}

impl std::fmt::Debug for OperatorAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorAccess")
            .field("token", &self.token_hash.is_some())
            .field("reset_after", &self.reset_after)
            .finish()
    }
}

impl OperatorAccess {
    pub fn new(token: Option<&str>, reset_after: Duration) -> Self {
        Self {
            token_hash: token.map(|t| Sha256::digest(t.as_bytes()).into()),
            reset_after,
        }
    }

    /// `Ok` when `peer` with `headers` may change things.
    fn authorize(&self, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Refusal> {
        match &self.token_hash {
            Some(expected) => {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| <[u8; 32]>::from(Sha256::digest(t.trim().as_bytes())));
                if given.as_ref() == Some(expected) {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        StatusCode::UNAUTHORIZED,
                        "operator endpoints need `Authorization: Bearer <admin.token>`",
                    ))
                }
            }
            None if peer.ip().is_loopback() || is_mapped_loopback(peer) => Ok(()),
            None => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "operator endpoints answer loopback clients only unless admin.token (or admin.token_file) is set",
            )),
        }
    }
}

fn is_mapped_loopback(peer: SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        std::net::IpAddr::V4(_) => false,
    }
}

/// An operator request that was not carried out: status and a one-line reason as
/// `{"error": …}`.
#[derive(Debug)]
pub(super) struct Refusal {
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = Json(serde_json::json!({ "error": self.message }));
        (self.status, body).into_response()
    }
}

fn operations(state: &AdminState) -> Result<&Arc<dyn Operations>, Refusal> {
    state.operations.as_ref().ok_or_else(|| {
        Refusal::new(
            StatusCode::NOT_FOUND,
            "this process has no reloadable configuration",
        )
    })
}

fn log_control(state: &AdminState) -> Result<&Arc<LogControl>, Refusal> {
    state.log.as_ref().ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log filter of this process cannot be changed",
        )
    })
}

/// `GET /config`: hash, load time, file, pending restart keys, the latest reload.
pub(super) async fn config_status(
    State(state): State<Arc<AdminState>>,
) -> Result<Response, Refusal> {
    Ok(Json(operations(&state)?.config_status()).into_response())
}

/// `POST /config/reload`: 200 with the report when applied or unchanged, 422 when refused.
pub(super) async fn reload(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    state.access.authorize(peer, &headers)?;
    let ops = operations(&state)?.clone();
    tracing::info!(%peer, "configuration reload requested through the admin listener");
    let report = ops.reload().await;
    let status = match report.outcome {
        Outcome::Applied | Outcome::Unchanged => StatusCode::OK,
        Outcome::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
    };
    Ok((status, Json(report)).into_response())
}

/// `GET /log-level`.
pub(super) async fn log_level(State(state): State<Arc<AdminState>>) -> Result<Response, Refusal> {
    Ok(Json(log_control(&state)?.view()).into_response())
}

/// Body of `PUT /log-level`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetLogLevel {
    /// An env-filter, e.g. `info,timproxy::outbound=debug`.
    filter: String,
    /// `10m`, `1h`, …; `0s` keeps the filter until the next change; absent: the configured
    /// `admin.log_level_reset_after`.
    #[serde(default, with = "humantime_serde")]
    reset_after: Option<Duration>,
}

/// `PUT /log-level` with [`SetLogLevel`]: 200 with the new state, 400 for a bad filter.
pub(super) async fn set_log_level(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<SetLogLevel>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, Refusal> {
    state.access.authorize(peer, &headers)?;
    let Json(body) = body.map_err(|e| {
        Refusal::bad_request(format!(
            "body must be {{\"filter\": \"<env-filter>\", \"reset_after\": \"10m\"}}: {e}"
        ))
    })?;
    let log = log_control(&state)?;
    let reset_after = body.reset_after.unwrap_or(state.access.reset_after);
    let view = log
        .set_temporary(&body.filter, Some(reset_after))
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    Ok(Json(view).into_response())
}

/// `DELETE /log-level`: back to the default now.
pub(super) async fn reset_log_level(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, Refusal> {
    state.access.authorize(peer, &headers)?;
    Ok(Json(log_control(&state)?.reset()).into_response())
}

/// `GET /actuator/logging/levels` (reference).
pub(super) async fn accepted_levels() -> Response {
    Json(serde_json::json!({ "acceptedValues": ACCEPTED_LEVELS })).into_response()
}

/// `PUT /actuator/logging/{level}` (reference): the whole process at `level` for
/// `admin.log_level_reset_after`; 202.
pub(super) async fn set_reference_level(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(level): Path<String>,
) -> Result<StatusCode, Refusal> {
    set_reference(&state, peer, &headers, &level, None)
}

/// `PUT /actuator/logging/{level}/{logger}` (reference): one target (`timproxy::outbound`, …)
/// at `level` on top of the default; 202.
pub(super) async fn set_reference_logger_level(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((level, logger)): Path<(String, String)>,
) -> Result<StatusCode, Refusal> {
    set_reference(&state, peer, &headers, &level, Some(&logger))
}

fn set_reference(
    state: &AdminState,
    peer: SocketAddr,
    headers: &HeaderMap,
    level: &str,
    logger: Option<&str>,
) -> Result<StatusCode, Refusal> {
    state.access.authorize(peer, headers)?;
    let level = ACCEPTED_LEVELS
        .iter()
        .find(|l| l.eq_ignore_ascii_case(level))
        .map(|l| l.to_ascii_lowercase())
        .ok_or_else(|| {
            Refusal::bad_request(format!(
                "level must be one of {}",
                ACCEPTED_LEVELS.join(", ")
            ))
        })?;
    let log = log_control(state)?;
    let filter = match logger {
        None => level,
        Some(logger) if is_target_name(logger) => {
            format!("{},{logger}={level}", log.view().default)
        }
        Some(_) => {
            return Err(Refusal::bad_request(
                "logger must be a target name such as timproxy::outbound",
            ));
        }
    };
    log.set_temporary(&filter, Some(state.access.reset_after))
        .map_err(|e| Refusal::bad_request(e.to_string()))?;
    Ok(StatusCode::ACCEPTED)
}

/// A `tracing` target (`timproxy::outbound::mitm`) or a reference logger name
/// (`de.akquinet.tim.proxy`): nothing that could smuggle another filter directive in.
fn is_target_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use axum::body::Body;
    use http::Request;
    use tower_service::Service;

    async fn call(
        access: OperatorAccess,
        method: &str,
        peer: &str,
        token: Option<&str>,
    ) -> StatusCode {
        let log = LogControl::new("info", false, Box::new(|_| Ok(())));
        let state = AdminState::new(Metrics::new())
            .with_log_control(log)
            .with_access(access);
        let mut router = super::super::router(Arc::new(state));
        let mut request = Request::builder()
            .method(method)
            .uri("/log-level")
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let mut request = request.body(Body::from(r#"{"filter": "debug"}"#)).unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        router.call(request).await.unwrap().status()
    }

    #[tokio::test]
    async fn without_a_token_only_loopback_clients_may_change_things() {
        let open = OperatorAccess::default();
        for peer in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert_eq!(call(open.clone(), "PUT", peer, None).await, StatusCode::OK);
        }
        for peer in ["10.1.2.3:5000", "[fd00::1]:5000"] {
            assert_eq!(
                call(open.clone(), "PUT", peer, None).await,
                StatusCode::FORBIDDEN
            );
        }
        assert_eq!(
            call(open, "GET", "10.1.2.3:5000", None).await,
            StatusCode::OK,
            "reading needs nothing"
        );
    }

    #[tokio::test]
    async fn with_a_token_every_client_needs_it() {
        let guarded = OperatorAccess::new(Some("s3cret"), Duration::ZERO);
        let cases = [
            ("127.0.0.1:5000", None, StatusCode::UNAUTHORIZED),
            ("10.1.2.3:5000", Some("guess"), StatusCode::UNAUTHORIZED),
            ("10.1.2.3:5000", Some("s3cret"), StatusCode::OK),
        ];
        for (peer, token, expected) in cases {
            assert_eq!(
                call(guarded.clone(), "PUT", peer, token).await,
                expected,
                "{peer} {token:?}"
            );
        }
    }
}
