//! Admin listener: liveness, readiness, Prometheus metrics, and the operator surface
//! ([`operator`]: active configuration, reload, log filter) — never on the public
//! inbound/outbound ports.
//!
//! Readiness is the conjunction of component checks (store, homeserver, federation list,
//! raw-data backlog); each reports a reason so an operator sees *why* an instance is not
//! ready. The reference implementation's probe paths (`/actuator/health/liveness|readiness`)
//! are answered too, so existing Kubernetes probes keep working after a swap.

pub mod operator;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::future::BoxFuture;
use serde::Serialize;

use crate::federation::FederationHandle;
use crate::live::Live;
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use operator::{Operations, OperatorAccess};

/// Outcome of one component check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentStatus {
    pub ready: bool,
    pub reason: String,
}

impl ComponentStatus {
    pub fn ok(reason: impl Into<String>) -> Self {
        Self {
            ready: true,
            reason: reason.into(),
        }
    }
    pub fn failing(reason: impl Into<String>) -> Self {
        Self {
            ready: false,
            reason: reason.into(),
        }
    }
}

/// A part of the process that readiness depends on.
pub trait Component: Send + Sync {
    fn name(&self) -> &'static str;
    fn check(&self) -> BoxFuture<'_, ComponentStatus>;
}

/// Readiness report: one entry per component.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: &'static str,
    pub components: std::collections::BTreeMap<&'static str, ComponentStatus>,
}

pub struct AdminState {
    metrics: Arc<Metrics>,
    components: Vec<Arc<dyn Component>>,
    federation: Option<FederationHandle>,
    check_timeout: Duration,
    operations: Option<Arc<dyn Operations>>,
    log: Option<Arc<LogControl>>,
    access: OperatorAccess,
}

impl AdminState {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            components: Vec::new(),
            federation: None,
            check_timeout: Duration::from_secs(3),
            operations: None,
            log: None,
            access: OperatorAccess::default(),
        }
    }

    /// Serve `GET /config` and `POST /config/reload`.
    pub fn with_operations(mut self, operations: Arc<dyn Operations>) -> Self {
        self.operations = Some(operations);
        self
    }

    /// Serve the log-filter endpoints.
    pub fn with_log_control(mut self, log: Arc<LogControl>) -> Self {
        self.log = Some(log);
        self
    }

    /// Who may use the operator endpoints ([`operator`]).
    pub fn with_access(mut self, access: OperatorAccess) -> Self {
        self.access = access;
        self
    }

    pub fn with_component(mut self, component: Arc<dyn Component>) -> Self {
        self.components.push(component);
        self
    }

    /// Federation list readiness plus its gauges (refreshed on every scrape).
    pub fn with_federation(mut self, handle: FederationHandle) -> Self {
        self.components
            .push(Arc::new(FederationComponent(handle.clone())));
        self.federation = Some(handle);
        self
    }

    pub async fn readiness(&self) -> Report {
        let checks = self.components.iter().map(|c| async move {
            let status = match tokio::time::timeout(self.check_timeout, c.check()).await {
                Ok(status) => status,
                Err(_) => ComponentStatus::failing(format!(
                    "check timed out after {:?}",
                    self.check_timeout
                )),
            };
            (c.name(), status)
        });
        let components: std::collections::BTreeMap<_, _> = futures_util::future::join_all(checks)
            .await
            .into_iter()
            .collect();
        let ready = components.values().all(|s| s.ready);
        Report {
            status: if ready { "UP" } else { "DOWN" },
            components,
        }
    }

    fn update_gauges(&self) {
        if let Some(handle) = &self.federation {
            self.metrics.observe_federation_list(&handle.state());
        }
    }
}

struct FederationComponent(FederationHandle);

impl Component for FederationComponent {
    fn name(&self) -> &'static str {
        "federation_list"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            let state = self.0.state();
            ComponentStatus {
                ready: state.ready,
                reason: state.reason,
            }
        })
    }
}

