//! Forwarding to the homeserver over [`super::upstream`]'s keep-alive pool: bodies streamed
//! both ways, the request target forwarded byte for byte (X-Matrix signatures cover the raw
//! URI), hop-by-hop headers removed and `X-Forwarded-*` set.

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::answer::Answer;
use super::upstream::{UpstreamError, UpstreamPool};
use crate::config::HomeserverConfig;
use crate::error::MatrixError;
use crate::framing::ExchangeError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of everything the listener sends and forwards.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// An empty body (no allocation).
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A Matrix error as a response of this listener's body type.
pub fn error_response(err: &MatrixError) -> Response<Body> {
    let response: Response<http_body_util::Full<Bytes>> = err.to_response();
    response.map(|b| b.map_err(|never| match never {}).boxed_unsync())
}

/// An HTTP/2 request body (from hyper) as this listener's body type.
pub fn stream(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

// Constant names: a string key would be parsed and classified again on every request.
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Fields that tell a server behind a proxy who the client is: Synapse (`x_forwarded: true`)
/// reads the first entry of the first `X-Forwarded-For` field as the client address (login
/// and registration rate limits, IP records) and `X-Forwarded-Proto`; other servers and
/// modules read `Forwarded` and `X-Real-IP`. Only a trusted proxy may set any of them.
fn is_forwarding_field(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

/// The client end of one inbound connection. Its `X-Forwarded-For` value is formatted once per
/// connection rather than on every request (formatting an address is a measurable share of a
/// proxied request), and whether it is a trusted proxy is decided once too.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The connection arrived over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
    /// The peer is in `inbound.trusted_proxies`: its forwarding fields are kept.
    pub trusted: bool,
    forwarded_for: Option<HeaderValue>,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool, trusted: bool) -> Self {
        Self {
            addr,
            tls,
            trusted,
            forwarded_for: forwarded_for(addr.ip()),
        }
    }
}

/// The peer's address as an `X-Forwarded-For` value, in one allocation of its exact length:
/// it lives as long as the connection, idle or not.
fn forwarded_for(ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    // The longest IPv6 text form is 45 bytes.
    let mut text = [0u8; 64];
    let room = text.len();
    let mut cursor = &mut text[..];
    write!(cursor, "{ip}").ok()?;
    let len = room - cursor.len();
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&text[..len])).ok()
}

/// What a request's own forwarding fields leave for the homeserver (see [`Peer::trusted`]).
#[derive(Debug, Default)]
struct Forwarding {
    /// The trusted proxy's `X-Forwarded-For` list with the peer appended.
    chain: Option<HeaderValue>,
    /// The trusted proxy set `X-Forwarded-Proto` / `X-Forwarded-Host`; ours are not added.
    kept_proto: bool,
    kept_host: bool,
}

impl Forwarding {
    /// Drop every forwarding field a client sent, or, from a trusted proxy, fold its
    /// `X-Forwarded-For` fields into one list ending with the peer.
    fn settle(headers: &mut http::HeaderMap, peer: &Peer) -> Self {
        // Clients rarely send any: one pass over the names usually settles it.
        if !headers.keys().any(is_forwarding_field) {
            return Self::default();
        }
        if !peer.trusted {
            let names: Vec<HeaderName> = headers
                .keys()
                .filter(|name| is_forwarding_field(name))
                .cloned()
                .collect();
            for name in names {
                headers.remove(name);
            }
            return Self::default();
        }
        let mut chain = String::new();
        for value in headers.get_all(&X_FORWARDED_FOR) {
            let Ok(value) = value.to_str() else { continue };
            let value = value.trim();
            if !value.is_empty() {
                chain.push_str(value);
                chain.push_str(", ");
            }
        }
        headers.remove(&X_FORWARDED_FOR);
        let chain = (!chain.is_empty())
            .then(|| format!("{chain}{}", peer.addr.ip()))
            .and_then(|list| HeaderValue::try_from(list).ok());
        Self {
            chain,
            kept_proto: headers.contains_key(&X_FORWARDED_PROTO),
            kept_host: headers.contains_key(&X_FORWARDED_HOST),
        }
    }
}

/// When the homeserver's answer head must have arrived: `homeserver.request_timeout` after the
/// request head did.
///
/// HTTP/1 connections lend the request their own timer (see [`super::http1`]): arming a timer
/// of its own per request cost a tenth of a proxied request's instructions.
pub enum Deadline<'t> {
    Own(Instant),
    Lent {
        at: Instant,
        timer: Pin<&'t mut Sleep>,
    },
}

