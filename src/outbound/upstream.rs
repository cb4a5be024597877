//! Upstream connections: a connector for the pooled hyper client that dials exactly the
//! CONNECT target (the homeserver already resolved delegation), refuses private addresses
//! unless allowed (no SSRF through the proxy), and verifies the remote's TLS certificate.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Why no upstream connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("upstream URI has no host or port")]
    BadTarget,
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    /// Every address is loopback/private/link-local and those are not allowed.
    #[error(
        "{host} resolves only to non-public addresses ({addrs}); outbound.allow_private_destinations is false"
    )]
    Private { host: String, addrs: String },
    #[error("connecting to {host} timed out")]
    Timeout { host: String },
    #[error("cannot connect to {host}: {source}")]
    Connect {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {host} failed: {source}")]
    Tls {
        host: String,
        #[source]
        source: io::Error,
    },
}

/// Dial settings shared by all clones of the connector.
#[derive(Debug)]
pub(crate) struct DialPolicy {
    pub allow_private: bool,
    pub resolve: BTreeMap<String, IpAddr>,
    pub connect_timeout: Duration,
    /// Idle connections kept per authority for later tunnels (`outbound.max_idle_per_host`).
    pub max_idle_per_host: usize,
    /// How long an idle connection is kept.
    pub idle_timeout: Duration,
}

/// The connector handed to the hyper-util client; cheap to clone.
#[derive(Clone)]
pub(crate) struct UpstreamConnector {
    tls: TlsConnector,
    policy: Arc<DialPolicy>,
    early: Arc<EarlyDials>,
    idle: Arc<IdleConnections>,
}

/// Most authorities with idle connections at once.
const IDLE_AUTHORITIES_MAX: usize = 1024;

/// Idle, kept-alive upstream connections that tunnels handed back (see
/// [`super::own`]), by authority key; the newest is used first.
#[derive(Default)]
struct IdleConnections {
    by_authority: Mutex<HashMap<String, Vec<(Instant, UpstreamStream)>>>,
}

/// How long an early dial waits to be used before it is dropped.
const EARLY_DIAL_TTL: Duration = Duration::from_secs(10);
/// Most early dials in flight or waiting at once.
const EARLY_DIAL_MAX: usize = 256;

type DialTask = JoinHandle<Result<UpstreamStream, DialError>>;

/// Upstream connections opened as soon as a CONNECT is accepted, while the homeserver is
/// still doing its TLS handshake with the proxy; the first request in the tunnel then finds
/// its upstream connection (nearly) ready instead of starting a second handshake after the
/// first. Only for authorities without any live connection, so a warm pool is never
/// duplicated.
#[derive(Default)]
struct EarlyDials {
    state: Mutex<EarlyState>,
}

#[derive(Default)]
struct EarlyState {
    /// Authority (`host:port`, lower case) → pending or finished dial.
    pending: HashMap<String, (Instant, DialTask)>,
    /// Authority → live upstream connections (early or not).
    live: HashMap<String, usize>,
}

impl EarlyState {
    fn purge_expired(&mut self) {
        self.pending.retain(|_, (since, task)| {
            let keep = since.elapsed() < EARLY_DIAL_TTL;
            if !keep {
                task.abort();
            }
            keep
        });
    }
}

/// The key early dials, live and idle connections are tracked by: the authority, lower case.
pub(crate) fn authority_key(authority: &http::uri::Authority) -> String {
    authority.as_str().to_ascii_lowercase()
}

/// Counts a live upstream connection for its authority; dropped with the connection.
struct LiveGuard {
    early: Arc<EarlyDials>,
    key: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.early.state.lock()
            && let Some(n) = state.live.get_mut(&self.key)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.live.remove(&self.key);
            }
        }
    }
}

impl UpstreamConnector {
    pub(crate) fn new(tls: Arc<ClientConfig>, policy: DialPolicy) -> Self {
        Self {
            tls: TlsConnector::from(tls),
            policy: Arc::new(policy),
            early: Arc::default(),
            idle: Arc::default(),
        }
    }

