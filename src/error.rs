//! Matrix error bodies: the one shape every HTTP rejection of the proxy takes.
//!
//! Rejections carry the TIM rule id (`A_26289`, …) so the listener can log it and count it in
//! `timproxy_rejections_total{rule=…}` without string matching on messages. Every error also
//! says which [`Side`] failed and, where there is one, the underlying cause: a 502 in the log
//! reads "upstream: homeserver unreachable: cannot connect: Connection refused", not just 502.
//! The cause is for the log only; the client gets `errcode` and `error`.
//!
//! Every listener that answers a [`MatrixError`] counts and logs it with
//! [`MatrixError::record`], under one policy.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::metrics::Metrics;

/// An error and its sources as one line (`a: b: c`). Library errors (`reqwest`, `hyper`) hide
/// the telling part (connection refused, …) in their sources; a source whose text the line
/// already holds is skipped.
pub fn error_chain(error: &(dyn std::error::Error + '_)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Which side of the proxy a failure came from (as pingora's error source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream client: a request refused by a rule, unreadable, or broken off. On the
    /// inbound listener a Matrix client or federating server, on the outbound one the
    /// homeserver.
    Downstream,
    /// The upstream server the proxy asked: the homeserver inbound (its client API, its admin
    /// API), the destination server outbound, the registration service for support documents.
    Upstream,
    /// The proxy itself: its configuration, its state, a limit of its own.
    Internal,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
            Side::Internal => "internal",
        }
    }
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error underneath a [`MatrixError`]; shared, so the error stays cheap to clone.
pub type Cause = Arc<dyn std::error::Error + Send + Sync>;

/// An error answered to an HTTP caller as `{"errcode":"M_…","error":"…"}`.
///
/// Built by the constructors below, which pick the [`Side`] that usually fails with that status
/// (4xx: the downstream client; 502/504: upstream; other 5xx: internal). Where that is not the
/// case, or there is an underlying error, the builder methods say so:
/// `MatrixError::bad_gateway("homeserver unreachable", rule).caused_by(io_error)`.
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
    /// TIM requirement id or a short internal rule name (`unknown-endpoint`, `body-parse`, …).
    pub rule: &'static str,
    /// Which side failed.
    pub side: Side,
    /// Why, when there is an error underneath (logged, never answered).
    pub cause: Option<Cause>,
}

impl PartialEq for MatrixError {
    /// Causes compare by their text: error types rarely implement equality.
    fn eq(&self, other: &Self) -> bool {
        self.status == other.status
            && self.errcode == other.errcode
            && self.error == other.error
            && self.rule == other.rule
            && self.side == other.side
            && self.cause.as_ref().map(ToString::to_string)
                == other.cause.as_ref().map(ToString::to_string)
    }
}

impl Eq for MatrixError {}

impl MatrixError {
    pub fn new(
        status: StatusCode,
        errcode: &'static str,
        error: impl Into<String>,
        rule: &'static str,
    ) -> Self {
        let side = match status {
            StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Side::Upstream,
            s if s.is_server_error() => Side::Internal,
            _ => Side::Downstream,
        };
        Self {
            status,
            errcode,
            error: error.into(),
            rule,
            side,
            cause: None,
        }
    }

    /// A 500 `M_UNKNOWN`: the proxy itself failed.
    pub fn internal(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", error, rule)
    }

    /// The upstream failed, whatever the status answered (a lookup at the homeserver that
    /// fails closed with 403, say).
    pub fn from_upstream(mut self) -> Self {
        self.side = Side::Upstream;
        self
    }

    /// The proxy itself failed, whatever the status answered.
    pub fn from_internal(mut self) -> Self {
        self.side = Side::Internal;
        self
    }

    /// The error underneath, for the log: any error, or text for a library error that is only
    /// text by now.
    pub fn caused_by(mut self, cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.cause = Some(Cause::from(cause.into()));
        self
    }

    /// The cause and its sources as one line (`a: b: c`), for log fields; empty without a
    /// cause.
    pub fn cause_chain(&self) -> String {
        self.cause
            .as_deref()
            .map_or_else(String::new, |cause| error_chain(cause))
    }

    pub fn forbidden(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", error, rule)
    }

    pub fn bad_json(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", error, rule)
    }

    pub fn not_json(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", error, rule)
    }

