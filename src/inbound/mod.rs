//! The inbound listener: Matrix client-server API and inbound federation in front of the
//! homeserver.
//!
//! Each request passes the named phases of [`handle`]: classify (against the v1.11 table;
//! CORS preflights and TIM-blocked endpoints are answered at once) → authenticate (federation
//! origin) → rules ([`crate::policy`], via [`client`] and [`federation`]) → [`forward`] to the
//! homeserver → respond (the answer relayed untouched, except the `/versions` filter and the
//! CORS fields it lacks) → account. Every rejection is counted by rule and logged once, with
//! the side that failed, without IDs or tokens.
//!
//! HTTP/1.x clients are served by the `http1` module, in the connection's task; HTTP/2
//! clients by hyper. Both hand each request to [`handle`].

pub mod admin_api;
pub mod client;
mod cors;
pub mod federation;
pub mod forward;
mod framing;
mod http1;
mod prefixed;
mod reload;
pub mod sso;
mod support;
pub mod upstream;
pub mod whoami;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::{MatrixError, Side};
use crate::federation::FederationHandle;
use crate::live::Live;
use crate::matrix::endpoints::{Api, Classification, EndpointTable, PathParams, TableError};
use crate::metrics::{ListenerLabels, Metrics};
use crate::rawdata::useragent::HEADER as USERAGENT_HEADER;
use crate::shutdown::Shutdown;
use admin_api::AdminApi;
use forward::{Body, Deadline, Forwarder, Peer, full};
use prefixed::Prefixed;
use whoami::WhoamiCache;

/// Listener name in metrics.
pub const LISTENER: &str = "inbound";
/// How long in-flight connections may finish after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "connection limit reached" log line per this interval.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Template used in metrics for the proxied Synapse admin API.
const SYNAPSE_ADMIN_TEMPLATE: &str = "/_synapse/admin/{*path}";
const SUPPORT_PATH: &str = "/.well-known/matrix/support";
const WELL_KNOWN_SERVER_PATH: &str = "/.well-known/matrix/server";

/// Setting up the inbound listener failed.
#[derive(Debug, thiserror::Error)]
pub enum InboundError {
    #[error("endpoint table: {0}")]
    Endpoints(#[from] TableError),
    #[error("inbound TLS: {0}")]
    Tls(String),
    #[error("HTTP client: {0}")]
    Client(String),
    #[error("policy table: {0}")]
    Policy(&'static crate::policy::data::DataError),
}

/// One finished request, for raw-data (performance) reports.
#[derive(Debug, Clone)]
pub struct ObservedRequest {
    pub endpoint_template: String,
    pub method: Method,
    pub status: u16,
    pub started: time::OffsetDateTime,
    /// Until the response head was ready (bodies stream afterwards).
    pub duration: Duration,
    pub size_in: Option<u64>,
    pub size_out: Option<u64>,
    /// The raw `useragent` header (the clients' JSON description of themselves; not
    /// `User-Agent`), parsed only when the request is reported.
    pub useragent: Option<HeaderValue>,
    /// Server names of inviter and invitee for invites and createRoom with an invitee.
    pub inviter_server: Option<String>,
    pub invitee_server: Option<String>,
    pub is_federation: bool,
    /// Which listener saw the request.
    pub direction: crate::rawdata::Direction,
    /// Whether the status is the upstream's answer (the request passed the rules and was
    /// relayed), not one the proxy gave itself (a rejection, a local answer, an unreachable
    /// upstream).
    pub forwarded: bool,
}

/// Receives every finished request (the raw-data reporter implements it). The inbound and the
/// outbound listener both call it.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, obs: &ObservedRequest);
}

/// Shared state of the inbound listener.
pub struct InboundState {
    pub(crate) config: Config,
    pub(crate) table: EndpointTable,
    pub(crate) federation: FederationHandle,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) forwarder: Forwarder,
    pub(crate) whoami: WhoamiCache,
    pub(crate) admin: AdminApi,
    support: support::SupportLookup,
    versions: VersionsMemo,
    request_counters: RequestCounters,
    tls: Option<TlsAcceptor>,
    observer: RwLock<Option<Arc<dyn RequestObserver>>>,
}

impl std::fmt::Debug for InboundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundState")
            .field("table", &self.table)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

