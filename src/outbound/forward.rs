//! One request inside a tunnel: check its destination (TIM-PROXY §5, with the §12.6 fixes),
//! then relay it to the CONNECT target over the pooled upstream client, streaming both bodies.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use super::connect::ConnectTarget;
use super::own::{OwnUpstream, Relayed, SendError, absolute};
use super::route::{self, ROUTE_KINDS, Route, XMatrix};
use super::upstream::DialError;
use super::{LISTENER, OutboundState, error_response, rules};
use crate::error::MatrixError;
use crate::hop_by_hop::strip_hop_by_hop;
use crate::inbound::{ObservedRequest, RequestObserver};
use crate::metrics::{ListenerLabels, Metrics};
use crate::policy::event_domains::{self, Decision, EventBody};
use crate::rawdata::{self, Direction};

/// Response bodies: the upstream body relayed, or the proxy's own error JSON.
pub(crate) type ProxyBody = Either<Relayed, Full<Bytes>>;
pub(crate) type ProxyResponse = Response<ProxyBody>;
/// Request bodies sent upstream: streamed from the tunnel, or read whole because their events
/// were checked.
pub(crate) type UpstreamBody = Either<Incoming, Full<Bytes>>;

/// What every request in one tunnel shares.
pub struct Tunnel {
    target: ConnectTarget,
    /// The tunnel's own upstream connection (HTTP/1.1 tunnels); `None`: the shared pooled
    /// client (h2 tunnels, whose concurrent streams it multiplexes).
    own: Option<OwnUpstream>,
}

impl Tunnel {
    pub(crate) fn new(target: ConnectTarget, own: Option<OwnUpstream>) -> Self {
        Self { target, own }
    }

    /// Send a request to the CONNECT target and wait for the response head.
    async fn send(
        &self,
        state: &OutboundState,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed>, MatrixError> {
        let authority = self.target.authority.as_str();
        match &self.own {
            Some(own) => own
                .send(&state.connector, request)
                .await
                .map_err(|error| send_error(error, authority)),
            None => state
                .client
                .request(absolute(request, &self.target.authority))
                .await
                .map(|response| response.map(Either::Left))
                .map_err(|error| upstream_error(error, authority)),
        }
    }
}

/// Check, forward, count. Never fails: refusals and upstream failures become Matrix JSON.
pub(crate) async fn handle(
    request: Request<Incoming>,
    tunnel: &Tunnel,
    state: &OutboundState,
) -> ProxyResponse {
    let route = route::classify(request.uri().path());
    let label = route.label();
    let method = request.method().clone();
    let facts = RequestFacts::take(state, &request);
    let mut forwarded = false;
    // Only the head (Sync) is borrowed across the checks, never the streaming body.
    let outcome = match check(request.headers(), request.uri(), &route, tunnel, state).await {
        Ok(()) => match check_events(request, state).await {
            Ok(Outgoing::Send(request)) => {
                let relayed = forward(request, tunnel, state).await;
                forwarded = relayed.is_ok();
                relayed
            }
            Ok(Outgoing::HeldBack) => Ok(held_back()),
            Err(error) => Err(error),
        },
        Err(error) => Err(error),
    };
    let response = match outcome {
        Ok(response) => response,
        Err(error) => {
            error.record(&state.metrics, LISTENER, method.as_str(), label);
            error_response(&error)
        }
    };
    let status = response.status().as_u16();
    match status {
        200 => {
            state.hot.ok_requests(&route, &state.metrics).inc();
        }
        status => state.metrics.request(LISTENER, label, status),
    }
    if let Some(facts) = facts {
        facts.observed(method, status, forwarded, &response);
    }
    response
}

/// What a raw-data report needs from a request the spec's table lists for the outbound
/// direction (invites, single-event fetches); taken only when raw data is on and the request
/// is one of those, so other requests pay one path comparison at most.
struct RequestFacts {
    observer: Arc<dyn RequestObserver>,
    template: &'static str,
    started: time::OffsetDateTime,
    clock: Instant,
    size_in: Option<u64>,
}

impl RequestFacts {
    fn take<B>(state: &OutboundState, request: &Request<B>) -> Option<Self> {
        let observer = state.observer()?;
        let template = rawdata::federation_template(request.method(), request.uri().path())?;
        Some(RequestFacts {
            observer,
            template,
            started: time::OffsetDateTime::now_utc(),
            clock: Instant::now(),
            size_in: content_length(request.headers()),
        })
    }

