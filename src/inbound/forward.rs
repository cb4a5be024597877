//! Forwarding to the homeserver: pooled hyper client, bodies streamed both ways, the request
//! target forwarded byte for byte (X-Matrix signatures cover the raw URI), hop-by-hop headers
//! removed and `X-Forwarded-*` set.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::config::HomeserverConfig;
use crate::error::MatrixError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of everything the listener sends and forwards.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

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

pub fn stream(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Remove hop-by-hop headers, including those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Pooled client to `homeserver.url`.
#[derive(Clone)]
pub struct Forwarder {
    client: Client<HttpConnector, Body>,
    /// `scheme://authority` plus an optional base path, without trailing slash.
    base: String,
    timeout: Duration,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("base", &self.base)
            .finish()
    }
}

impl Forwarder {
    pub fn new(config: &HomeserverConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.max_idle_connections)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        let base = config.url.as_str().trim_end_matches('/').to_owned();
        Self {
            client,
            base,
            timeout: config.request_timeout,
        }
    }

    /// Send `parts` + `body` upstream and return the response head with a streaming body.
    pub async fn forward(
        &self,
        mut parts: http::request::Parts,
        body: Body,
        remote: SocketAddr,
        tls: bool,
    ) -> Result<Response<Body>, MatrixError> {
        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let uri: Uri = format!("{}{}", self.base, target)
            .parse()
            .map_err(|_| MatrixError::bad_gateway("invalid upstream URI", "upstream"))?;
        let original_authority = parts.uri.authority().map(|a| a.as_str().to_owned());
        strip_hop_by_hop(&mut parts.headers);
        let host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| original_authority.and_then(|a| HeaderValue::from_str(&a).ok()));
        if let Some(host) = host {
            parts.headers.insert("x-forwarded-host", host.clone());
            parts.headers.insert(header::HOST, host);
        }
        let client_ip = remote.ip().to_string();
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {client_ip}"),
            None => client_ip,
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
        parts.headers.insert(
            "x-forwarded-proto",
            HeaderValue::from_static(if tls { "https" } else { "http" }),
        );
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        let request = Request::from_parts(parts, body);
        let response = match tokio::time::timeout(self.timeout, self.client.request(request)).await
        {
            Err(_) => {
                return Err(MatrixError::gateway_timeout(
                    "homeserver did not answer in time",
                    "upstream-timeout",
                ));
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "homeserver request failed");
                return Err(MatrixError::bad_gateway(
                    "homeserver unreachable",
                    "upstream-error",
                ));
            }
            Ok(Ok(response)) => response,
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, stream(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::AUTHORIZATION));
    }
}
