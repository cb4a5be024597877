//! The inbound listener: Matrix client-server API and inbound federation in front of the
//! homeserver.
//!
//! This module holds the listener's shared state ([`InboundState`]) and admits connections
//! ([`serve`]: the connection limit, TLS, HTTP/1.x or h2, draining on shutdown). What happens
//! to a request is in [`handle`] and its phases, one module each:
//!
//! classify ([`classify`]) → authenticate ([`federation::check_origin`]) → rules ([`client`],
//! [`federation`], over [`crate::policy`]) → [`forward`] to the homeserver ([`upstream`]) →
//! respond ([`respond`]) → account ([`account`]).
//!
//! Every rejection is counted by rule and logged once, with the side that failed (client,
//! homeserver, or the proxy itself), without IDs or tokens.
//!
//! HTTP/1.x clients are served by the `http1` module, in the connection's task; HTTP/2
//! clients by hyper. Both hand each request to [`handle`].

mod account;
pub mod admin_api;
mod answer;
mod body;
mod classify;
pub mod client;
pub(crate) mod cors;
pub mod federation;
pub mod forward;
mod handle;
mod http1;
mod reload;
mod respond;
pub mod sso;
mod support;
pub mod upstream;
pub mod whoami;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::Either;
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::accept;
use crate::config::Config;
use crate::error::MatrixError;
use crate::federation::FederationHandle;
use crate::live::Live;
use crate::matrix::endpoints::{EndpointTable, TableError};
use crate::metrics::Metrics;
use crate::prefixed::Prefixed;
use crate::shutdown::Shutdown;
use account::RequestCounters;
pub use account::{ObservedRequest, RequestObserver};
use admin_api::AdminApi;
pub(crate) use body::read_body;
use forward::{Body, Deadline, Forwarder, Peer};
use handle::handle;
use respond::VersionsMemo;
use whoami::WhoamiCache;

/// Listener name in metrics.
pub const LISTENER: &str = "inbound";
/// How long in-flight connections may finish after shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

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

    /// Count and log a rejection ([`MatrixError::record`]) and answer it as Matrix error JSON.
    pub(crate) fn reject(
        &self,
        err: &MatrixError,
        method: &Method,
        template: &str,
    ) -> Response<Body> {
        err.record(&self.metrics, LISTENER, method.as_str(), template);
        forward::error_response(err)
    }
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
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let live: Live<InboundState> = state.into();
    let state = live.load();
    let spec = accept::Listener {
        name: LISTENER,
        metrics: &state.metrics,
        max_connections: Some(state.config.inbound.max_connections),
    };
    accept::serve_connections(
        listener,
        spec,
        shutdown,
        || DRAIN_TIMEOUT,
        |stream, remote, drain| serve_connection(live.clone(), stream, remote, drain),
    )
    .await;
    Ok(())
}

/// One connection, from its first byte to its close. Its future is what every idle
/// connection costs beyond its socket (a test keeps it small).
///
/// Plain functions returning futures rather than `async fn`s: an `async fn` keeps a copy of
/// its arguments for as long as it runs, beside whatever it moved them into.
fn serve_connection(
    live: Live<InboundState>,
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    drain: Shutdown,
) -> impl Future<Output = ()> + Send + 'static {
    let (tls, trusted) = {
        let current = live.load();
        let trusted = current.config.inbound.is_trusted_proxy(remote.ip());
        (current.tls.clone(), trusted)
    };
    match tls {
        // Boxed: TLS state is several KiB, and plain connections should not carry a slot for
        // it.
        Some(acceptor) => Either::Left(Box::pin(serve_tls(
            live,
            acceptor,
            stream,
            Peer::new(remote, true, trusted),
            drain,
        ))),
        None => Either::Right(serve_http1(
            live,
            stream,
            Peer::new(remote, false, trusted),
            drain,
        )),
    }
}

/// HTTP/1.x on a plain or TLS connection, then HTTP/2 if the client turns out to speak it with
/// prior knowledge (the bytes read so far are put back in front).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn would keep its arguments twice, for every idle connection"
)]
fn serve_http1<I>(
    live: Live<InboundState>,
    io: I,
    peer: Peer,
    drain: Shutdown,
) -> impl Future<Output = ()> + Send + 'static
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    async move {
        let handed_over = http1::serve(io, &live, &peer, drain.clone()).await;
        // Made by consuming what was handed over, so that nothing of it stays in this future.
        // Boxed: hyper's h2 connection is large, and HTTP/1 connections should not carry a
        // slot for it.
        let h2 = handed_over.map(|(io, read)| {
            Box::pin(serve_h2(
                live,
                TokioIo::new(Prefixed::new(read, io)),
                Arc::new(peer),
                drain,
            ))
        });
        if let Some(h2) = h2 {
            h2.await;
        }
    }
}

/// A TLS connection: the handshake, then h2 by ALPN or HTTP/1.x (and h2 with prior
/// knowledge, as on plain connections).
async fn serve_tls(
    live: Live<InboundState>,
    acceptor: TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: Peer,
    drain: Shutdown,
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
    if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
        serve_h2(live, TokioIo::new(tls), Arc::new(peer), drain).await;
    } else {
        serve_http1(live, tls, peer, drain).await;
    }
}

type H2Answer =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// HTTP/2 (by ALPN, or with prior knowledge on a connection [`http1::serve`] handed over).
async fn serve_h2<I>(live: Live<InboundState>, io: I, peer: Arc<Peer>, mut drain: Shutdown)
where
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
            let answer = handle(state, req, &peer, deadline).await;
            Ok::<_, Infallible>(answer.into_response())
        });
        answer
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    if drain.is_triggered() {
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
            () = drain.wait() => {
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

    /// The size of the task future of a connection served by `serve`, without calling it.
    fn task_size<A, B, C, D, F: Future<Output = ()>>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        accept::task_size::<F>()
    }

    /// An idle HTTP/1 connection's memory is its task (this future plus tokio's task header),
    /// its socket's registration, its timer and drain waiter: the target is 2 KiB in all
    /// (`benches/memory.sh`). A request's state (the handler's future alone is several KiB) is
    /// boxed while it runs; TLS, h2, a refusal and the lingering close are boxed too, so the
    /// task keeps only the connection's own fields and the waits between requests. This test
    /// runs unoptimised, where the future measured 824 bytes (the release build's task, from
    /// `-Zprint-type-sizes`, is 896 bytes with tokio's header, down from 1,536 when each layer
    /// was an `async fn`); 1 KiB leaves room for a field or two, and anything that moves a
    /// request's state or a layer's copy of its arguments back into the connection fails it.
    #[test]
    fn connection_task_stays_small() {
        let size = task_size(serve_connection);
        eprintln!("connection task future: {size} bytes");
        assert!(size <= 1024, "connection task future is {size} bytes");
    }
}