fn load_tls(files: &crate::config::TlsFiles) -> Result<TlsAcceptor, InboundError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| InboundError::Tls(format!("{}: {e}", files.cert_file.display())))?;
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| InboundError::Tls(format!("{}: {e}", files.key_file.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| InboundError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| InboundError::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl InboundState {
    pub fn new(
        config: &Config,
        federation: FederationHandle,
        metrics: Arc<Metrics>,
    ) -> Result<InboundState, InboundError> {
        crate::policy::check_tables().map_err(InboundError::Policy)?;
        // The served table: v1.11, the legacy spellings and aliases, Synapse's SSO pages when
        // they are on, and the operator's extras.
        let mut extra: Vec<String> = Vec::new();
        if config.sso_endpoints_enabled() {
            extra.extend(sso::entries().map(str::to_owned));
        }
        extra.extend(config.inbound.extra_endpoints.iter().cloned());
        let table = EndpointTable::served(&extra)?;
        let tls = config.inbound.tls.as_ref().map(load_tls).transpose()?;
        // reqwest needs a process-wide rustls provider; `main` installs ring, this covers
        // embedders and tests (a second install is a harmless error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(config.homeserver.connect_timeout)
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| InboundError::Client(e.to_string()))?;
        Ok(InboundState {
            config: config.clone(),
            table,
            federation,
            metrics: metrics.clone(),
            forwarder: Forwarder::new(&config.homeserver),
            whoami: WhoamiCache::new(config, client.clone(), metrics),
            support: support::SupportLookup::new(config, client.clone()),
            admin: AdminApi::new(&config.homeserver, client),
            versions: VersionsMemo::default(),
            request_counters: RequestCounters::default(),
            tls,
            observer: RwLock::new(None),
        })
    }

    /// Install the raw-data hook (replaces a previous one).
    pub fn set_observer(&self, observer: Arc<dyn RequestObserver>) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = Some(observer);
        }
    }

    fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.observer.read().ok().and_then(|o| o.clone())
    }

    /// Count and log a rejection: rule, side, method, template, status, and for failures of the
    /// homeserver or the proxy their message and cause. A client's rejection is logged without
    /// its message, which may name users or rooms; never IDs or tokens.
    pub(crate) fn reject(
        &self,
        err: &MatrixError,
        method: &Method,
        template: &str,
    ) -> Response<Body> {
        self.metrics.reject(LISTENER, err.rule);
        let status = err.status.as_u16();
        match err.side {
            Side::Downstream => tracing::info!(
                rule = err.rule,
                side = %err.side,
                method = %method,
                endpoint = template,
                status,
                cause = err.cause.is_some().then(|| err.cause_chain()),
                "request rejected"
            ),
            Side::Upstream | Side::Internal => tracing::warn!(
                rule = err.rule,
                side = %err.side,
                method = %method,
                endpoint = template,
                status,
                error = %err.error,
                cause = err.cause.is_some().then(|| err.cause_chain()),
                "request failed"
            ),
        }
        forward::error_response(err)
    }
}

/// What rule evaluation learned about a request, for observers.
#[derive(Debug, Default, Clone)]
pub(crate) struct RequestNotes {
    pub inviter_server: Option<String>,
    pub invitee_server: Option<String>,
}

