//! The outbound listener: the forward proxy the homeserver uses (`HTTPS_PROXY`) for all
//! outgoing federation (TIM-PROXY §5), and for its other outgoing HTTPS.
//!
//! One connection reads top-down: [`connect`] reads `CONNECT host:port` and decides whether
//! the host may be reached at all, and how. A destination in `outbound.passthrough` (identity
//! provider, push gateway, …) is dialled and tunnelled as it is ([`passthrough`]). Everything
//! else, including the `outbound.sso_hosts`, is intercepted: `200` → [`mitm`] answers the TLS handshake with a leaf for the CONNECT
//! host from [`crate::tls::Authority`] (any other SNI is refused) → inner HTTP/1.1 or h2
//! requests → [`forward`] checks each request's destination ([`route`]) and relays it over a
//! verified TLS connection to the CONNECT target ([`upstream`]): an HTTP/1.1 tunnel's own
//! connection, which its requests write and read themselves (`exchange`), or, for h2
//! tunnels, the pooled client.

pub mod connect;
mod exchange;
pub mod forward;
pub mod mitm;
mod own;
pub mod passthrough;
mod reload;
pub mod route;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use http::StatusCode;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::net::{TcpListener, TcpStream};

use crate::accept;
use crate::config::Config;
use crate::error::MatrixError;
use crate::federation::{FederationHandle, Membership, list::domain_of};
use crate::inbound::RequestObserver;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::tls::Authority;

use connect::{ConnectTarget, Head, HeadError};
use passthrough::HostList;
use upstream::{AcceptAnyCertificate, DialPolicy, UpstreamConnector};

/// Listener name in metrics and logs.
pub const LISTENER: &str = "outbound";

/// How long an idle upstream connection is kept for later requests and tunnels.
const UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Rule ids of outbound rejections (`timproxy_rejections_total{rule=…}`).
pub mod rules {
    /// CONNECT to a host that is neither federated nor allowed.
    pub const CONNECT_NOT_FEDERATED: &str = "A_25534-connect";
    /// X-Matrix `destination` not federated.
    pub const DESTINATION_NOT_FEDERATED: &str = "A_25534-destination";
    /// Federation request without X-Matrix `destination`.
    pub const X_MATRIX_MISSING: &str = "x-matrix-missing";
    /// An X-Matrix header the receiver could read differently (several `Authorization`
    /// fields, quoted commas, repeated parameters, …); see [`crate::matrix::x_matrix`].
    pub const X_MATRIX_AMBIGUOUS: &str = "x-matrix-ambiguous";
    /// No usable federation list: fail closed.
    pub const LIST_UNAVAILABLE: &str = "A_25537/fed-list-expired";
    /// `/.well-known/matrix/server` of an unfederated Host.
    pub const WELL_KNOWN_HOST: &str = "outbound-well-known-host";
    /// Media `{serverName}` not federated (A_26328).
    pub const MEDIA_SERVER_NAME: &str = "outbound-media-servername";
    /// Path outside federation, keys, media, push in an intercepted tunnel.
    pub const UNKNOWN_PATH: &str = "outbound-unknown-path";
    /// A non-CONNECT proxy request (`GET http://…`).
    pub const PLAIN_HTTP: &str = "outbound-plain-http";
    /// Unparsable proxy request head.
    pub const CONNECT_PARSE: &str = "connect-parse";
    /// CONNECT without target.
    pub const CONNECT_NO_DESTINATION: &str = "connect-no-destination";
    /// Destination resolves only to loopback/private/link-local addresses.
    pub const PRIVATE_DESTINATION: &str = "outbound-private-destination";
    /// The TLS ClientHello inside a tunnel names another host than the CONNECT line.
    pub const SNI_MISMATCH: &str = "outbound-sni-mismatch";
    /// Upstream connect or TLS failure.
    pub const UPSTREAM_CONNECT: &str = "outbound-upstream-connect";
    /// Upstream failed after connecting.
    pub const UPSTREAM: &str = "outbound-upstream";
    /// Upstream gave no response head in time.
    pub const UPSTREAM_TIMEOUT: &str = "outbound-upstream-timeout";
}

/// Errors building the outbound state from configuration.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("federation.trusted_ca_files: cannot read {}: {source}", path.display())]
    TrustedCaRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("federation.trusted_ca_files: {} holds no usable PEM certificate{reason}", path.display())]
    TrustedCaInvalid { path: PathBuf, reason: String },
    #[error("upstream TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Upstream client type: bodies stream straight from the tunnel to the remote.
pub(crate) type UpstreamClient = Client<UpstreamConnector, forward::UpstreamBody>;

