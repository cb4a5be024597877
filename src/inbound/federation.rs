//! Inbound federation (`/_matrix/federation/*`, `/_matrix/key/*`): the `X-Matrix` origin must
//! be a federated server (Berechtigungsstufe 1) and the `destination`, when given, this
//! server; inbound invites get the invite rules, and the two routes that turn a third-party
//! invite into a membership (`exchange_third_party_invite`, `3pid/onbind`) are refused.
//!
//! Unchecked, because their callers carry no X-Matrix or are not in the federation list:
//! server keys (Synapse fetches them unauthenticated), `openid/userinfo` (the VZD directory),
//! `3pid/onbind` (identity servers). `GET /version` is checked only when it carries X-Matrix
//! (A_26331 in the reference, but Synapse sends it unauthenticated).

use std::sync::Arc;

use http::{HeaderMap, Request};

use super::client::{RuleReport, invite_context, with_body};
use super::forward::Body;
use super::{InboundState, RequestNotes, read_body};
use crate::error::MatrixError;
use crate::federation::list::Membership;
use crate::matrix::x_matrix::{XMatrix, XMatrixError};
use crate::policy::invite::{InviteSource, check_invite, federation_invite};
use crate::policy::shadow::Gate;
use crate::policy::{parse_object, third_party_invite};

pub const RULE_MISSING: &str = "x-matrix-missing";
/// An X-Matrix authorization the homeserver could read differently (see
/// [`crate::matrix::x_matrix`]).
pub const RULE_AMBIGUOUS: &str = "x-matrix-ambiguous";
/// An X-Matrix header Synapse itself refuses as malformed (answered as Synapse answers it).
pub const RULE_MALFORMED: &str = "x-matrix-malformed";
pub const RULE_ORIGIN: &str = "federation-origin";
pub const RULE_DESTINATION: &str = "x-matrix-destination";

const UNCHECKED: [&str; 2] = [
    "/_matrix/federation/v1/openid/userinfo",
    "/_matrix/federation/v1/3pid/onbind",
];
const VERSION: &str = "/_matrix/federation/v1/version";
/// Routes that only serve third-party invites, which TIM refuses everywhere.
const THIRD_PARTY: [&str; 2] = [
    "/_matrix/federation/v1/exchange_third_party_invite/{roomId}",
    "/_matrix/federation/v1/3pid/onbind",
];

type Ready = (http::request::Parts, Body);

/// Check the origin of a federation request; `Ok(None)` when the endpoint is unchecked.
///
/// The origin is read as Synapse reads it, or the request is refused: 401 when there is no
/// X-Matrix authorization or one Synapse could read differently, 400 when Synapse would refuse
/// it as malformed (its answer), 401 when `destination` names another server (Synapse's answer
/// too), 403 when the origin is not federated.
pub async fn check_origin(
    state: &InboundState,
    template: &str,
    headers: &HeaderMap,
) -> Result<Option<XMatrix>, MatrixError> {
    if !state.config.federation.enforce
        || template.starts_with("/_matrix/key/")
        || UNCHECKED.contains(&template)
    {
        return Ok(None);
    }
    let x = match XMatrix::from_headers(headers) {
        Ok(Some(x)) => x,
        Ok(None) if template == VERSION => return Ok(None),
        Ok(None) | Err(XMatrixError::Scheme | XMatrixError::MissingOrigin) => {
            return Err(MatrixError::unauthorized(
                "missing X-Matrix authorization header with origin field",
                RULE_MISSING,
            ));
        }
        Err(XMatrixError::Malformed(why)) => {
            return Err(MatrixError::new(
                http::StatusCode::BAD_REQUEST,
                "M_UNAUTHORIZED",
                format!("Malformed Authorization header ({why})"),
                RULE_MALFORMED,
            ));
        }
        Err(XMatrixError::Ambiguous(why)) => {
            return Err(MatrixError::unauthorized(
                format!(
                    "ambiguous X-Matrix authorization ({why}): refused because the homeserver could read another origin"
                ),
                RULE_AMBIGUOUS,
            ));
        }
    };
    // Synapse compares the whole string, port included, and so must we.
    if let Some(destination) = &x.destination
        && *destination != state.config.homeserver.server_name
    {
        return Err(MatrixError::unauthorized(
            "X-Matrix destination is not this server",
            RULE_DESTINATION,
        ));
    }
    match state.federation.check(&x.origin).await {
        Membership::Member { .. } => Ok(Some(x)),
        Membership::NotMember | Membership::Unavailable(_) => Err(MatrixError::forbidden(
            "not part of federation",
            RULE_ORIGIN,
        )),
    }
}

/// The rules of inbound federation requests, once [`check_origin`] has accepted the origin.
pub(crate) async fn apply(
    state: &Arc<InboundState>,
    req: Request<Body>,
    template: &str,
    _params: &crate::matrix::endpoints::PathParams<'_>,
    notes: &mut RequestNotes,
) -> Result<Ready, MatrixError> {
    let (parts, body) = req.into_parts();
    let report = RuleReport::new(&state.metrics, &parts.method, template);
    let gate = Gate::new(&state.config.policy.shadow, &report);
    if THIRD_PARTY.contains(&template) {
        gate.check(Err(third_party_invite::refused(false)))?;
        return Ok((parts, body));
    }
    let v2 = match template {
        "/_matrix/federation/v1/invite/{roomId}/{eventId}" => false,
        "/_matrix/federation/v2/invite/{roomId}/{eventId}" => true,
        _ => return Ok((parts, body)),
    };
    if !state.config.federation.enforce {
        return Ok((parts, body));
    }
    let bytes = read_body(body, state.config.inbound.max_body_bytes).await?;
    let invite = federation_invite(&parse_object(&bytes)?, v2)?;
    notes.inviter_server = Some(invite.sender.server_name().to_owned());
    notes.invitee_server = Some(invite.invitee.server_name().to_owned());
    if !invite.membership_is_invite {
        gate.check(Err(MatrixError::forbidden(
            "Cannot invite this user",
            "A_26021-01",
        )))?;
    }
    Box::pin(check_invite(
        &invite_context(state),
        &gate,
        &invite.sender,
        &invite.invitee,
        InviteSource::Federation,
    ))
    .await?;
    Ok(with_body(parts, bytes))
}
