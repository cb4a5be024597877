//! TLS interception inside an established tunnel: read the ClientHello first, pick the
//! certificate by SNI (Synapse sends the host without port, and no ALPN), then serve the
//! decrypted HTTP/1.1 (or h2 when the client offered it) with keep-alive.

use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::OutboundState;
use super::connect::{ConnectTarget, Prefixed};
use super::forward;
use crate::live::Live;
use crate::shutdown::Shutdown;
use crate::tls::{Authority, TlsError};

/// The decrypted client side of a tunnel.
pub(crate) type TunnelStream = TlsStream<Prefixed<TcpStream>>;

/// Why the handshake with the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("reading the ClientHello: {0}")]
    Hello(std::io::Error),
    #[error("no certificate for `{host}`: {source}")]
    Certificate {
        host: String,
        #[source]
        source: TlsError,
    },
    #[error("handshake: {0}")]
    Handshake(std::io::Error),
}

/// Complete the server side of the TLS handshake with a leaf for the SNI name, or for the
/// CONNECT host when the client sent no SNI (IP literals, some clients).
pub(crate) async fn accept(
    io: Prefixed<TcpStream>,
    target: &ConnectTarget,
    authority: &Authority,
) -> Result<TunnelStream, AcceptError> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(AcceptError::Hello)?;
    let host = start
        .client_hello()
        .server_name()
        .map(str::to_owned)
        .unwrap_or_else(|| target.bare_host().to_owned());
    let config = authority
        .server_config(&host)
        .await
        .map_err(|source| AcceptError::Certificate { host, source })?;
    start
        .into_stream(config)
        .await
        .map_err(AcceptError::Handshake)
}

/// Serve requests inside the tunnel until the client closes it, or until shutdown (then the
/// connection finishes its in-flight request and closes).
pub(crate) async fn serve_tunnel(
    tls: TunnelStream,
    target: ConnectTarget,
    state: Live<OutboundState>,
    mut shutdown: Shutdown,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let tunnel = Arc::new(forward::Tunnel::new(target));
    let service = service_fn(move |request| {
        let tunnel = tunnel.clone();
        let state = state.load();
        async move { Ok::<_, std::convert::Infallible>(forward::handle(request, &tunnel, &state).await) }
    });
    let io = TokioIo::new(tls);
    let result = if h2 {
        let connection = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.wait() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    } else {
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .serve_connection(io, service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => result,
            _ = shutdown.wait() => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "outbound: tunnel connection ended with an error");
    }
}