/// Read a body a rule must inspect, up to `inbound.max_body_bytes` (413 beyond). A body that
/// arrives in one piece (the usual case) is returned as it is, without a copy.
pub(crate) async fn read_body(mut body: Body, limit: u64) -> Result<Bytes, MatrixError> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit {
        return Err(MatrixError::too_large(limit));
    }
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            MatrixError::bad_json("could not read request body", "body-read").caused_by(e)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if (held as u64).saturating_add(data.len() as u64) > limit {
            return Err(MatrixError::too_large(limit));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
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

/// Handle one request end to end. Each request passes the same phases, in this order:
///
/// 1. [`classify`]: which endpoint of the v1.11 table (or route of the proxy's own) the request
///    addressed, and whether the proxy answers it itself (CORS preflights, unknown paths,
///    blocked endpoints, `/.well-known/matrix/*`).
/// 2. authenticate ([`federation::check_origin`]): a federation request's `X-Matrix` origin must
///    be in the federation list. Client requests have nothing to check here: the homeserver
///    checks access tokens, and the rules that need the user resolve the token themselves
///    ([`whoami`]), so requests no rule needs it for pay no lookup.
/// 3. rules ([`client::apply`], [`federation::apply`]): the TIM rules of the endpoint; they may
///    read and rewrite the body.
/// 4. forward ([`forward::Forwarder::forward`]) to the homeserver.
/// 5. [`respond`]: the answer as the client gets it (the `/versions` filter; a rejection as
///    Matrix error JSON, logged and counted once; the CORS fields).
/// 6. [`account`]: request counters and the raw-data observer.
///
/// The phases are plain functions around the few awaits, which stay in this one function: each
/// nested future is copied into its caller's when first awaited, and an async function per
/// phase cost one such copy per phase and request.
pub(crate) async fn handle(
    state: Arc<InboundState>,
    req: Request<Body>,
    peer: &Peer,
    mut deadline: Deadline<'_>,
) -> Response<Body> {
    let facts = RequestFacts::take(&state, &req);
    let method = req.method().clone();
    let (endpoint, route) = classify(&state, &req);
    let mut notes = RequestNotes::default();
    let decision = match route {
        Route::Local(answer) => Decision::Answer(answer),
        // Boxed, like every rare await that may reach the network: inline, it would enlarge
        // every request's future.
        Route::Support => Decision::Answer(Box::pin(state.support.answer()).await),
        Route::Unchecked => Decision::from(Ok(req.into_parts())),
        Route::Checked(params) if endpoint.is_federation => {
            match Box::pin(federation::check_origin(
                &state,
                endpoint.template,
                req.headers(),
            ))
            .await
            {
                Ok(_) => Decision::from(
                    Box::pin(federation::apply(
                        &state,
                        req,
                        endpoint.template,
                        &params,
                        &mut notes,
                    ))
                    .await,
                ),
                Err(err) => Decision::Answer(Err(err)),
            }
        }
        Route::Checked(params) => {
            Decision::from(client::apply(&state, req, endpoint.template, &params, &mut notes).await)
        }
    };
    let relayed = matches!(decision, Decision::Forward(..));
    let outcome = match decision {
        Decision::Forward(parts, body) => {
            state
                .forwarder
                .forward(parts, body, peer, &mut deadline)
                .await
        }
        Decision::Answer(answer) => answer,
    };
    let forwarded = relayed && outcome.is_ok();
    let outcome = match outcome {
        Ok(response) if wants_versions_filter(&method, endpoint, &response) => {
            filter_versions_response(
                response,
                state.config.inbound.max_body_bytes,
                &state.versions,
            )
            .await
        }
        outcome => outcome,
    };
    let response = respond(&state, &method, endpoint, outcome);
    account(&state, endpoint, facts, notes, forwarded, &response);
    response
}

/// The endpoint a request addressed, named as metrics and raw-data reports name it.
#[derive(Debug, Clone, Copy)]
struct Addressed<'t> {
    /// The endpoint table's template, or a constant for the proxy's own routes.
    template: &'t str,
    is_federation: bool,
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
enum Route<'t> {
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

/// What the authenticate and rules phases decided.
enum Decision {
    Forward(http::request::Parts, Body),
    Answer(Result<Response<Body>, MatrixError>),
}

impl From<Result<(http::request::Parts, Body), MatrixError>> for Decision {
    fn from(checked: Result<(http::request::Parts, Body), MatrixError>) -> Self {
        match checked {
            Ok((parts, body)) => Decision::Forward(parts, body),
            Err(err) => Decision::Answer(Err(err)),
        }
    }
}

impl From<Result<federation::Step, MatrixError>> for Decision {
    fn from(checked: Result<federation::Step, MatrixError>) -> Self {
        match checked {
            Ok(federation::Step::Forward((parts, body))) => Decision::Forward(parts, body),
            Ok(federation::Step::Answer(response)) => Decision::Answer(Ok(response)),
            Err(err) => Decision::Answer(Err(err)),
        }
    }
}

/// Phase 1: which endpoint `req` addresses and where it goes next.
fn classify<'s>(state: &'s InboundState, req: &Request<Body>) -> (Addressed<'s>, Route<'s>) {
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

/// Phase 5: the answer as the client gets it. A rejection becomes Matrix error JSON and is
/// counted and logged here, once, by rule and side; every answer gets the CORS fields it lacks
/// ([`cors::complete`]).
fn respond(
    state: &InboundState,
    method: &Method,
    endpoint: Addressed<'_>,
    outcome: Result<Response<Body>, MatrixError>,
) -> Response<Body> {
    let mut response = match outcome {
        Ok(response) => response,
        Err(err) => state.reject(&err, method, endpoint.template),
    };
    cors::complete(&mut response);
    response
}

/// The homeserver's `/versions` answer loses the versions and features TIM does not allow
/// (see [`crate::policy::versions`]).
fn wants_versions_filter(
    method: &Method,
    endpoint: Addressed<'_>,
    response: &Response<Body>,
) -> bool {
    *method == Method::GET
        && endpoint.template == "/_matrix/client/versions"
        && response.status() == StatusCode::OK
}

/// What raw-data reports need from the request, taken before it is consumed.
struct RequestFacts {
    observer: Arc<dyn RequestObserver>,
    started: time::OffsetDateTime,
    clock: Instant,
    method: Method,
    size_in: Option<u64>,
    useragent: Option<HeaderValue>,
}

impl RequestFacts {
    /// Only a raw-data observer needs timestamps and header copies; without one the request
    /// path skips them.
    fn take(state: &InboundState, req: &Request<Body>) -> Option<Self> {
        let observer = state.observer()?;
        Some(RequestFacts {
            observer,
            started: time::OffsetDateTime::now_utc(),
            clock: Instant::now(),
            method: req.method().clone(),
            size_in: upstream::content_length(req.headers(), req.extensions()),
            useragent: req.headers().get(USERAGENT_HEADER).cloned(),
        })
    }
}

/// Phase 6: count the request by endpoint and status, and tell the raw-data observer.
fn account(
    state: &InboundState,
    endpoint: Addressed<'_>,
    facts: Option<RequestFacts>,
    notes: RequestNotes,
    forwarded: bool,
    response: &Response<Body>,
) {
    let status = response.status().as_u16();
    state
        .request_counters
        .get(&state.metrics, endpoint.template, status)
        .inc();
    if let Some(facts) = facts {
        let size_out = upstream::content_length(response.headers(), response.extensions());
        facts.observer.observe(&ObservedRequest {
            endpoint_template: endpoint.template.to_owned(),
            method: facts.method,
            status,
            started: facts.started,
            duration: facts.clock.elapsed(),
            size_in: facts.size_in,
            size_out,
            useragent: facts.useragent,
            inviter_server: notes.inviter_server,
            invitee_server: notes.invitee_server,
            is_federation: endpoint.is_federation,
            direction: crate::rawdata::Direction::Inbound,
            forwarded,
        });
    }
}

/// `timproxy_requests_total` counters of this listener by endpoint template and status.
///
/// Templates are borrowed from the endpoint table or are constants, so they live as long as the
/// listener and their address identifies them: finding a counter hashes two numbers, where the
/// metric family hashed and copied the template on every request.
#[derive(Debug, Default)]
struct RequestCounters {
    by_template: RwLock<HashMap<(usize, usize, u16), Counter, BuildAddressHasher>>,
}

/// Hashes the integer keys of [`RequestCounters`] with one multiply each; they are addresses
/// chosen by the allocator, not by clients, so a keyed hash buys nothing there.
#[derive(Debug, Default, Clone, Copy)]
struct BuildAddressHasher;

impl std::hash::BuildHasher for BuildAddressHasher {
    type Hasher = AddressHasher;
    fn build_hasher(&self) -> AddressHasher {
        AddressHasher(0)
    }
}

#[derive(Debug)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl RequestCounters {
    fn get(&self, metrics: &Metrics, template: &str, status: u16) -> Counter {
        let key = (template.as_ptr() as usize, template.len(), status);
        if let Ok(known) = self.by_template.read()
            && let Some(counter) = known.get(&key)
        {
            return counter.clone();
        }
        let counter = metrics.request_counter(LISTENER, template, status);
        if let Ok(mut known) = self.by_template.write() {
            known.insert(key, counter.clone());
        }
        counter
    }
}

