//! Request bodies a rule must read. Everything else streams to the homeserver untouched;
//! these are read whole, up to `inbound.max_body_bytes`, and forwarded as read (or as a rule
//! rewrote them) with their new length.

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body_util::BodyExt;

use super::forward::{self, Body};
use crate::error::MatrixError;

/// Read a body a rule must inspect, up to `inbound.max_body_bytes` (413 beyond). A body that
/// arrives in one piece (the usual case) is returned as it is, without a copy.
pub(crate) async fn read_body(mut body: Body, limit: u64) -> Result<Bytes, MatrixError> {
    use http_body::Body as _;
    if body.size_hint().lower() > limit {
        return Err(MatrixError::too_large(limit));
    }
    let mut first: Option<Bytes> = None;
    let mut joined = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            MatrixError::bad_json("could not read request body", "body-read").caused_by(e)
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if (held as u64).saturating_add(data.len() as u64) > limit {
            return Err(MatrixError::too_large(limit));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(data),
            None => joined.extend_from_slice(&data),
            Some(earlier) => {
                joined.extend_from_slice(&earlier);
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// Rebuild the request with a buffered (possibly rewritten) body and its new length.
pub(crate) fn with_body(
    mut parts: http::request::Parts,
    bytes: Bytes,
) -> (http::request::Parts, Body) {
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    (parts, forward::full(bytes))
}