    /// Whether both are clones of one connector (a reload builds a new one).
    pub(crate) fn same_as(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.policy, &other.policy)
    }

    /// An idle connection to the authority `key` that is still open, newest first.
    pub(crate) fn check_out(&self, key: &str) -> Option<UpstreamStream> {
        let mut idle = self.idle.by_authority.lock().ok()?;
        let list = idle.get_mut(key)?;
        let mut found = None;
        while let Some((since, mut stream)) = list.pop() {
            if since.elapsed() < self.policy.idle_timeout && stream.still_open() {
                found = Some(stream);
                break;
            }
        }
        if list.is_empty() {
            idle.remove(key);
        }
        found
    }

    /// Keep an idle, kept-alive connection for the next tunnel to the authority `key`, within
    /// `max_idle_per_host` and the idle timeout; otherwise it is closed.
    pub(crate) fn check_in(&self, key: String, stream: UpstreamStream) {
        let Ok(mut idle) = self.idle.by_authority.lock() else {
            return;
        };
        let timeout = self.policy.idle_timeout;
        if idle.len() >= IDLE_AUTHORITIES_MAX && !idle.contains_key(&key) {
            idle.retain(|_, list| {
                list.retain(|(since, _)| since.elapsed() < timeout);
                !list.is_empty()
            });
            if idle.len() >= IDLE_AUTHORITIES_MAX {
                return;
            }
        }
        let list = idle.entry(key).or_default();
        list.retain(|(since, _)| since.elapsed() < timeout);
        if list.len() < self.policy.max_idle_per_host {
            list.push((Instant::now(), stream));
        }
    }

    /// A new connection to `uri`'s authority: the early dial for it when there is one, else
    /// a dial now.
    pub(crate) async fn connect(&self, uri: &Uri) -> Result<UpstreamStream, DialError> {
        let key = uri.authority().map(authority_key).unwrap_or_default();
        // An aborted early dial falls back to dialling now.
        if let Some(task) = self.take_early(&key)
            && let Ok(result) = task.await
        {
            return result;
        }
        self.dial_counted(uri, key).await
    }

    /// The dial settings (also used for pass-through tunnels, which dial plain TCP).
    pub(crate) fn policy(&self) -> &DialPolicy {
        &self.policy
    }

    /// Start connecting to `authority` now, unless a connection to it exists or is being
    /// made already.
    pub(crate) fn dial_early(&self, authority: &http::uri::Authority) {
        let key = authority_key(authority);
        let Ok(uri) = Uri::builder()
            .scheme("https")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
        else {
            return;
        };
        let Ok(mut state) = self.early.state.lock() else {
            return;
        };
        state.purge_expired();
        if state.live.contains_key(&key)
            || state.pending.contains_key(&key)
            || state.pending.len() >= EARLY_DIAL_MAX
        {
            return;
        }
        let this = self.clone();
        let task_key = key.clone();
        let task = tokio::spawn(async move { this.dial_counted(&uri, task_key).await });
        state.pending.insert(key, (Instant::now(), task));
    }

    fn take_early(&self, key: &str) -> Option<DialTask> {
        let mut state = self.early.state.lock().ok()?;
        let (since, task) = state.pending.remove(key)?;
        if since.elapsed() < EARLY_DIAL_TTL {
            Some(task)
        } else {
            task.abort();
            None
        }
    }

    /// Dial `uri` and count the connection as live for `key`, its [`authority_key`].
    async fn dial_counted(&self, uri: &Uri, key: String) -> Result<UpstreamStream, DialError> {
        let mut stream = dial(&self.tls, &self.policy, uri).await?;
        if let Ok(mut state) = self.early.state.lock() {
            *state.live.entry(key.clone()).or_default() += 1;
        }
        stream._live = Some(LiveGuard {
            early: self.early.clone(),
            key,
        });
        Ok(stream)
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamStream;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamStream, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let key = uri.authority().map(authority_key).unwrap_or_default();
            match this.check_out(&key) {
                Some(stream) => Ok(stream),
                None => this.connect(&uri).await,
            }
        })
    }
}

async fn dial(
    tls: &TlsConnector,
    policy: &DialPolicy,
    uri: &Uri,
) -> Result<UpstreamStream, DialError> {
    let host = uri.host().ok_or(DialError::BadTarget)?;
    let port = uri.port_u16().ok_or(DialError::BadTarget)?;
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let server_name = ServerName::try_from(bare.clone()).map_err(|_| DialError::BadTarget)?;
    let attempt = async {
        let tcp = connect_tcp(policy, &bare, port).await?;
        tls.connect(server_name, tcp)
            .await
            .map_err(|source| DialError::Tls {
                host: bare.clone(),
                source,
            })
    };
    let stream = tokio::time::timeout(policy.connect_timeout, attempt)
        .await
        .map_err(|_| DialError::Timeout { host: bare.clone() })??;
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    Ok(UpstreamStream {
        io: TokioIo::new(stream),
        h2,
        _live: None,
    })
}

