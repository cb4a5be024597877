//! The upstream connection of one HTTP/1.1 tunnel, driven by the tunnel's own task.
//!
//! Why not the shared pooled client: through it, every request inside a tunnel crossed from
//! the tunnel's task to the upstream connection's task and back (a channel, the pool's lock,
//! two wake-ups, often on the other CPU), and under load that hand-off cost about as much as
//! the proxying. A homeserver speaks HTTP/1.1 over its tunnel, one request at a time, so the
//! tunnel keeps one upstream connection of its own and polls it beside the client side
//! ([`Driver`], joined with the tunnel's server connection): a request is written, answered
//! and streamed back without leaving the task.
//!
//! Connections outlive tunnels: when a tunnel ends while its upstream HTTP/1.1 connection is
//! idle and kept alive, the connection goes back to the connector's idle list
//! ([`UpstreamConnector::check_in`]) for the next tunnel to the same authority, so a warm
//! CONNECT starts without an upstream handshake, as it did with the pooled client.
//!
//! An upstream that negotiates h2 gets an h2 connection of its own task (hyper's h2 needs
//! one); tunnels whose client speaks h2 use the shared pooled client, which multiplexes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

use super::forward::UpstreamBody;
use super::upstream::{DialError, UpstreamConnector, UpstreamStream, authority_key};

/// Why a request got no answer from the tunnel's upstream connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (resolve, policy, TCP, TLS).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The HTTP exchange failed (handshake, write, read, closed early).
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// The tunnel's side: sends requests over the tunnel's connection, opening one when there is
/// none (or it closed).
pub(crate) struct OwnUpstream {
    key: String,
    /// `https://authority/`, what the connector dials.
    dial_uri: Uri,
    current: Mutex<Option<Current>>,
    to_driver: mpsc::UnboundedSender<Driven>,
}

/// The connection in use and what it needs to be handed on.
struct Current {
    sender: Sender,
    /// The connector that opened it: a reload that replaces the connector (new trust, new
    /// dial policy) retires connections of the old one.
    connector: UpstreamConnector,
    /// Set when the tunnel ends while this HTTP/1.1 connection is idle and kept alive.
    reusable: Arc<AtomicBool>,
}

enum Sender {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

impl OwnUpstream {
    /// The tunnel's upstream side and the driver its task must poll beside the client side.
    pub(crate) fn new(authority: &Authority) -> Option<(Self, Driver)> {
        let dial_uri = Uri::builder()
            .scheme("https")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        let (to_driver, from_tunnel) = mpsc::unbounded_channel();
        Some((
            Self {
                key: authority_key(authority),
                dial_uri,
                current: Mutex::new(None),
                to_driver,
            },
            Driver {
                from_tunnel,
                current: None,
            },
        ))
    }

    /// Send `request` (absolute URI) and wait for the response head. A request that was not
    /// written because the connection turned out closed is sent once more on a new one.
    pub(crate) async fn send(
        &self,
        connector: &UpstreamConnector,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut retried = false;
        loop {
            let (mut current, fresh) = match self.take(connector) {
                Some(current) => (current, false),
                // Boxed: opening (a TLS connect and the HTTP handshake) is once per tunnel, and
                // inline its future made every request's several KiB larger, which the server
                // inside the tunnel moves per request (measured: 11,000 instructions of copying
                // per request in benches/callgrind-outbound.sh).
                None => (Box::pin(self.open(connector)).await?, true),
            };
            let sent = match &mut current.sender {
                Sender::H1(sender) => {
                    if let Err(error) = sender.ready().await {
                        if fresh || retried {
                            return Err(error.into());
                        }
                        retried = true;
                        continue;
                    }
                    // HTTP/1.1 writes the request target in origin form, the authority in
                    // Host (as the pooled client did when the request had none).
                    if !request.headers().contains_key(HOST)
                        && let Some(authority) = self.dial_uri.authority()
                        && let Ok(host) = HeaderValue::from_str(authority.as_str())
                    {
                        request.headers_mut().insert(HOST, host);
                    }
                    let path = origin_form(request.uri());
                    *request.uri_mut() = path;
                    sender.try_send_request(request).await
                }
                Sender::H2(sender) => sender.try_send_request(request).await,
            };
            match sent {
                Ok(response) => {
                    self.put_back(current);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    Some(unsent) if !retried => {
                        retried = true;
                        request = restore_absolute(unsent, &self.dial_uri);
                    }
                    _ => return Err(error.into_error().into()),
                },
            }
        }
    }

