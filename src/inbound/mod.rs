//! The inbound listener: Matrix client-server API and inbound federation in front of the
//! homeserver.
//!
//! Each request reads top-down: a CORS preflight (`OPTIONS`) is answered at once (`cors`) →
//! [`crate::matrix::endpoints`] classifies it against the v1.11 table → TIM blocks and rules
//! ([`crate::policy`], via [`client`] and [`federation`]) → [`forward`] streams it to the
//! homeserver → the answer is relayed untouched (except the `/versions` filter and the CORS
//! fields it lacks). Every rejection is counted by rule and logged once, without IDs or
//! tokens.
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
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::error::MatrixError;
use crate::federation::FederationHandle;
use crate::matrix::endpoints::{Api, Classification, EndpointTable, TableError};
use crate::metrics::{ListenerLabels, Metrics};
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
    /// Raw `User-Agent` header value.
    pub user_agent: Option<String>,
    /// Server names of inviter and invitee for invites and createRoom with an invitee.
    pub inviter_server: Option<String>,
    pub invitee_server: Option<String>,
    pub is_federation: bool,
}

/// Receives every finished request (the raw-data reporter implements it).
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
        let mut endpoints = crate::matrix::endpoints::v1_11();
        if config.sso_endpoints_enabled() {
            endpoints.extend(sso::endpoints()?);
        }
        for entry in &config.inbound.extra_endpoints {
            endpoints.push(crate::matrix::endpoints::parse_extra(entry)?);
        }
        let table = EndpointTable::new(endpoints)?;
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

    /// Count and log a rejection (rule, method, template, status — never IDs or tokens).
    pub(crate) fn reject(
        &self,
        err: &MatrixError,
        method: &Method,
        template: &str,
    ) -> Response<Body> {
        self.metrics.reject(LISTENER, err.rule);
        tracing::info!(
            rule = err.rule,
            method = %method,
            endpoint = template,
            status = err.status.as_u16(),
            "request rejected"
        );
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
        let Ok(frame) = frame else {
            return Err(MatrixError::bad_json(
                "could not read request body",
                "body-read",
            ));
        };
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

/// What raw-data reports need from the request, taken before it is consumed.
struct RequestFacts {
    started: time::OffsetDateTime,
    clock: Instant,
    method: Method,
    size_in: Option<u64>,
    user_agent: Option<String>,
}

/// Handle one request end to end.
pub(crate) async fn handle(
    state: Arc<InboundState>,
    req: Request<Body>,
    peer: &Peer,
    mut deadline: Deadline<'_>,
) -> Response<Body> {
    // Only a raw-data observer needs timestamps and header copies; without one the request
    // path skips them.
    let observer = state.observer();
    let facts = observer.as_ref().map(|_| RequestFacts {
        started: time::OffsetDateTime::now_utc(),
        clock: Instant::now(),
        method: req.method().clone(),
        size_in: upstream::content_length(req.headers(), req.extensions()),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    // Classify, apply the rules, forward. The endpoint template is borrowed from the endpoint
    // table (for metrics and reports). A block rather than a function of its own: each nested
    // future is copied into its caller's when first awaited, and this one is large.
    let deadline = &mut deadline;
    let (template, is_federation, notes, mut response) = 'route: {
        let method = req.method().clone();
        if method == Method::OPTIONS {
            break 'route (
                cors::PREFLIGHT_TEMPLATE,
                false,
                RequestNotes::default(),
                cors::preflight(),
            );
        }
        let path = req.uri().path();
        if path == WELL_KNOWN_SERVER_PATH && method == Method::GET {
            break 'route (
                WELL_KNOWN_SERVER_PATH,
                true,
                RequestNotes::default(),
                well_known_server(&state.config),
            );
        }
        if path == SUPPORT_PATH && method == Method::GET {
            let response = match Box::pin(state.support.answer()).await {
                Ok(response) => response,
                Err(e) => state.reject(&e, &method, SUPPORT_PATH),
            };
            break 'route (SUPPORT_PATH, false, RequestNotes::default(), response);
        }
        if state.config.inbound.expose_synapse_admin && path.starts_with("/_synapse/admin/") {
            let (parts, body) = req.into_parts();
            let response = match state.forwarder.forward(parts, body, peer, deadline).await {
                Ok(r) => r,
                Err(e) => state.reject(&e, &method, SYNAPSE_ADMIN_TEMPLATE),
            };
            break 'route (
                SYNAPSE_ADMIN_TEMPLATE,
                false,
                RequestNotes::default(),
                response,
            );
        }
        let (endpoint, params) = match state.table.classify(&method, path) {
            Classification::NotFound => {
                let err = MatrixError::unrecognized_path();
                break 'route (
                    "unknown",
                    false,
                    RequestNotes::default(),
                    state.reject(&err, &method, "unknown"),
                );
            }
            Classification::MethodNotAllowed { template } => {
                let err = crate::policy::blocked_endpoint(template)
                    .unwrap_or_else(MatrixError::method_not_allowed);
                let response = state.reject(&err, &method, template);
                break 'route (template, false, RequestNotes::default(), response);
            }
            Classification::Matched { endpoint, params } => (endpoint, params),
        };
        let template = endpoint.template.as_str();
        let is_federation = endpoint.api == Api::ServerServer || path.starts_with("/_matrix/key/");
        if let Some(err) = crate::policy::blocked_endpoint(template) {
            let response = state.reject(&err, &method, template);
            break 'route (template, is_federation, RequestNotes::default(), response);
        }
        let mut notes = RequestNotes::default();
        // Boxed: the federation rules' future (X-Matrix, list lookups, invites) would otherwise
        // enlarge every client request's future too.
        let outcome = if is_federation {
            Box::pin(federation::apply(
                &state, req, template, &params, &mut notes,
            ))
            .await
        } else {
            client::apply(&state, req, template, &params, &mut notes)
                .await
                .map(federation::Step::Forward)
        };
        let (parts, body) = match outcome {
            Ok(federation::Step::Forward(ready)) => ready,
            Ok(federation::Step::Answer(response)) => {
                break 'route (template, is_federation, notes, response);
            }
            Err(err) => {
                let response = state.reject(&err, &method, template);
                break 'route (template, is_federation, notes, response);
            }
        };
        let response = match state.forwarder.forward(parts, body, peer, deadline).await {
            Ok(response) => response,
            Err(err) => state.reject(&err, &method, template),
        };
        let response = if method == Method::GET
            && template == "/_matrix/client/versions"
            && response.status() == StatusCode::OK
        {
            filter_versions_response(
                response,
                state.config.inbound.max_body_bytes,
                &state.versions,
            )
            .await
        } else {
            response
        };
        (template, is_federation, notes, response)
    };
    cors::complete(&mut response);
    let status = response.status().as_u16();
    state
        .request_counters
        .get(&state.metrics, template, status)
        .inc();
    if let (Some(observer), Some(facts)) = (observer, facts) {
        let size_out = upstream::content_length(response.headers(), response.extensions());
        observer.observe(&ObservedRequest {
            endpoint_template: template.to_owned(),
            method: facts.method,
            status,
            started: facts.started,
            duration: facts.clock.elapsed(),
            size_in: facts.size_in,
            size_out,
            user_agent: facts.user_agent,
            inviter_server: notes.inviter_server,
            invitee_server: notes.invitee_server,
            is_federation,
        });
    }
    response
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
) -> Response<Body> {
    let mut response = response;
    upstream::materialize(&mut response);
    let (mut parts, mut body) = response.into_parts();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return forward::error_response(&MatrixError::bad_gateway(
                "could not read /versions answer",
                "versions",
            ));
        };
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return forward::error_response(&MatrixError::bad_gateway(
                    "/versions answer too large",
                    "versions",
                ));
            }
            buf.extend_from_slice(&data);
        }
    }
    let out = memo.filtered(buf.freeze());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Response::from_parts(parts, full(out))
}