/// The last `/versions` answer of the homeserver and its filtered form: the answer only
/// changes on a homeserver upgrade, and clients ask for it constantly.
#[derive(Debug, Default)]
pub(crate) struct VersionsMemo {
    last: std::sync::Mutex<Option<(Bytes, Bytes)>>,
}

impl VersionsMemo {
    fn filtered(&self, upstream: Bytes) -> Bytes {
        if let Ok(last) = self.last.lock()
            && let Some((seen, filtered)) = last.as_ref()
            && *seen == upstream
        {
            return filtered.clone();
        }
        let filtered = crate::policy::versions::filter_versions(&upstream)
            .map(Bytes::from)
            .unwrap_or_else(|| upstream.clone());
        if let Ok(mut last) = self.last.lock() {
            *last = Some((upstream, filtered.clone()));
        }
        filtered
    }
}

async fn filter_versions_response(
    response: Response<Body>,
    limit: u64,
    memo: &VersionsMemo,
) -> Result<Response<Body>, MatrixError> {
    let mut response = response;
    upstream::materialize(&mut response);
    let (mut parts, mut body) = response.into_parts();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            MatrixError::bad_gateway("could not read /versions answer", "versions").caused_by(e)
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(
                    MatrixError::bad_gateway("/versions answer too large", "versions")
                        .caused_by(format!("more than inbound.max_body_bytes ({limit})")),
                );
            }
            buf.extend_from_slice(&data);
        }
    }
    let out = memo.filtered(buf.freeze());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Response::from_parts(parts, full(out)))
}