    pub fn unrecognized_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
            "unknown-endpoint",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "This endpoint is implemented, but the method is not supported.",
            "method-not-allowed",
        )
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("request body exceeds the limit of {limit} bytes"),
            "body-limit",
        )
    }

    pub fn bad_gateway(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "M_UNKNOWN", error, rule)
    }

    pub fn gateway_timeout(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, "M_UNKNOWN", error, rule)
    }

    pub fn unauthorized(error: impl Into<String>, rule: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", error, rule)
    }

    /// Count this error in `timproxy_rejections_total` by listener and rule, and log it once.
    ///
    /// The policy, the same on every listener: the line always names the listener, the rule
    /// id, the side that failed, method, endpoint, status and the cause when there is one. A
    /// refusal of the downstream client (`info`, "request rejected") leaves out its message,
    /// which may name users, rooms or servers; the rule id says which rule refused. A failure
    /// upstream or in the proxy itself (`warn`, "request failed") carries its message, which is
    /// the proxy's own account of what went wrong. Messages and causes are the proxy's texts
    /// and transport errors, never request fields, so no token, password or key reaches the
    /// log.
    pub fn record(&self, metrics: &Metrics, listener: &'static str, method: &str, endpoint: &str) {
        metrics.reject(listener, self.rule);
        let status = self.status.as_u16();
        let cause = self.cause.is_some().then(|| self.cause_chain());
        match self.side {
            Side::Downstream => tracing::info!(
                listener,
                rule = self.rule,
                side = %self.side,
                method,
                endpoint,
                status,
                cause,
                "request rejected"
            ),
            Side::Upstream | Side::Internal => tracing::warn!(
                listener,
                rule = self.rule,
                side = %self.side,
                method,
                endpoint,
                status,
                error = %self.error,
                cause,
                "request failed"
            ),
        }
    }

    /// The JSON body bytes.
    pub fn body(&self) -> Bytes {
        let body = serde_json::json!({ "errcode": self.errcode, "error": self.error });
        Bytes::from(body.to_string())
    }

    /// A complete HTTP response with `Content-Type: application/json`.
    pub fn to_response<B>(&self) -> Response<B>
    where
        B: From<Full<Bytes>>,
    {
        let mut response = Response::new(B::from(Full::new(self.body())));
        *response.status_mut() = self.status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} [{}, {}]",
            self.status.as_u16(),
            self.errcode,
            self.error,
            self.rule,
            self.side
        )?;
        if self.cause.is_some() {
            write!(f, ": {}", self.cause_chain())?;
        }
        Ok(())
    }
}

impl std::error::Error for MatrixError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|c| c as _)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn response_carries_status_content_type_and_matrix_body() {
        let err = MatrixError::forbidden("Guest access is disabled", "guest");
        let response: Response<Full<Bytes>> = err.to_response();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            HeaderValue::from_static("application/json")
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"errcode":"M_FORBIDDEN","error":"Guest access is disabled"})
        );
    }

    #[test]
    fn side_defaults_by_status_and_builders_override_it() {
        assert_eq!(MatrixError::forbidden("no", "r").side, Side::Downstream);
        assert_eq!(MatrixError::too_large(1).side, Side::Downstream);
        assert_eq!(MatrixError::bad_gateway("down", "r").side, Side::Upstream);
        assert_eq!(
            MatrixError::gateway_timeout("slow", "r").side,
            Side::Upstream
        );
        assert_eq!(MatrixError::internal("bug", "r").side, Side::Internal);
        let lookup = MatrixError::forbidden("lookup failed", "r").from_upstream();
        assert_eq!(
            (lookup.status, lookup.side),
            (StatusCode::FORBIDDEN, Side::Upstream)
        );
    }

    #[test]
    fn cause_chain_is_logged_but_not_answered() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        let err =
            MatrixError::bad_gateway("homeserver unreachable", "upstream-error").caused_by(io);
        assert_eq!(err.cause_chain(), "connection refused");
        assert_eq!(
            err.to_string(),
            "502 M_UNKNOWN homeserver unreachable [upstream-error, upstream]: connection refused"
        );
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"errcode":"M_UNKNOWN","error":"homeserver unreachable"})
        );
    }

    /// The log line `record` writes, as text and its JSON fields.
    fn recorded(error: &MatrixError, metrics: &Metrics) -> (String, serde_json::Value) {
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            error.record(
                metrics,
                "inbound",
                "PUT",
                "/_matrix/client/v3/rooms/{roomId}/invite",
            );
        });
        let line = String::from_utf8(log.lock().unwrap().clone()).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
        (line, parsed["fields"].clone())
    }

    struct Sink(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rejections_are_counted_and_logged_by_rule_and_side_and_refusals_without_their_message() {
        let metrics = Metrics::new();
        let refused =
            MatrixError::forbidden("@alice:hs1.test may not invite @bob:hs2.test", "A_25046");
        let (line, fields) = recorded(&refused, &metrics);
        assert_eq!(fields["message"], "request rejected", "{line}");
        assert_eq!(fields["listener"], "inbound", "{line}");
        assert_eq!(fields["rule"], "A_25046", "{line}");
        assert_eq!(fields["side"], "downstream", "{line}");
        assert_eq!(fields["status"], 403, "{line}");
        assert!(!line.contains("alice") && !line.contains("bob"), "{line}");

        let failed = MatrixError::bad_gateway("homeserver unreachable", "upstream-error")
            .caused_by("connection refused");
        let (line, fields) = recorded(&failed, &metrics);
        assert_eq!(fields["message"], "request failed", "{line}");
        assert_eq!(fields["side"], "upstream", "{line}");
        assert_eq!(fields["error"], "homeserver unreachable", "{line}");
        assert_eq!(fields["cause"], "connection refused", "{line}");

        let counted = metrics.encode();
        for rule in ["A_25046", "upstream-error"] {
            assert!(
                counted.contains(&format!(
                    r#"rejections_total{{listener="inbound",rule="{rule}",mode="enforce"}} 1"#
                )),
                "{counted}"
            );
        }
    }
}
