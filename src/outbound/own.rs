//! The upstream connection of one HTTP/1.1 tunnel, driven by the tunnel's own task.
//!
//! Why not the shared pooled client: through it, every request inside a tunnel crossed from
//! the tunnel's task to the upstream connection's task and back (a channel, the pool's lock,
//! two wake-ups, often on the other CPU), and under load that hand-off cost about as much as
//! the proxying. A homeserver speaks HTTP/1.1 over its tunnel, one request at a time, so the
//! tunnel keeps one upstream connection of its own, and each request writes itself to it and
//! reads its answer ([`super::exchange`]) without leaving the tunnel's task.
//!
//! Connections outlive tunnels: when a tunnel ends while its upstream HTTP/1.1 connection is
//! idle and kept alive, the connection goes back to the connector's idle list
//! ([`UpstreamConnector::check_in`]) for the next tunnel to the same authority, so a warm
//! CONNECT starts without an upstream handshake, as it did with the pooled client.
//!
//! An upstream that negotiates h2 gets an h2 connection of its own task (hyper's h2 needs
//! one); tunnels whose client speaks h2 use the shared pooled client, which multiplexes.

use std::sync::{Arc, Mutex};

use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;

use super::exchange::{self, AnswerBody, Conn, Home, Prepared};
use super::forward::UpstreamBody;
use super::upstream::{DialError, UpstreamConnector, authority_key};
use crate::framing::ExchangeError;

/// An answer relayed from the tunnel's upstream connection: read by hyper from an h2
/// connection, or by the tunnel's own HTTP/1.1 exchange.
pub(crate) type Relayed = Either<Incoming, AnswerBody>;