/// Serve the inbound listener until `shutdown` fires, then drain for at most
/// [`DRAIN_TIMEOUT`]. Plain HTTP, or TLS when `inbound.tls` is set; HTTP/1.x ([`http1`]) and
/// h2 (by ALPN or prior knowledge).
///
/// Each request runs on the state current when it began ([`Live`]); a new connection takes
/// its TLS certificate and timeouts from the state current when it was accepted. The
/// connection limit is the one the listener started with.
pub async fn serve(
    listener: TcpListener,
    state: impl Into<Live<InboundState>>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let live: Live<InboundState> = state.into();
    let state = live.load();
    let limit = Arc::new(Semaphore::new(state.config.inbound.max_connections.max(1)));
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let gauge = state
        .metrics
        .open_connections
        .get_or_create(&ListenerLabels { listener: LISTENER })
        .clone();
    let max_connections = state.config.inbound.max_connections.max(1);
    let limit_reached = state
        .metrics
        .connection_limit_reached
        .get_or_create(&ListenerLabels { listener: LISTENER })
        .clone();
    let mut limit_logged: Option<Instant> = None;
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(tokio::sync::TryAcquireError::Closed) => break,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                // Every slot is taken: new connections now wait unanswered in the kernel's
                // accept backlog. Operators must see that, but a saturated listener must not
                // flood the log either — one line per minute, the counter has every time.
                limit_reached.inc();
                if limit_logged.is_none_or(|at| at.elapsed() >= LIMIT_LOG_INTERVAL) {
                    limit_logged = Some(Instant::now());
                    tracing::warn!(
                        max_connections,
                        "inbound connection limit reached (inbound.max_connections); new connections wait until one closes"
                    );
                }
                tokio::select! {
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                    _ = shutdown.wait() => break,
                }
            }
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %e, "inbound accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        tasks.spawn(connection_task(
            live.clone(),
            stream,
            remote,
            drain_rx.clone(),
            gauge.clone(),
            permit,
        ));
    }
    drop(listener);
    let _ = drain_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "inbound drain timed out; closing connections"
        );
        tasks.abort_all();
    }
    Ok(())
}

/// One connection's task, counted in the open-connections gauge and holding a
/// `max_connections` slot until it ends. Its size is what every idle connection costs beyond
/// its socket (a test keeps it small).
async fn connection_task(
    live: Live<InboundState>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: watch::Receiver<bool>,
    gauge: Gauge,
    permit: OwnedSemaphorePermit,
) {
    gauge.inc();
    serve_connection(live, stream, remote, drain).await;
    gauge.dec();
    drop(permit);
}

