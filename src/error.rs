//! Matrix error bodies: the one shape every HTTP rejection of the proxy takes.
//!
//! Rejections carry the TIM rule id (`A_26289`, …) so the listener can log it and count it in
//! `timproxy_rejections_total{rule=…}` without string matching on messages.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// An error answered to an HTTP caller as `{"errcode":"M_…","error":"…"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
    /// TIM requirement id or a short internal rule name (`unknown-endpoint`, `body-parse`, …).
    pub rule: &'static str,
}

impl MatrixError {
    pub fn new(
        status: StatusCode,
        errcode: &'static str,
        error: impl Into<String>,
        rule: &'static str,
    ) -> Self {
        Self {
            status,
            errcode,
            error: error.into(),
            rule,
        }
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
            "{} {} {} [{}]",
            self.status.as_u16(),
            self.errcode,
            self.error,
            self.rule
        )
    }
}

impl std::error::Error for MatrixError {}

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
}