/// Everything one outbound listener needs; shared by all its connections.
pub struct OutboundState {
    pub(crate) federation: FederationHandle,
    pub(crate) authority: Arc<Authority>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) client: UpstreamClient,
    pub(crate) connector: UpstreamConnector,
    pub(crate) hot: forward::HotMetrics,
    enforce: bool,
    allow_hosts: Vec<String>,
    passthrough: HostList,
    /// `outbound.sso_hosts`: intercepted without the federation-list check.
    sso_hosts: HostList,
    pub(crate) request_timeout: Duration,
    /// `homeserver.server_name`: its own users need no federation-list entry.
    pub(crate) own_server: String,
    /// `federation.max_event_body_bytes`.
    pub(crate) event_body_limit: u64,
    handshake_timeout: Duration,
    drain_timeout: Duration,
    /// The raw-data hook (set by the server when raw data is on).
    observer: RwLock<Option<Arc<dyn RequestObserver>>>,
}

impl std::fmt::Debug for OutboundState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundState")
            .field("enforce", &self.enforce)
            .field("allow_hosts", &self.allow_hosts)
            .field("passthrough", &self.passthrough)
            .field("sso_hosts", &self.sso_hosts)
            .finish()
    }
}

impl OutboundState {
    /// Build the upstream trust (system roots + `federation.trusted_ca_files`, or the loudly
    /// logged accept-anything test flag) and the pooled client.
    pub fn new(
        config: &Config,
        federation: FederationHandle,
        authority: Arc<Authority>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, OutboundError> {
        let out = &config.outbound;
        let provider = crate::tls::crypto_provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let mut tls = if out.danger_accept_invalid_upstream_certs {
            tracing::warn!(
                "DANGER: outbound.danger_accept_invalid_upstream_certs is set: upstream TLS \
                 certificates are NOT verified; anyone on the path can impersonate remote \
                 homeservers. Use this for local tests only."
            );
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            builder
                .with_root_certificates(upstream_roots(&config.federation.trusted_ca_files)?)
                .with_no_client_auth()
        };
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let connector = UpstreamConnector::new(
            Arc::new(tls),
            DialPolicy {
                allow_private: out.allow_private_destinations,
                resolve: out
                    .resolve
                    .iter()
                    .map(|(host, ip)| (host.to_ascii_lowercase(), *ip))
                    .collect(),
                connect_timeout: out.connect_timeout,
                max_idle_per_host: out.max_idle_per_host,
                idle_timeout: UPSTREAM_IDLE_TIMEOUT,
            },
        );
        if out.allow_private_destinations {
            tracing::warn!(
                "outbound.allow_private_destinations is set: the proxy may connect to \
                 loopback and private addresses"
            );
        }
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(out.max_idle_per_host)
            .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
            .build(connector.clone());
        Ok(Self {
            federation,
            authority,
            metrics,
            client,
            connector,
            hot: forward::HotMetrics::default(),
            enforce: config.outbound_enforce(),
            allow_hosts: lower_all(&out.allow_hosts),
            passthrough: HostList::new(&out.passthrough),
            sso_hosts: HostList::new(&out.sso_hosts),
            request_timeout: out.request_timeout,
            own_server: config.homeserver.server_name.clone(),
            event_body_limit: config.federation.max_event_body_bytes,
            handshake_timeout: out.handshake_timeout,
            drain_timeout: out.drain_timeout,
            observer: RwLock::new(None),
        })
    }

    /// Install (or with `None` remove) the raw-data hook.
    pub fn replace_observer(&self, observer: Option<Arc<dyn RequestObserver>>) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = observer;
        }
    }

    pub(crate) fn observer(&self) -> Option<Arc<dyn RequestObserver>> {
        self.observer.read().ok().and_then(|o| o.clone())
    }

    /// Whether destination checks run at all (`outbound.enforce`, default `federation.enforce`).
    pub fn enforce(&self) -> bool {
        self.enforce
    }

    /// Whether a tunnel's CONNECT target is one of `outbound.sso_hosts`: paths outside the
    /// federation routes (CAS ticket validation, OIDC discovery and token calls) are forwarded
    /// to it.
    pub(crate) fn is_sso_host(&self, target: &ConnectTarget) -> bool {
        self.sso_hosts.contains(target)
    }

    /// Decide a CONNECT by its host alone. A `passthrough` destination is tunnelled. An
    /// `sso_hosts` destination is intercepted without looking at the federation list (the
    /// reference's `ssoDomain`: the homeserver's SSO server, which needs no list entry). Any
    /// other is federation, intercepted, for federated hosts, `allow_hosts`, and subdomains of
    /// federated domains (a server name delegated to `matrix.example.org` via well-known or
    /// SRV; the per-request `destination` check still applies inside). Everything else is
    /// refused before any TLS or upstream connection.
    pub(crate) async fn check_connect(
        &self,
        target: &ConnectTarget,
    ) -> Result<TunnelKind, MatrixError> {
        if self.passthrough.contains(target) {
            return Ok(TunnelKind::PassThrough);
        }
        if !self.enforce
            || self.sso_hosts.contains(target)
            || host_listed(&self.allow_hosts, target)
        {
            return Ok(TunnelKind::Intercepted);
        }
        match self.federation.check(&target.host).await {
            Membership::Member { .. } => return Ok(TunnelKind::Intercepted),
            Membership::Unavailable(reason) => return Err(list_unavailable(&reason)),
            Membership::NotMember => {}
        }
        let mut rest = target.host.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if parent.contains('.')
                && matches!(self.federation.lookup(parent), Membership::Member { .. })
            {
                return Ok(TunnelKind::Intercepted);
            }
            rest = parent;
        }
        Err(MatrixError::forbidden(
            format!("{} not part of federation", target.host),
            rules::CONNECT_NOT_FEDERATED,
        ))
    }

    /// Whether a Matrix server name may be talked to: listed in `allow_hosts` or federated
    /// (with one refresh-on-miss). `Err` when there is no usable list (fail closed).
    pub(crate) async fn server_allowed(&self, server_name: &str) -> Result<bool, MatrixError> {
        let host = domain_of(server_name).to_ascii_lowercase();
        if self
            .allow_hosts
            .iter()
            .any(|h| *h == host || h.eq_ignore_ascii_case(server_name))
        {
            return Ok(true);
        }
        match self.federation.check(server_name).await {
            Membership::Member { .. } => Ok(true),
            Membership::NotMember => Ok(false),
            Membership::Unavailable(reason) => Err(list_unavailable(&reason)),
        }
    }
}