/// Homeserver reachability: `GET {url}{health_path}` must answer 2xx.
pub struct HomeserverComponent {
    client: reqwest::Client,
    url: String,
}

impl HomeserverComponent {
    pub fn new(config: &crate::config::HomeserverConfig) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .no_proxy()
            .build()?;
        let base = config.url.as_str().trim_end_matches('/');
        Ok(Self {
            client,
            url: format!("{base}{}", config.health_path),
        })
    }
}

impl Component for HomeserverComponent {
    fn name(&self) -> &'static str {
        "homeserver"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            match self.client.get(&self.url).send().await {
                Ok(r) if r.status().is_success() => ComponentStatus::ok("reachable"),
                Ok(r) => ComponentStatus::failing(format!("health check answered {}", r.status())),
                Err(e) => ComponentStatus::failing(format!("unreachable: {}", error_chain(&e))),
            }
        })
    }
}

pub use crate::error::error_chain;

/// The admin routes; each request runs on the state current when it arrived ([`Live`]).
pub fn router(state: impl Into<Live<AdminState>>) -> Router {
    let state: Live<AdminState> = state.into();
    Router::new()
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/actuator/health/liveness", get(live))
        .route("/actuator/health/readiness", get(ready))
        .route("/metrics", get(metrics))
        .route("/config", get(operator::config_status))
        .route("/config/reload", post(operator::reload))
        .route(
            "/log-level",
            get(operator::log_level)
                .put(operator::set_log_level)
                .delete(operator::reset_log_level),
        )
        .route("/actuator/logging/levels", get(operator::accepted_levels))
        .route(
            "/actuator/logging/{level}",
            put(operator::set_reference_level),
        )
        .route(
            "/actuator/logging/{level}/{logger}",
            put(operator::set_reference_logger_level),
        )
        .with_state(state)
}

async fn live() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "UP"}))
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let report = state.readiness().await;
    let status = if report.status == "UP" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    state.update_gauges();
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Serve the admin router until shutdown. The operator endpoints need the client's address
/// (loopback rule), so connections carry it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: impl Into<Live<AdminState>>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::{DomainEntry, FederationList, ListSource};

    struct Fixed(&'static str, bool);
    impl Component for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn check(&self) -> BoxFuture<'_, ComponentStatus> {
            let ready = self.1;
            Box::pin(async move {
                if ready {
                    ComponentStatus::ok("fine")
                } else {
                    ComponentStatus::failing("broken")
                }
            })
        }
    }

    #[tokio::test]
    async fn readiness_is_down_when_any_component_fails_and_names_it() {
        let state = AdminState::new(Metrics::new())
            .with_component(Arc::new(Fixed("store", true)))
            .with_component(Arc::new(Fixed("homeserver", false)));
        let report = state.readiness().await;
        assert_eq!(report.status, "DOWN");
        assert!(!report.components["homeserver"].ready);
        assert!(report.components["store"].ready);
    }

    #[tokio::test]
    async fn federation_component_reflects_list_state() {
        let empty = AdminState::new(Metrics::new())
            .with_federation(FederationHandle::new(Duration::from_secs(60)));
        let report = empty.readiness().await;
        assert_eq!(report.status, "DOWN");
        assert_eq!(
            report.components["federation_list"].reason,
            "no federation list loaded yet"
        );
        let list = FederationList::new(
            3,
            time::OffsetDateTime::now_utc(),
            true,
            ListSource::File,
            vec![DomainEntry {
                domain: "a.example".into(),
                is_insurance: false,
                telematik_id: None,
                ik: vec![],
            }],
        );
        let loaded = AdminState::new(Metrics::new())
            .with_federation(FederationHandle::with_list(Duration::from_secs(60), list));
        assert_eq!(loaded.readiness().await.status, "UP");
        loaded.update_gauges();
        assert!(
            loaded
                .metrics
                .encode()
                .contains("timproxy_federation_list_version 3")
        );
    }
}