    /// Hand the finished request to the observer (the response head is ready; its body
    /// streams afterwards).
    fn observed(
        self,
        method: http::Method,
        status: u16,
        forwarded: bool,
        response: &ProxyResponse,
    ) {
        self.observer.observe(&ObservedRequest {
            endpoint_template: self.template.to_owned(),
            method,
            status,
            started: self.started,
            duration: self.clock.elapsed(),
            size_in: self.size_in,
            size_out: content_length(response.headers()),
            useragent: None,
            inviter_server: None,
            invitee_server: None,
            is_federation: true,
            direction: Direction::Outbound,
            forwarded,
        });
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The metric handles every request touches, looked up in their families once: a family
/// lookup hashes the labels under a lock and, for `requests`, allocates the endpoint string
/// each time. Filled on first use, so the exposition shows a series only once it counted.
#[derive(Debug, Default)]
pub(crate) struct HotMetrics {
    upstream_seconds: OnceLock<Histogram>,
    /// `timproxy_requests_total{listener="outbound",status="200"}` by [`Route::slot`].
    ok_requests: [OnceLock<Counter>; ROUTE_KINDS],
}

impl HotMetrics {
    fn ok_requests(&self, route: &Route, metrics: &Metrics) -> &Counter {
        self.ok_requests[route.slot()]
            .get_or_init(|| metrics.request_counter(LISTENER, route.label(), 200))
    }

    fn upstream_seconds(&self, metrics: &Metrics) -> &Histogram {
        self.upstream_seconds.get_or_init(|| {
            metrics
                .upstream_seconds
                .get_or_create(&ListenerLabels { listener: LISTENER })
                .clone()
        })
    }
}

/// The destination rules; `enforce: false` skips them.
async fn check(
    headers: &HeaderMap,
    uri: &Uri,
    route: &Route,
    tunnel: &Tunnel,
    state: &OutboundState,
) -> Result<(), MatrixError> {
    if !state.enforce() {
        return Ok(());
    }
    match route {
        Route::Federation { auth_optional } => match x_matrix_destination(headers)? {
            XMatrix::Destination(destination) => check_destination(state, &destination).await,
            XMatrix::Absent | XMatrix::NoDestination if *auth_optional => Ok(()),
            XMatrix::Absent | XMatrix::NoDestination => Err(MatrixError::unauthorized(
                "missing X-Matrix authorization header with destination field",
                rules::X_MATRIX_MISSING,
            )),
        },
        Route::Keys => match x_matrix_destination(headers)? {
            XMatrix::Destination(destination) => check_destination(state, &destination).await,
            XMatrix::Absent | XMatrix::NoDestination => Ok(()),
        },
        Route::WellKnownServer => {
            let host = request_host(headers, uri, tunnel);
            if state.server_allowed(&host).await? {
                Ok(())
            } else {
                Err(MatrixError::forbidden(
                    format!("{host} not part of federation"),
                    rules::WELL_KNOWN_HOST,
                ))
            }
        }
        Route::Media { server_name } => {
            if state.server_allowed(server_name).await? {
                Ok(())
            } else {
                Err(MatrixError::forbidden(
                    format!("{server_name} kann nicht in der Föderation gefunden werden"),
                    rules::MEDIA_SERVER_NAME,
                ))
            }
        }
        Route::Push | Route::Recaptcha => Ok(()),
        // The SSO server's own endpoints (CAS `proxyValidate`, OIDC discovery, token and
        // userinfo) are no Matrix traffic: the operator listed the host for them.
        Route::Unknown if state.is_sso_host(&tunnel.target) => Ok(()),
        Route::Unknown => Err(MatrixError::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
            rules::UNKNOWN_PATH,
        )),
    }
}

/// The X-Matrix destination as the receiving Synapse reads it; a header it could read
/// differently is refused (401) on every route.
fn x_matrix_destination(headers: &HeaderMap) -> Result<XMatrix<'_>, MatrixError> {
    route::x_matrix_destination(headers).map_err(|why| {
        MatrixError::unauthorized(
            format!("ambiguous X-Matrix authorization ({why}): the receiver could read another destination"),
            rules::X_MATRIX_AMBIGUOUS,
        )
    })
}

/// A request after the event check.
// Returned once per request; boxing the request would cost an allocation on every one.
#[allow(clippy::large_enum_variant)]
enum Outgoing {
    Send(Request<UpstreamBody>),
    /// A transaction naming a non-federated domain: answered here, never sent.
    HeldBack,
}

/// Every Matrix domain in the events the homeserver sends must be federated
/// ([`event_domains`]): transactions, `send_join`/`send_leave`/`send_knock`, invites. Other
/// requests stream on unread.
async fn check_events(
    request: Request<Incoming>,
    state: &OutboundState,
) -> Result<Outgoing, MatrixError> {
    let kind = EventBody::of(request.method(), request.uri().path());
    let Some(kind) = kind.filter(|_| state.enforce()) else {
        return Ok(Outgoing::Send(request.map(Either::Left)));
    };
    let (mut parts, body) = request.into_parts();
    let bytes = crate::inbound::read_body(
        crate::inbound::forward::stream(body),
        state.event_body_limit,
    )
    .await?;
    let verdict = event_domains::check(kind, &bytes, &state.own_server, &state.federation).await?;
    match verdict.decide(kind) {
        Decision::Forward => {
            parts
                .headers
                .insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            Ok(Outgoing::Send(Request::from_parts(
                parts,
                Either::Right(Full::new(bytes)),
            )))
        }
        Decision::Refuse(error) => Err(error),
        Decision::HoldBack => {
            state.metrics.reject(LISTENER, event_domains::RULE);
            verdict.log_held_back(LISTENER, &parts.method);
            Ok(Outgoing::HeldBack)
        }
    }
}

/// The answer for a held-back transaction: the homeserver's queue moves on.
fn held_back() -> ProxyResponse {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from_static(
        event_domains::HELD_BACK_ANSWER.as_bytes(),
    ))));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