/// How an allowed CONNECT is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TunnelKind {
    /// Federation: TLS intercepted, every request checked.
    Intercepted,
    /// A non-federation destination from `outbound.passthrough`: bytes copied as they are.
    PassThrough,
}

fn list_unavailable(reason: &str) -> MatrixError {
    tracing::warn!(
        reason,
        "outbound: no usable federation list, refusing (fail closed)"
    );
    MatrixError::forbidden(
        "federation list missing or older than max age",
        rules::LIST_UNAVAILABLE,
    )
}

fn lower_all(hosts: &[String]) -> Vec<String> {
    hosts
        .iter()
        .map(|h| h.trim().to_ascii_lowercase())
        .collect()
}

/// An entry matches the CONNECT host, or exactly `host:port` when it names a port.
fn host_listed(list: &[String], target: &ConnectTarget) -> bool {
    list.iter()
        .any(|entry| *entry == target.host || *entry == target.authority.as_str())
}

/// System roots plus the configured extra CAs. An unreadable or empty extra CA file is a
/// configuration error: silently trusting less than configured would break federation
/// in a confusing way.
fn upstream_roots(extra: &[PathBuf]) -> Result<RootCertStore, OutboundError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "outbound: skipping an unreadable system root certificate");
    }
    let (added, _) = roots.add_parsable_certificates(native.certs);
    for path in extra {
        let pem = std::fs::read(path).map_err(|source| OutboundError::TrustedCaRead {
            path: path.clone(),
            source,
        })?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|e| OutboundError::TrustedCaInvalid {
                path: path.clone(),
                reason: format!(" ({e})"),
            })?;
        if certs.is_empty() {
            return Err(OutboundError::TrustedCaInvalid {
                path: path.clone(),
                reason: String::new(),
            });
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| OutboundError::TrustedCaInvalid {
                    path: path.clone(),
                    reason: format!(" ({e})"),
                })?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "outbound: no trusted root certificates (no system roots, no \
             federation.trusted_ca_files): every upstream TLS handshake will fail"
        );
    } else {
        tracing::debug!(
            system_roots = added,
            extra_files = extra.len(),
            "outbound: upstream trust loaded"
        );
    }
    Ok(roots)
}

/// Accept connections until `shutdown` fires, then let open tunnels finish in-flight requests
/// for at most `outbound.drain_timeout`.
///
/// A new tunnel is decided and intercepted with the state current when it was accepted (its
/// CONNECT check, its leaf certificate); each request inside a tunnel runs on the state
/// current when it began ([`Live`]).
pub async fn serve(
    listener: TcpListener,
    state: impl Into<Live<OutboundState>>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let live: Live<OutboundState> = state.into();
    let metrics = live.load().metrics.clone();
    let spec = accept::Listener {
        name: LISTENER,
        metrics: &metrics,
        max_connections: None,
    };
    accept::serve_connections(
        listener,
        spec,
        shutdown,
        || live.load().drain_timeout,
        |stream, peer, drain| handle_connection(stream, peer, live.clone(), drain),
    )
    .await;
    Ok(())
}

