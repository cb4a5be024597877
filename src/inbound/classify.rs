//! Phase 1, classify: which endpoint a request addressed, and whether the proxy answers it
//! itself.
//!
//! The v1.11 endpoint table ([`crate::matrix::endpoints`]) names the endpoint; a few routes are
//! the proxy's own (CORS preflights, `/.well-known/matrix/*`, the Synapse admin API when it is
//! exposed). Endpoints TIM does not offer are refused here, before anything reads the body or
//! asks the homeserver. The endpoint is named by its template from here on: metrics, logs and
//! raw-data reports never carry the raw path with its IDs.

use http::{HeaderValue, Method, Request, Response, header};

use super::forward::{Body, full};
use super::{InboundState, client, cors};
use crate::config::Config;
use crate::error::MatrixError;
use crate::matrix::endpoints::{Api, Classification, PathParams};

/// Template used in metrics for the proxied Synapse admin API.
const SYNAPSE_ADMIN_TEMPLATE: &str = "/_synapse/admin/{*path}";
const SUPPORT_PATH: &str = "/.well-known/matrix/support";
const WELL_KNOWN_SERVER_PATH: &str = "/.well-known/matrix/server";

/// The endpoint a request addressed, named as metrics and raw-data reports name it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Addressed<'t> {
    /// The endpoint table's template, or a constant for the proxy's own routes.
    pub template: &'t str,
    pub is_federation: bool,
}

impl Addressed<'static> {
    const fn own(template: &'static str, is_federation: bool) -> Self {
        Self {
            template,
            is_federation,
        }
    }
}

/// Where [`classify`] sends a request.
pub(super) enum Route<'t> {
    /// Answered by the proxy without the homeserver.
    Local(Result<Response<Body>, MatrixError>),
    /// `/.well-known/matrix/support`, from the registration service.
    Support,
    /// To the homeserver without rules: the Synapse admin API, when `inbound.expose_synapse_admin`
    /// is set.
    Unchecked,
    /// An endpoint of the table: authenticated, then its TIM rules decide.
    Checked(PathParams<'t>),
}

/// Phase 1: which endpoint `req` addresses and where it goes next.
pub(super) fn classify<'s>(
    state: &'s InboundState,
    req: &Request<Body>,
) -> (Addressed<'s>, Route<'s>) {
    let method = req.method();
    if method == Method::OPTIONS {
        return (
            Addressed::own(cors::PREFLIGHT_TEMPLATE, false),
            Route::Local(Ok(cors::preflight())),
        );
    }
    let path = req.uri().path();
    if path == WELL_KNOWN_SERVER_PATH && method == Method::GET {
        return (
            Addressed::own(WELL_KNOWN_SERVER_PATH, true),
            Route::Local(Ok(well_known_server(&state.config))),
        );
    }
    if path == SUPPORT_PATH && method == Method::GET {
        return (Addressed::own(SUPPORT_PATH, false), Route::Support);
    }
    if state.config.inbound.expose_synapse_admin && path.starts_with("/_synapse/admin/") {
        return (
            Addressed::own(SYNAPSE_ADMIN_TEMPLATE, false),
            Route::Unchecked,
        );
    }
    match state.table.classify(method, path) {
        Classification::NotFound => (
            Addressed::own("unknown", false),
            Route::Local(Err(MatrixError::unrecognized_path())),
        ),
        Classification::MethodNotAllowed { template } => (
            Addressed {
                template,
                is_federation: false,
            },
            Route::Local(Err(client::blocked_endpoint(state, method, template)
                .unwrap_or_else(MatrixError::method_not_allowed))),
        ),
        Classification::Matched { endpoint, params } => {
            let template = endpoint.template.as_str();
            let addressed = Addressed {
                template,
                is_federation: endpoint.api == Api::ServerServer
                    || path.starts_with("/_matrix/key/"),
            };
            match client::blocked_endpoint(state, method, template) {
                Some(err) => (addressed, Route::Local(Err(err))),
                None => (addressed, Route::Checked(params)),
            }
        }
    }
}

fn well_known_server(config: &Config) -> Response<Body> {
    let name = &config.homeserver.server_name;
    let has_port = name
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && !name.ends_with(']');
    let server = if has_port {
        name.clone()
    } else {
        format!("{name}:{}", config.inbound.well_known_server_port)
    };
    let body = serde_json::json!({ "m.server": server }).to_string();
    let mut response = Response::new(full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
