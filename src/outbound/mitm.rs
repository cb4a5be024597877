//! TLS interception inside an established tunnel: read the ClientHello first, check that its
//! SNI (Synapse sends the host without port, and no ALPN) names the CONNECT host, answer with
//! that host's leaf, then serve the decrypted HTTP/1.1 (or h2 when the client offered it)
//! with keep-alive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::OutboundState;
use super::connect::ConnectTarget;
use super::forward;
use super::own::OwnUpstream;
use crate::live::Live;
use crate::prefixed::Prefixed;
use crate::shutdown::Shutdown;
use crate::tls::{Authority, TlsError};

/// The decrypted client side of a tunnel.
pub(crate) type TunnelStream = TlsStream<Prefixed<TcpStream>>;

/// Why the handshake with the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AcceptError {
    #[error("reading the ClientHello: {0}")]
    Hello(std::io::Error),
    /// The ClientHello asks for another host than the CONNECT line (rule
    /// [`super::rules::SNI_MISMATCH`]).
    #[error("SNI `{sni}` is not the CONNECT host `{host}`")]
    SniMismatch { sni: String, host: String },
    #[error("no certificate for `{host}`: {source}")]
    Certificate {
        host: String,
        #[source]
        source: TlsError,
    },
    #[error("handshake: {0}")]
    Handshake(std::io::Error),
}

/// Complete the server side of the TLS handshake with a leaf for the CONNECT host.
///
/// The CONNECT host is the one destination the tunnel was allowed for, so it is the only
/// name a certificate is minted for: a ClientHello without SNI (IP literals, some clients)
/// or with SNI naming the same host (case-insensitively, trailing dot ignored) gets its leaf;
/// any other SNI is refused before anything is minted — otherwise a client allowed into
/// `hs2.test` could have the proxy's CA vouch for `www.google.com`.
pub(crate) async fn accept(
    io: Prefixed<TcpStream>,
    target: &ConnectTarget,
    authority: &Authority,
) -> Result<TunnelStream, AcceptError> {
    let start = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
        .await
        .map_err(AcceptError::Hello)?;
    let host = target.bare_host();
    if let Some(sni) = start.client_hello().server_name()
        && !same_host(sni, host)
    {
        return Err(AcceptError::SniMismatch {
            sni: sni.to_owned(),
            host: host.to_owned(),
        });
    }
    let config =
        authority
            .server_config(host)
            .await
            .map_err(|source| AcceptError::Certificate {
                host: host.to_owned(),
                source,
            })?;
    start
        .into_stream(config)
        .await
        .map_err(AcceptError::Handshake)
}

/// DNS names compare case-insensitively, and `host.` is `host`.
fn same_host(sni: &str, host: &str) -> bool {
    sni.strip_suffix('.')
        .unwrap_or(sni)
        .eq_ignore_ascii_case(host.strip_suffix('.').unwrap_or(host))
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
    // HTTP/1.1 tunnels carry one request at a time: they get an upstream connection of their
    // own, which each request uses from this task.
    let own = OwnUpstream::new(&target.authority).filter(|_| !h2);
    let tunnel = Arc::new(forward::Tunnel::new(target, own));
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
        until_drained(
            connection,
            &mut shutdown,
            http2::Connection::graceful_shutdown,
        )
        .await
    } else {
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            .serve_connection(io, service);
        until_drained(
            connection,
            &mut shutdown,
            http1::Connection::graceful_shutdown,
        )
        .await
    };
    if let Err(error) = result {
        tracing::debug!(%error, "outbound: tunnel connection ended with an error");
    }
}

/// Run a hyper server connection to its end; once `shutdown` fires, it finishes its in-flight
/// requests (`graceful_shutdown`, of whichever protocol it speaks) and closes.
async fn until_drained<C>(
    connection: C,
    shutdown: &mut Shutdown,
    graceful_shutdown: fn(Pin<&mut C>),
) -> C::Output
where
    C: Future,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.wait() => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::same_host;

    #[test]
    fn sni_matches_the_connect_host_case_insensitively_and_without_trailing_dot() {
        assert!(same_host("hs2.test", "hs2.test"));
        assert!(same_host("HS2.Test.", "hs2.test"));
        assert!(!same_host("www.google.com", "hs2.test"));
        assert!(!same_host("matrix.hs2.test", "hs2.test"));
        assert!(!same_host("hs2.test.evil", "hs2.test"));
    }
}