async fn serve_connection(
    live: Live<InboundState>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    let tls = live.load().tls.clone();
    match tls {
        // Boxed: TLS state is several KiB, and plain connections should not carry a slot for
        // it.
        Some(acceptor) => Box::pin(serve_tls(live, acceptor, stream, remote, drain)).await,
        None => {
            let trusted = live.load().config.inbound.is_trusted_proxy(remote.ip());
            let peer = Arc::new(Peer::new(remote, false, trusted));
            serve_http(live, stream, peer, drain).await;
        }
    }
}

/// HTTP/1.x, then HTTP/2 if the client turns out to speak it with prior knowledge (the bytes
/// read so far are put back in front).
async fn serve_http<I>(
    live: Live<InboundState>,
    io: I,
    peer: Arc<Peer>,
    drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some((io, read)) = http1::serve(io, &live, &peer, drain.clone()).await {
        // Boxed: hyper's h2 connection is large, and HTTP/1 connections should not carry a
        // slot for it.
        Box::pin(serve_h2(
            live,
            TokioIo::new(Prefixed::new(read, io)),
            peer,
            drain,
        ))
        .await;
    }
}

async fn serve_tls(
    live: Live<InboundState>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    let header_timeout = live.load().config.inbound.header_read_timeout;
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "inbound TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let trusted = live.load().config.inbound.is_trusted_proxy(remote.ip());
    let peer = Arc::new(Peer::new(remote, true, trusted));
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(live, TokioIo::new(tls), peer, drain).await;
    } else {
        serve_http(live, tls, peer, drain).await;
    }
}

type H2Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// HTTP/2 (by ALPN, or with prior knowledge on a connection [`http1::serve`] handed over).
async fn serve_h2<I>(
    live: Live<InboundState>,
    io: I,
    peer: Arc<Peer>,
    mut drain: watch::Receiver<bool>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new());
    // h2 has no header timeout of its own: a client that sends no request would hold a
    // `max_connections` slot forever. So the first request must arrive within
    // `inbound.header_read_timeout`.
    let header_timeout = live.load().config.inbound.header_read_timeout;
    let first_request = Arc::new(tokio::sync::Notify::new());
    let seen = first_request.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        seen.notify_one();
        let state = live.load();
        let peer = peer.clone();
        // Boxed: hyper keeps the slot for it inside the connection.
        let answer: H2Answer = Box::pin(async move {
            let deadline =
                Deadline::Own(state.forwarder.deadline_from(tokio::time::Instant::now()));
            let mut req = req.map(forward::stream);
            // HTTP/1 heads lose their hop-by-hop fields while they are parsed; h2 may still
            // carry `te`.
            crate::hop_by_hop::strip_hop_by_hop(req.headers_mut());
            let mut response = handle(state, req, &peer, deadline).await;
            upstream::materialize(&mut response);
            Ok::<_, Infallible>(response)
        });
        answer
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    if *drain.borrow() {
        conn.as_mut().graceful_shutdown();
    }
    let first_deadline = tokio::time::timeout(header_timeout, first_request.notified());
    tokio::pin!(first_deadline);
    let mut awaiting_first = true;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "inbound connection ended with error");
                }
                return;
            }
            _ = drain.changed() => {
                conn.as_mut().graceful_shutdown();
                break;
            }
            arrived = &mut first_deadline, if awaiting_first => {
                if arrived.is_err() {
                    tracing::debug!("inbound connection sent no request within header_read_timeout");
                    return;
                }
                awaiting_first = false;
            }
        }
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "inbound connection ended with error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of six arguments returns, without calling it.
    fn future_size<A, B, C, D, E, G, F: Future>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle HTTP/1 connection's memory is its task (this future plus tokio's task header),
    /// its socket's registration, its timer and drain waiter: the target is 2 KiB in all
    /// (`benches/memory.sh`). A request's state (the handler's future alone is several KiB) is
    /// boxed while it runs; TLS, h2, a refusal and the lingering close are boxed too, so the
    /// task keeps only the connection's own fields and the waits between requests. This test
    /// runs unoptimised, where the future measured 1,376 bytes (optimised builds lay futures out
    /// tighter); 1.5 KiB leaves room for a field or two, and anything that moves a request's
    /// state back into the connection fails it.
    #[test]
    fn connection_task_stays_small() {
        let size = future_size(connection_task);
        eprintln!("connection task future: {size} bytes");
        assert!(size <= 1536, "connection task future is {size} bytes");
    }
}