    /// The open connection, unless it closed or belongs to a replaced connector.
    fn take(&self, connector: &UpstreamConnector) -> Option<Current> {
        let current = self.current.lock().ok()?.take()?;
        (!current.sender.is_closed() && current.connector.same_as(connector)).then_some(current)
    }

    fn put_back(&self, current: Current) {
        if let Ok(mut slot) = self.current.lock() {
            *slot = Some(current);
        }
    }

    /// An idle connection to the authority from the connector, or a new one.
    async fn open(&self, connector: &UpstreamConnector) -> Result<Current, SendError> {
        let stream = match connector.check_out(&self.key) {
            Some(stream) => stream,
            None => connector.connect(&self.dial_uri).await?,
        };
        let reusable = Arc::new(AtomicBool::new(false));
        let sender = if stream.is_h2() {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), stream).await?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "outbound: upstream h2 connection ended with an error");
                }
            });
            Sender::H2(sender)
        } else {
            let (sender, connection) = http1::Builder::new().handshake(stream).await?;
            let driven = Driven {
                connection,
                key: self.key.clone(),
                connector: connector.clone(),
                reusable: reusable.clone(),
            };
            // The driver lives as long as the tunnel's server side; should it be gone, the
            // connection still needs polling.
            if let Err(mpsc::error::SendError(driven)) = self.to_driver.send(driven) {
                tokio::spawn(driven.run());
            }
            Sender::H1(sender)
        };
        Ok(Current {
            sender,
            connector: connector.clone(),
            reusable,
        })
    }
}

impl Drop for OwnUpstream {
    /// The tunnel ended: an idle, kept-alive HTTP/1.1 connection may serve the next tunnel.
    /// `is_ready` is hyper's own word that the last exchange completed and the connection
    /// wants another request (not closed, no body left half read).
    fn drop(&mut self) {
        if let Ok(slot) = self.current.get_mut()
            && let Some(current) = slot.as_ref()
            && let Sender::H1(sender) = &current.sender
            && sender.is_ready()
        {
            current.reusable.store(true, Ordering::Release);
        }
    }
}

/// `path?query` of an absolute URI.
fn origin_form(uri: &Uri) -> Uri {
    let path = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(path)
}

/// A request handed back unsent gets its absolute URI again (an h2 retry needs it).
fn restore_absolute(mut request: Request<UpstreamBody>, dial_uri: &Uri) -> Request<UpstreamBody> {
    if request.uri().authority().is_none() {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = dial_uri.scheme().cloned();
        parts.authority = dial_uri.authority().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}

/// An HTTP/1.1 connection handed to the tunnel's driver.
struct Driven {
    connection: http1::Connection<UpstreamStream, UpstreamBody>,
    key: String,
    connector: UpstreamConnector,
    reusable: Arc<AtomicBool>,
}

impl Driven {
    /// Run the connection until its sender is gone or it closes; then check an idle,
    /// kept-alive one back in.
    async fn run(self) {
        match self.connection.without_shutdown().await {
            Ok(parts) if self.reusable.load(Ordering::Acquire) && parts.read_buf.is_empty() => {
                self.connector.check_in(self.key, parts.io);
            }
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "outbound: upstream connection ended with an error");
            }
        }
    }
}

type Running = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The tunnel task's half: polls the tunnel's current upstream connection. Ends when the
/// tunnel's [`OwnUpstream`] is gone and its last connection finished (checked back in or
/// closed).
pub(crate) struct Driver {
    from_tunnel: mpsc::UnboundedReceiver<Driven>,
    current: Option<Running>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        std::future::poll_fn(|cx| {
            let mut tunnel_gone = false;
            loop {
                match self.from_tunnel.poll_recv(cx) {
                    Poll::Ready(Some(driven)) => {
                        // A connection replaced before it finished (closed by the remote,
                        // retired by a reload) runs out on a task of its own.
                        if let Some(previous) = self.current.replace(Box::pin(driven.run())) {
                            tokio::spawn(previous);
                        }
                    }
                    Poll::Ready(None) => {
                        tunnel_gone = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            if let Some(running) = self.current.as_mut()
                && running.as_mut().poll(cx).is_ready()
            {
                self.current = None;
            }
            if tunnel_gone && self.current.is_none() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}
