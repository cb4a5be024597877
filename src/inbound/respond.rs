//! Phase 5, respond: the answer as the client gets it.
//!
//! Homeserver answers are relayed untouched except for two things TIM or browsers need: the
//! `/versions` answer loses what TIM does not allow, and every answer gets the CORS fields it
//! lacks. A rejection of any phase becomes Matrix error JSON here, logged and counted once by
//! rule and by the side that failed.

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};
use http_body_util::BodyExt;

use super::answer::Answer;
use super::classify::Addressed;
use super::forward::full;
use super::{InboundState, cors};
use crate::error::MatrixError;

/// Phase 5: the answer as the client gets it. A rejection becomes Matrix error JSON and is
/// counted and logged here, once, by rule and side; every answer gets the CORS fields it lacks
/// ([`cors::complete`]).
pub(super) fn respond(
    state: &InboundState,
    method: &Method,
    endpoint: Addressed<'_>,
    outcome: Result<Answer, MatrixError>,
) -> Answer {
    let mut answer = match outcome {
        Ok(answer) => answer,
        Err(err) => Answer::from(state.reject(&err, method, endpoint.template)),
    };
    cors::complete(&mut answer);
    answer
}

/// The homeserver's `/versions` answer loses the versions and features TIM does not allow
/// (see [`crate::policy::versions`]).
pub(super) fn wants_versions_filter(
    method: &Method,
    endpoint: Addressed<'_>,
    answer: &Answer,
) -> bool {
    *method == Method::GET
        && endpoint.template == "/_matrix/client/versions"
        && answer.status() == StatusCode::OK
}

/// The last `/versions` answer of the homeserver and its filtered form: the answer only
/// changes on a homeserver upgrade, and clients ask for it constantly.
#[derive(Debug, Default)]
pub(super) struct VersionsMemo {
    last: std::sync::Mutex<Option<(Bytes, Bytes)>>,
}

impl VersionsMemo {
    fn filtered(&self, upstream: Bytes) -> Bytes {
        if let Ok(last) = self.last.lock()
            && let Some((seen, filtered)) = last.as_ref()
            && *seen == upstream
        {
            return filtered.clone();
        }
        let filtered = crate::policy::versions::filter_versions(&upstream)
            .map(Bytes::from)
            .unwrap_or_else(|| upstream.clone());
        if let Ok(mut last) = self.last.lock() {
            *last = Some((upstream, filtered.clone()));
        }
        filtered
    }
}

pub(super) async fn filter_versions_response(
    answer: Answer,
    limit: u64,
    memo: &VersionsMemo,
) -> Result<Answer, MatrixError> {
    let (mut parts, mut body) = answer.into_response().into_parts();
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            MatrixError::bad_gateway("could not read /versions answer", "versions").caused_by(e)
        })?;
        if let Ok(data) = frame.into_data() {
            if buf.len().saturating_add(data.len()) > limit {
                return Err(
                    MatrixError::bad_gateway("/versions answer too large", "versions")
                        .caused_by(format!("more than inbound.max_body_bytes ({limit})")),
                );
            }
            buf.extend_from_slice(&data);
        }
    }
    let out = memo.filtered(buf.freeze());
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(out.len()));
    Ok(Answer::from(Response::from_parts(parts, full(out))))
}