/// Why a request got no answer from the tunnel's upstream connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// No connection could be made (resolve, policy, TCP, TLS).
    #[error(transparent)]
    Dial(#[from] DialError),
    /// The h2 exchange failed (handshake, stream, closed early).
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The HTTP/1.1 exchange failed.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// The tunnel's side: sends requests over the tunnel's connection, opening one when there is
/// none (or it closed).
pub(crate) struct OwnUpstream {
    key: String,
    /// `https://authority/`, what the connector dials.
    dial_uri: Uri,
    /// The connection while no request uses it. An answer body that streams from an
    /// HTTP/1.1 connection holds the connection and puts it back here at its end.
    idle: Arc<Mutex<Option<Current>>>,
}

/// An idle connection and the connector that opened it: a reload that replaces the connector
/// (new trust, new dial policy) retires connections of the old one.
struct Current {
    link: Link,
    connector: UpstreamConnector,
}

enum Link {
    H1(Conn),
    H2(http2::SendRequest<UpstreamBody>),
}

impl OwnUpstream {
    /// The upstream side of a tunnel to `authority`.
    pub(crate) fn new(authority: &Authority) -> Option<Self> {
        let dial_uri = Uri::builder()
            .scheme("https")
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .ok()?;
        Some(Self {
            key: authority_key(authority),
            dial_uri,
            idle: Arc::new(Mutex::new(None)),
        })
    }

    /// Send `request` (origin form) and wait for the answer head.
    pub(crate) async fn send(
        &self,
        connector: &UpstreamConnector,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed>, SendError> {
        let (link, fresh) = match self.take(connector) {
            Some(link) => (link, false),
            // Boxed: opening (a TLS connect) is once per tunnel, and inline its future made
            // every request's several KiB larger, which the server inside the tunnel moves per
            // request (measured: 11,000 instructions of copying per request in
            // benches/callgrind-outbound.sh).
            None => (Box::pin(self.open(connector)).await?, true),
        };
        match link {
            Link::H1(conn) => self.send_h1(connector, conn, fresh, request).await,
            Link::H2(sender) => Box::pin(self.send_h2(connector, sender, fresh, request)).await,
        }
    }

    /// One HTTP/1.1 exchange. A request that may be sent again (see
    /// [`Prepared::retry_after`]) goes once more on a new connection when a kept-alive one
    /// turns out to be closed; any other is given a kept-alive connection only after a check
    /// that it is still open.
    async fn send_h1(
        &self,
        connector: &UpstreamConnector,
        mut conn: Conn,
        mut fresh: bool,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed>, SendError> {
        let mut prepared = Prepared::new(request, self.authority()).await?;
        if !fresh && prepared.needs_open_connection() && !conn.still_open() {
            conn = Box::pin(self.open_h1(connector)).await?;
            fresh = true;
        }
        let home = || self.home(connector);
        let (response, idle) = match exchange::exchange(conn, &mut prepared, home).await {
            Err(error) if !fresh && prepared.retry_after(&error) => {
                tracing::debug!(%error, "outbound: kept-alive upstream connection was closed; sending again on a new one");
                Box::pin(async {
                    let conn = self.open_h1(connector).await?;
                    Ok::<_, SendError>(exchange::exchange(conn, &mut prepared, home).await?)
                })
                .await?
            }
            other => other?,
        };
        if let Some(conn) = idle {
            self.put_back(Link::H1(conn), connector);
        }
        Ok(response.map(Either::Right))
    }

    /// An h2 exchange (the remote negotiated h2). A request the connection handed back
    /// unsent goes once more on a new connection.
    async fn send_h2(
        &self,
        connector: &UpstreamConnector,
        mut sender: http2::SendRequest<UpstreamBody>,
        mut fresh: bool,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<Relayed>, SendError> {
        let mut retried = false;
        loop {
            request = match sender.ready().await {
                Ok(()) => {
                    let request = match self.dial_uri.authority() {
                        Some(authority) => absolute(request, authority),
                        None => request,
                    };
                    match sender.try_send_request(request).await {
                        Ok(response) => {
                            self.put_back(Link::H2(sender), connector);
                            return Ok(response.map(Either::Left));
                        }
                        Err(mut error) => match error.take_message() {
                            Some(unsent) if !retried => origin_form(unsent),
                            _ => return Err(error.into_error().into()),
                        },
                    }
                }
                Err(error) if fresh || retried => return Err(error.into()),
                // Closed before the request was handed over: it goes on a new connection.
                Err(_) => request,
            };
            retried = true;
            match self.open(connector).await? {
                Link::H2(next) => {
                    sender = next;
                    fresh = true;
                }
                // The remote speaks HTTP/1.1 on the new connection.
                Link::H1(conn) => return self.send_h1(connector, conn, true, request).await,
            }
        }
    }

    /// `host:port` of the tunnel's destination.
    fn authority(&self) -> &str {
        self.dial_uri.authority().map_or("", Authority::as_str)
    }

    /// The idle connection, unless it belongs to a replaced connector.
    fn take(&self, connector: &UpstreamConnector) -> Option<Link> {
        let current = self.idle.lock().ok()?.take()?;
        let usable = match &current.link {
            Link::H1(_) => true,
            Link::H2(sender) => !sender.is_closed(),
        };
        (usable && current.connector.same_as(connector)).then_some(current.link)
    }

    fn put_back(&self, link: Link, connector: &UpstreamConnector) {
        if let Ok(mut slot) = self.idle.lock() {
            *slot = Some(Current {
                link,
                connector: connector.clone(),
            });
        }
    }

    /// Where an answer body that streams from an HTTP/1.1 connection sends it at its end:
    /// back to this tunnel, or, when the tunnel has ended meanwhile, to the connector's idle
    /// list for the next tunnel.
    fn home(&self, connector: &UpstreamConnector) -> Home {
        let idle = Arc::downgrade(&self.idle);
        let connector = connector.clone();
        let key = self.key.clone();
        Box::new(move |conn| match idle.upgrade() {
            Some(idle) => {
                if let Ok(mut slot) = idle.lock()
                    && slot.is_none()
                {
                    *slot = Some(Current {
                        link: Link::H1(conn),
                        connector,
                    });
                }
            }
            None => {
                if let Some(stream) = conn.into_idle() {
                    connector.check_in(key, stream);
                }
            }
        })
    }

    /// An idle connection to the authority from the connector, or a new one.
    async fn open(&self, connector: &UpstreamConnector) -> Result<Link, SendError> {
        let stream = match connector.check_out(&self.key) {
            Some(stream) => stream,
            None => connector.connect(&self.dial_uri).await?,
        };
        if !stream.is_h2() {
            return Ok(Link::H1(Conn::new(stream)));
        }
        let (sender, connection) = http2::handshake(TokioExecutor::new(), stream).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "outbound: upstream h2 connection ended with an error");
            }
        });
        Ok(Link::H2(sender))
    }

    /// A new HTTP/1.1 connection for a request already prepared for one; a remote that now
    /// negotiates h2 keeps that connection for the next request, and this one fails.
    async fn open_h1(&self, connector: &UpstreamConnector) -> Result<Conn, SendError> {
        match self.open(connector).await? {
            Link::H1(conn) => Ok(conn),
            link @ Link::H2(_) => {
                self.put_back(link, connector);
                Err(ExchangeError::Closed.into())
            }
        }
    }
}

impl Drop for OwnUpstream {
    /// The tunnel ended: its idle, kept-alive HTTP/1.1 connection may serve the next tunnel.
    fn drop(&mut self) {
        if let Ok(mut slot) = self.idle.lock()
            && let Some(current) = slot.take()
            && let Link::H1(conn) = current.link
            && let Some(stream) = conn.into_idle()
        {
            current
                .connector
                .check_in(std::mem::take(&mut self.key), stream);
        }
    }
}

/// A request handed back unsent goes to the next connection as it came from the tunnel, in
/// origin form (an h2 sender made it absolute).
fn origin_form<B>(mut request: Request<B>) -> Request<B> {
    if request.uri().authority().is_some() {
        let path = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(path);
    }
    request
}

/// The request with its target in absolute form, `https://authority/path?query`, as h2 (its
/// `:scheme` and `:authority`) and the pooled client need it.
pub(crate) fn absolute<B>(mut request: Request<B>, authority: &Authority) -> Request<B> {
    if request.uri().authority().is_none() {
        let mut parts = request.uri().clone().into_parts();
        parts.scheme = Some(http::uri::Scheme::HTTPS);
        parts.authority = Some(authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