async fn check_destination(state: &OutboundState, destination: &str) -> Result<(), MatrixError> {
    if state.server_allowed(destination).await? {
        Ok(())
    } else {
        Err(MatrixError::forbidden(
            "not part of federation",
            rules::DESTINATION_NOT_FEDERATED,
        ))
    }
}

/// The host the request addresses: `Host` (HTTP/1.1), `:authority` (h2), else the CONNECT
/// host.
fn request_host(headers: &HeaderMap, uri: &Uri, tunnel: &Tunnel) -> String {
    headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
        .unwrap_or_else(|| tunnel.target.host.clone())
}

async fn forward(
    request: Request<UpstreamBody>,
    tunnel: &Tunnel,
    state: &OutboundState,
) -> Result<ProxyResponse, MatrixError> {
    let (mut parts, body) = request.into_parts();
    // The homeserver's Host (its idea of the server name) is kept; h2 carries it as
    // :authority, which becomes Host for an HTTP/1.1 upstream.
    let host = parts.headers.get(HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = host {
        parts.headers.insert(HOST, host);
    }
    // The request target is kept byte for byte: X-Matrix signatures cover the raw URI. It
    // goes on in origin form; the senders that need the absolute form add the authority.
    if parts.uri.authority().is_some() {
        parts.uri = Uri::from(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    }
    parts.version = Version::HTTP_11;
    let started = Instant::now();
    let sent = tokio::time::timeout(
        state.request_timeout,
        tunnel.send(state, Request::from_parts(parts, body)),
    )
    .await;
    state
        .hot
        .upstream_seconds(&state.metrics)
        .observe(started.elapsed().as_secs_f64());
    let authority = tunnel.target.authority.as_str();
    match sent {
        Err(_) => Err(MatrixError::gateway_timeout(
            format!(
                "{authority} did not answer within {}s",
                state.request_timeout.as_secs()
            ),
            rules::UPSTREAM_TIMEOUT,
        )),
        Ok(Err(error)) => Err(error),
        Ok(Ok(mut response)) => {
            // The tunnel's own HTTP/1.1 exchange drops them while it reads the head.
            if matches!(response.body(), Either::Left(_)) {
                strip_hop_by_hop(response.headers_mut());
            }
            Ok(response.map(Either::Left))
        }
    }
}

/// Map a failure of the tunnel's own connection like [`upstream_error`] does the pooled
/// client's.
fn send_error(error: SendError, authority: &str) -> MatrixError {
    match error {
        SendError::Dial(dial) => dial_error(&dial, authority).caused_by(dial),
        SendError::Http(error) => MatrixError::bad_gateway(
            format!("request to {authority} failed: {error}"),
            rules::UPSTREAM,
        )
        .caused_by(error),
        SendError::Exchange(error) => MatrixError::bad_gateway(
            format!("request to {authority} failed: {error}"),
            rules::UPSTREAM,
        )
        .caused_by(error),
    }
}

/// Refused private destinations are a policy answer (403); connect and TLS failures are the
/// 502 the homeserver treats as "can't connect".
fn dial_error(dial: &DialError, authority: &str) -> MatrixError {
    match dial {
        DialError::Private { .. } => {
            MatrixError::forbidden(dial.to_string(), rules::PRIVATE_DESTINATION).from_upstream()
        }
        _ => MatrixError::bad_gateway(
            format!("Can't connect to server {authority}: {dial}"),
            rules::UPSTREAM_CONNECT,
        ),
    }
}

/// Map a pooled-client failure as [`dial_error`] and [`send_error`] do; the client's error is
/// kept as the cause.
fn upstream_error(error: hyper_util::client::legacy::Error, authority: &str) -> MatrixError {
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        if let Some(dial) = inner.downcast_ref::<DialError>() {
            return dial_error(dial, authority).caused_by(error);
        }
        source = inner.source();
    }
    let mapped = if error.is_connect() {
        MatrixError::bad_gateway(
            format!("Can't connect to server {authority}: {error}"),
            rules::UPSTREAM_CONNECT,
        )
    } else {
        MatrixError::bad_gateway(
            format!("request to {authority} failed: {error}"),
            rules::UPSTREAM,
        )
    };
    mapped.caused_by(error)
}