/// Resolve `host` (no IPv6 brackets; `outbound.resolve` first), drop the addresses the
/// private-destination policy refuses, and connect to the first that answers. No timeout of
/// its own: callers bound it with `outbound.connect_timeout`.
pub(crate) async fn connect_tcp(
    policy: &DialPolicy,
    host: &str,
    port: u16,
) -> Result<TcpStream, DialError> {
    let candidates = resolve(policy, host, port).await?;
    let allowed: Vec<SocketAddr> = candidates
        .iter()
        .copied()
        .filter(|a| policy.allow_private || is_public(a.ip()))
        .collect();
    if allowed.is_empty() {
        return Err(DialError::Private {
            host: host.to_owned(),
            addrs: candidates
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut last_error = None;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(DialError::Connect {
        host: host.to_owned(),
        source: last_error.unwrap_or_else(|| io::Error::other("no address could be tried")),
    })
}

async fn resolve(policy: &DialPolicy, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    if let Some(ip) = policy.resolve.get(host) {
        return Ok(vec![SocketAddr::new(*ip, port)]);
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| DialError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(DialError::NoAddress {
            host: host.to_owned(),
        });
    }
    Ok(addrs)
}

/// Whether `ip` is a public unicast address. Loopback, private (RFC 1918, ULA), link-local,
/// shared (CGNAT), unspecified, broadcast, multicast and documentation ranges are not, and
/// neither are IPv4-mapped IPv6 forms of them.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || first == 0x2001 && v6.segments()[1] == 0x0db8)
        }
    }
}

/// A TLS connection to the remote homeserver: for the hyper client (pooled, h2), or the
/// tunnel's own HTTP/1.1 exchanges.
pub(crate) struct UpstreamStream {
    io: TokioIo<TlsStream<TcpStream>>,
    h2: bool,
    /// Keeps the authority's live-connection count while the connection exists.
    _live: Option<LiveGuard>,
}

impl UpstreamStream {
    /// Whether the remote negotiated h2.
    pub(crate) fn is_h2(&self) -> bool {
        self.h2
    }

    /// The TLS stream, for the tunnel's own HTTP/1.1 exchanges ([`super::exchange`]).
    pub(crate) fn tls(&mut self) -> &mut TlsStream<TcpStream> {
        self.io.inner_mut()
    }

    /// Whether an idle connection can still carry a request: nothing arrived since its last
    /// answer (no FIN, no close_notify, no stray bytes). Reads without waiting.
    pub(crate) fn still_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        Pin::new(self.io.inner_mut())
            .poll_read(&mut cx, &mut buf)
            .is_pending()
    }
}

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.h2 {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl hyper::rt::Read for UpstreamStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

/// Accepts any upstream certificate but still checks handshake signatures, so the session is
/// at least bound to the presented key. Only for `outbound.danger_accept_invalid_upstream_certs`.
#[derive(Debug)]
pub(crate) struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "192.0.0.8",
            "2001:db8::1",
        ] {
            assert!(
                !is_public(private.parse().unwrap()),
                "{private} counted as public"
            );
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "100.128.0.1",
        ] {
            assert!(
                is_public(public.parse().unwrap()),
                "{public} counted as private"
            );
        }
    }

    #[tokio::test]
    async fn private_destination_is_refused_before_connecting() {
        let config = ClientConfig::builder_with_provider(crate::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut connector = UpstreamConnector::new(
            Arc::new(config),
            DialPolicy {
                allow_private: false,
                resolve: BTreeMap::from([("hs2.test".to_owned(), "127.0.0.1".parse().unwrap())]),
                connect_timeout: Duration::from_secs(5),
                max_idle_per_host: 8,
                idle_timeout: Duration::from_secs(90),
            },
        );
        let uri: Uri = "https://hs2.test:8449/".parse().unwrap();
        let err = tower_service::Service::call(&mut connector, uri)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, DialError::Private { .. }), "{err}");
    }
}
