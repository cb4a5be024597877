//! `GET /.well-known/matrix/support` (A_26265): answered from the registration service
//! (`{registration_service.url}{well_known_support_path}/{serverName}`), not by the homeserver.
//!
//! The lookup key is the full server name (configurable), not the reference's first DNS label.
//! When the registration service knows no support document (404), the operator's fallback
//! document is served if configured, else 404 `M_NOT_FOUND` — never a placeholder document with
//! invalid `role` values.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::config::Config;
use crate::error::MatrixError;

use super::forward::{self, Body};

const RULE: &str = "A_26265";

/// Characters that cannot stand in one path segment; server names (host[:port]) keep their
/// dots and colon.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'/')
    .add(b'?')
    .add(b'#')
    .add(b'%');

pub(crate) struct SupportLookup {
    client: reqwest::Client,
    url: String,
    server_name: String,
    fallback: Option<std::path::PathBuf>,
}

impl SupportLookup {
    pub(crate) fn new(config: &Config, client: reqwest::Client) -> Self {
        let rs = &config.registration_service;
        let server_name = rs
            .support_server_name
            .clone()
            .unwrap_or_else(|| config.homeserver.server_name.clone());
        let base = rs.url.as_str().trim_end_matches('/');
        let path = rs.well_known_support_path.trim_end_matches('/');
        let encoded: String =
            percent_encoding::utf8_percent_encode(&server_name, SEGMENT).to_string();
        Self {
            client,
            url: format!("{base}{path}/{encoded}"),
            server_name,
            fallback: rs.support_fallback_file.clone(),
        }
    }

    /// The support document, or a Matrix error saying why there is none.
    pub(crate) async fn answer(&self) -> Result<Response<Body>, MatrixError> {
        let upstream = self
            .client
            .get(&self.url)
            .header(header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                MatrixError::bad_gateway("the registration service is unreachable", RULE)
                    .caused_by(e)
            })?;
        match upstream.status() {
            s if s.is_success() => {
                let body = upstream.bytes().await.map_err(|e| {
                    MatrixError::bad_gateway("the registration service answer broke off", RULE)
                        .caused_by(e)
                })?;
                if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                    return Err(MatrixError::bad_gateway(
                        "the registration service answered with non-JSON support information",
                        RULE,
                    )
                    .caused_by(e));
                }
                Ok(json_response(body))
            }
            StatusCode::NOT_FOUND => match &self.fallback {
                Some(path) => {
                    let body = tokio::fs::read(path).await.map_err(|e| {
                        MatrixError::internal("support fallback document unreadable", RULE)
                            .caused_by(format!("{}: {e}", path.display()))
                    })?;
                    Ok(json_response(Bytes::from(body)))
                }
                None => Err(MatrixError::new(
                    StatusCode::NOT_FOUND,
                    "M_NOT_FOUND",
                    format!("no support information for {}", self.server_name),
                    RULE,
                )),
            },
            other => Err(MatrixError::bad_gateway(
                format!("the registration service answered {}", other.as_u16()),
                RULE,
            )),
        }
    }
}

fn json_response(body: Bytes) -> Response<Body> {
    let mut response = Response::new(forward::full(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