/// Serve the inbound listener until `shutdown` fires, then drain for at most
/// [`DRAIN_TIMEOUT`]. Plain HTTP, or TLS when `inbound.tls` is set; HTTP/1.x ([`http1`]) and
/// h2 (by ALPN or prior knowledge).
pub async fn serve(
    listener: TcpListener,
    state: Arc<InboundState>,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
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
        let state = state.clone();
        let drain = drain_rx.clone();
        let gauge = gauge.clone();
        tasks.spawn(async move {
            gauge.inc();
            serve_connection(state, stream, remote, drain).await;
            gauge.dec();
            drop(permit);
        });
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

async fn serve_connection(
    state: Arc<InboundState>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    match state.tls.clone() {
        // Boxed: TLS state is several KiB, and plain connections should not carry a slot for
        // it.
        Some(acceptor) => Box::pin(serve_tls(state, acceptor, stream, remote, drain)).await,
        None => {
            let trusted = state.config.inbound.is_trusted_proxy(remote.ip());
            let peer = Arc::new(Peer::new(remote, false, trusted));
            serve_http(state, stream, peer, drain).await;
        }
    }
}

/// HTTP/1.x, then HTTP/2 if the client turns out to speak it with prior knowledge (the bytes
/// read so far are put back in front).
async fn serve_http<I>(
    state: Arc<InboundState>,
    io: I,
    peer: Arc<Peer>,
    drain: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    if let Some((io, read)) = http1::serve(io, &state, &peer, drain.clone()).await {
        serve_h2(state, TokioIo::new(Prefixed::new(read, io)), peer, drain).await;
    }
}

async fn serve_tls(
    state: Arc<InboundState>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: watch::Receiver<bool>,
) {
    let header_timeout = state.config.inbound.header_read_timeout;
    let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "inbound TLS handshake failed");
            return;
        }
        Err(_) => return,
    };
    let trusted = state.config.inbound.is_trusted_proxy(remote.ip());
    let peer = Arc::new(Peer::new(remote, true, trusted));
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(state, TokioIo::new(tls), peer, drain).await;
    } else {
        serve_http(state, tls, peer, drain).await;
    }
}

type H2Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// HTTP/2 (by ALPN, or with prior knowledge on a connection [`http1::serve`] handed over).
async fn serve_h2<I>(
    state: Arc<InboundState>,
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
    let header_timeout = state.config.inbound.header_read_timeout;
    let first_request = Arc::new(tokio::sync::Notify::new());
    let seen = first_request.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        seen.notify_one();
        let state = state.clone();
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
