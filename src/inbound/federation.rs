//! Inbound federation (`/_matrix/federation/*`, `/_matrix/key/*`), in this order: the
//! `X-Matrix` authorization, read exactly as Synapse reads it ([`crate::matrix::x_matrix`]),
//! names a federated origin (Berechtigungsstufe 1) and, when given, this server as
//! `destination`; the two routes that turn a third-party invite into a membership
//! (`exchange_third_party_invite`, `3pid/onbind`) are refused; the events of event-carrying
//! requests name only federated servers ([`event_domains`], never shadowed); inbound invites
//! get the invite rules, whether they come through `/invite` or as PDUs of a `/send`
//! transaction.
//!
//! Unchecked, because their callers carry no X-Matrix or are not in the federation list:
//! server keys (Synapse fetches them unauthenticated), `openid/userinfo` (the VZD directory),
//! `3pid/onbind` (identity servers). `GET /version` is checked only when it carries X-Matrix
//! (A_26331 in the reference, but Synapse sends it unauthenticated).

use std::sync::Arc;

use http::{HeaderMap, Request};

use super::InboundState;
use super::account::RequestNotes;
use super::body::{read_body, with_body};
use super::client::{RuleReport, invite_context};
use super::forward::{Body, full};
use crate::error::MatrixError;
use crate::federation::list::Membership;
use crate::matrix::ids::UserId;
use crate::matrix::x_matrix::{XMatrix, XMatrixError};
use crate::policy::event_domains::{self, Decision, EventBody};
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

/// What the federation rules decided.
pub(crate) enum Step {
    /// Forward the request (its body unchanged: X-Matrix signatures cover it).
    Forward(Ready),
    /// The proxy answers itself and nothing reaches the homeserver: a transaction held back
    /// by [`event_domains`] (see there why it is answered rather than refused).
    Answer(http::Response<Body>),
}

/// The rules of inbound federation requests, once [`check_origin`] has accepted the origin.
pub(crate) async fn apply(
    state: &Arc<InboundState>,
    req: Request<Body>,
    template: &str,
    _params: &crate::matrix::endpoints::PathParams<'_>,
    notes: &mut RequestNotes,
) -> Result<Step, MatrixError> {
    let (parts, body) = req.into_parts();
    let report = RuleReport::new(&state.metrics, &parts.method, template);
    let gate = Gate::new(&state.config.policy.shadow, &report);
    if THIRD_PARTY.contains(&template) {
        // Shadowed, the request goes on to the event check below.
        gate.check(Err(third_party_invite::refused(false)))?;
    }
    let events = EventBody::of(&parts.method, template);
    let Some(events) = events.filter(|_| state.config.federation.enforce) else {
        return Ok(Step::Forward((parts, body)));
    };
    let invite_v2 = match template {
        "/_matrix/federation/v1/invite/{roomId}/{eventId}" => Some(false),
        "/_matrix/federation/v2/invite/{roomId}/{eventId}" => Some(true),
        _ => None,
    };
    let limit = match invite_v2 {
        Some(_) => state.config.inbound.max_body_bytes,
        None => state.config.federation.max_event_body_bytes,
    };
    let bytes = read_body(body, limit).await?;
    // Before the invite rules: this check needs no homeserver lookups. It protects the
    // federation boundary, so it is never shadowed.
    let own = &state.config.homeserver.server_name;
    let verdict = Box::pin(event_domains::check(events, &bytes, own, &state.federation)).await?;
    match verdict.decide(events) {
        Decision::Forward => {
            if let Some(v2) = invite_v2 {
                check_federation_invite(state, &gate, &bytes, v2, notes).await?;
            }
            if let Err(refusal) = check_transaction_invites(state, &gate, &verdict).await {
                // A lookup that failed is the homeserver's trouble: the sender retries later.
                if refusal.side != crate::error::Side::Downstream {
                    return Err(refusal);
                }
                state.metrics.reject(super::LISTENER, refusal.rule);
                tracing::info!(
                    listener = super::LISTENER,
                    rule = refusal.rule,
                    method = %parts.method,
                    endpoint = template,
                    status = 200,
                    pdus = verdict.pdus,
                    edus = verdict.edus,
                    reason = %refusal.error,
                    "federation transaction held back: it carries an invite the invite rules refuse"
                );
                return Ok(Step::Answer(held_back()));
            }
            Ok(Step::Forward(with_body(parts, bytes)))
        }
        Decision::Refuse(error) => Err(error),
        Decision::HoldBack => {
            state.metrics.reject(super::LISTENER, event_domains::RULE);
            verdict.log_held_back(super::LISTENER, &parts.method);
            Ok(Step::Answer(held_back()))
        }
    }
}

/// The proxy's own answer to a transaction it takes off the sender's queue without
/// forwarding (see [`event_domains`] for why a transaction is answered, not refused).
fn held_back() -> http::Response<Body> {
    let mut answer = http::Response::new(full(event_domains::HELD_BACK_ANSWER));
    answer.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    answer
}

/// The invite rules for the invites of local users among a transaction's PDUs. A server
/// already in a room can put an `m.room.member` invite PDU for a local user into `/send`
/// without calling `/invite` first, and the homeserver accepts it as an invite: the same rules
/// as for `/invite` apply (the federation membership of both sides has been checked with the
/// event's domains already).
async fn check_transaction_invites(
    state: &Arc<InboundState>,
    gate: &Gate<'_>,
    verdict: &event_domains::Verdict,
) -> Result<(), MatrixError> {
    for (sender, invitee) in &verdict.invites {
        // Both were read as user ids by the event-domain check, or the transaction was held.
        let (Ok(sender), Ok(invitee)) = (UserId::parse(sender), UserId::parse(invitee)) else {
            continue;
        };
        if !super::client::is_own_server(state, invitee.server_name()) {
            continue;
        }
        Box::pin(check_invite(
            &invite_context(state),
            gate,
            &sender,
            &invitee,
            InviteSource::Federation,
        ))
        .await?;
    }
    Ok(())
}

/// The invite rules for an inbound federation invite (A_25534, A_26021-01, ePA).
async fn check_federation_invite(
    state: &Arc<InboundState>,
    gate: &Gate<'_>,
    bytes: &[u8],
    v2: bool,
    notes: &mut RequestNotes,
) -> Result<(), MatrixError> {
    let invite = federation_invite(&parse_object(bytes)?, v2)?;
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
        gate,
        &invite.sender,
        &invite.invitee,
        InviteSource::Federation,
    ))
    .await
}