impl Deadline<'_> {
    /// Completes once the deadline has passed.
    pub async fn passed(&mut self) {
        match self {
            Deadline::Own(at) => tokio::time::sleep_until(*at).await,
            Deadline::Lent { at, timer } => loop {
                if timer.deadline() > *at {
                    timer.as_mut().reset(*at);
                }
                timer.as_mut().await;
                if Instant::now() >= *at {
                    return;
                }
                timer.as_mut().reset(*at);
            },
        }
    }
}

/// Keep-alive connections to `homeserver.url` (see [`super::upstream`]).
#[derive(Clone)]
pub struct Forwarder {
    pool: UpstreamPool,
    /// Path prefix of `homeserver.url` without trailing slash (usually empty).
    base_path: String,
    timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("pool", &self.pool)
            .finish()
    }
}

impl Forwarder {
    pub fn new(config: &HomeserverConfig) -> Self {
        let url = &config.url;
        let host = url.host_str().unwrap_or("localhost");
        let port = url.port_or_known_default().unwrap_or(80);
        Self {
            pool: UpstreamPool::new(
                format!("{host}:{port}"),
                config.max_idle_connections,
                Duration::from_secs(60),
                config.connect_timeout,
            ),
            base_path: url.path().trim_end_matches('/').to_owned(),
            timeout: config.request_timeout,
        }
    }

    /// The deadline of a request whose head arrived `now`.
    pub fn deadline_from(&self, now: Instant) -> Instant {
        now + self.timeout
    }

    /// Send `parts` + `body` upstream and return the response head with its body (complete
    /// when small, streaming otherwise).
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        peer: &Peer,
        deadline: &mut Deadline<'_>,
    ) -> Result<Answer, MatrixError> {
        let forwarding = Forwarding::settle(&mut parts.headers, peer);
        // Appended while the head is encoded rather than inserted here: three insertions
        // (hashing, and growing the map) were a measurable share of a proxied request.
        let mut extra: [Option<(HeaderName, HeaderValue)>; 4] = Default::default();
        match parts.headers.get(header::HOST) {
            Some(host) if !forwarding.kept_host => {
                extra[0] = Some((X_FORWARDED_HOST, host.clone()));
            }
            Some(_) => {}
            // An absolute-form target (or h2's :authority) carries the host instead.
            None => {
                if let Some(host) = parts
                    .uri
                    .authority()
                    .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                {
                    if !forwarding.kept_host {
                        extra[0] = Some((X_FORWARDED_HOST, host.clone()));
                    }
                    extra[1] = Some((header::HOST, host));
                }
            }
        }
        extra[2] = forwarding
            .chain
            .or_else(|| peer.forwarded_for.clone())
            .map(|v| (X_FORWARDED_FOR, v));
        if !forwarding.kept_proto {
            extra[3] = Some((
                X_FORWARDED_PROTO,
                HeaderValue::from_static(if peer.tls { "https" } else { "http" }),
            ));
        }
        // The request target is kept byte for byte: X-Matrix signatures cover the raw URI.
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let prefixed;
        let target = if self.base_path.is_empty() {
            target
        } else {
            prefixed = format!("{}{target}", self.base_path);
            prefixed.as_str()
        };
        // The exchange is built inside `select!`: bound to a local first, it took a second slot
        // in this future.
        let answer = tokio::select! {
            biased;
            answer = self.pool.send(&parts.method, target, &parts.headers, &extra, body) => {
                Ok(answer)
            }
            () = deadline.passed() => Err(()),
        };
        match answer {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(UpstreamError::Exchange(ExchangeError::RequestBody(e)))) => {
                Err(MatrixError::bad_json("could not read request body", "body-read").caused_by(e))
            }
            Ok(Err(e)) => Err(
                MatrixError::bad_gateway("homeserver unreachable", "upstream-error").caused_by(e),
            ),
            Err(()) => Err(MatrixError::gateway_timeout(
                "homeserver did not answer in time",
                "upstream-timeout",
            )
            .caused_by(format!(
                "no answer head within homeserver.request_timeout ({}s)",
                self.timeout.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forwarded_address_is_the_peers_text_form() {
        let v4: std::net::IpAddr = "192.168.100.200".parse().unwrap();
        assert_eq!(forwarded_for(v4).unwrap(), "192.168.100.200");
        // The longest text form an IPv6 address has (45 bytes).
        let v6: std::net::IpAddr = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
            .parse()
            .unwrap();
        assert_eq!(forwarded_for(v6).unwrap(), v6.to_string().as_str());
    }
}