/// One tunnel, from the CONNECT to its close; `shutdown` fires when the listener drains.
async fn handle_connection(
    stream: TcpStream,
    peer: SocketAddr,
    live: Live<OutboundState>,
    shutdown: Shutdown,
) {
    let state = live.load();
    let mut stopping = shutdown.clone();
    let opened = tokio::select! {
        opened = tokio::time::timeout(state.handshake_timeout, open_tunnel(stream, &state)) => opened,
        // A tunnel still being set up holds no request worth draining.
        _ = stopping.wait() => return,
    };
    match opened {
        Ok(Some(Opened::Intercepted(tls, target))) => {
            // The tunnel loads the live configuration per request.
            drop(state);
            mitm::serve_tunnel(*tls, target, live, shutdown).await;
        }
        // The dial has `outbound.connect_timeout` of its own.
        Ok(Some(Opened::PassThrough {
            client,
            early,
            target,
        })) => passthrough::serve(client, early, target, &state).await,
        Ok(None) => {}
        Err(_) => tracing::debug!(%peer, "outbound: CONNECT or TLS handshake timed out"),
    }
}

/// A CONNECT the proxy serves.
enum Opened {
    /// Answered `200`, TLS with the homeserver established.
    Intercepted(Box<mitm::TunnelStream>, ConnectTarget),
    /// Allowed, not answered yet: the destination is dialled first.
    PassThrough {
        client: TcpStream,
        early: bytes::Bytes,
        target: ConnectTarget,
    },
}

/// CONNECT → decision → `200` → TLS, or a pass-through destination handed back before its
/// `200`. `None` when the connection ended (answered or failed).
async fn open_tunnel(mut stream: TcpStream, state: &Arc<OutboundState>) -> Option<Opened> {
    let (head, rest) = match connect::read_head(&mut stream).await {
        Ok(parsed) => parsed,
        Err(HeadError::Closed) => return None,
        Err(HeadError::Io(error)) => {
            tracing::debug!(%error, "outbound: reading the proxy request failed");
            return None;
        }
        Err(error @ (HeadError::Parse(_) | HeadError::NoDestination)) => {
            let rule = match error {
                HeadError::NoDestination => rules::CONNECT_NO_DESTINATION,
                _ => rules::CONNECT_PARSE,
            };
            // Answered in the reference's plain text, counted and logged like every refusal.
            let refusal = MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_UNRECOGNIZED",
                error.to_string(),
                rule,
            );
            refusal.record(&state.metrics, LISTENER, "-", "proxy-request");
            let _ = connect::write_plain_400(&mut stream, &refusal.error).await;
            return None;
        }
    };
    let target = match head {
        Head::Connect(target) => target,
        Head::Other { method } => {
            let error = MatrixError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "M_UNRECOGNIZED",
                "this proxy only tunnels HTTPS: send CONNECT host:port (plain-HTTP forwarding is not supported)",
                rules::PLAIN_HTTP,
            );
            error.record(&state.metrics, LISTENER, &method, "proxy-request");
            let _ = connect::write_matrix_error(&mut stream, &error).await;
            return None;
        }
    };
    match state.check_connect(&target).await {
        Ok(TunnelKind::Intercepted) => {}
        Ok(TunnelKind::PassThrough) => {
            return Some(Opened::PassThrough {
                client: stream,
                early: rest,
                target,
            });
        }
        Err(error) => {
            error.record(&state.metrics, LISTENER, "CONNECT", "CONNECT");
            state
                .metrics
                .request(LISTENER, "CONNECT", error.status.as_u16());
            let _ = connect::write_matrix_error(&mut stream, &error).await;
            return None;
        }
    }
    // The upstream handshake overlaps the homeserver's handshake with us.
    state.connector.dial_early(&target.authority);
    if connect::write_established(&mut stream).await.is_err() {
        return None;
    }
    let io = crate::prefixed::Prefixed::new(rest, stream);
    match mitm::accept(io, &target, &state.authority).await {
        Ok(tls) => Some(Opened::Intercepted(Box::new(tls), target)),
        Err(error @ mitm::AcceptError::SniMismatch { .. }) => {
            state.metrics.reject(LISTENER, rules::SNI_MISMATCH);
            tracing::info!(
                listener = LISTENER,
                rule = rules::SNI_MISMATCH,
                "TLS handshake refused: {error}"
            );
            None
        }
        Err(error) => {
            tracing::debug!(host = %target.host, %error, "outbound: TLS accept failed");
            None
        }
    }
}

/// Response to an inner request refused by the proxy.
pub(crate) fn error_response(error: &MatrixError) -> forward::ProxyResponse {
    error
        .to_response::<Full<bytes::Bytes>>()
        .map(http_body_util::Either::Right)
}
