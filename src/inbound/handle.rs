//! One request end to end: the phases every request of the inbound listener passes, in order.
//!
//! Both connection kinds (the own HTTP/1 server in [`super::http1`], hyper for h2) hand each
//! request to [`handle`]; everything a request does between its head and its answer starts
//! here. Each phase lives in a module of its own so that a reader can find it by name:
//!
//! | phase | where | what it decides |
//! |---|---|---|
//! | classify | [`super::classify`] | which endpoint; answered by the proxy itself? |
//! | authenticate | [`super::federation::check_origin`] | a federation origin is federated |
//! | rules | [`super::client`], [`super::federation`] | the TIM rules of the endpoint |
//! | forward | [`super::forward`], [`super::upstream`] | the homeserver's answer |
//! | respond | [`super::respond`] | the answer as the client gets it |
//! | account | [`super::account`] | request counters, raw-data reports |
//!
//! A failure in any phase is a [`MatrixError`] that names the side that failed (client,
//! homeserver, or the proxy itself, [`crate::error::Side`]) and its cause; it travels as the
//! `Err` of the outcome to [`respond`], which logs and counts it once.

use std::sync::Arc;

use http::{Request, Response};

use super::account::{RequestFacts, RequestNotes, account};
use super::answer::Answer;
use super::classify::{Route, classify};
use super::forward::{Body, Deadline, Peer};
use super::respond::{filter_versions_response, respond, wants_versions_filter};
use super::{InboundState, client, federation};
use crate::error::MatrixError;

/// Handle one request end to end. Each request passes the same phases, in this order:
///
/// 1. classify ([`classify`]): which endpoint of the v1.11 table (or route of the proxy's own)
///    the request addressed, and whether the proxy answers it itself (CORS preflights, unknown
///    paths, blocked endpoints, `/.well-known/matrix/*`).
/// 2. authenticate ([`federation::check_origin`]): a federation request's `X-Matrix` origin must
///    be in the federation list. Client requests have nothing to check here: the homeserver
///    checks access tokens, and the rules that need the user resolve the token themselves
///    ([`super::whoami`]), so requests no rule needs it for pay no lookup.
/// 3. rules ([`client::apply`], [`federation::apply`]): the TIM rules of the endpoint; they may
///    read and rewrite the body.
/// 4. forward ([`super::forward::Forwarder::forward`]) to the homeserver.
/// 5. respond ([`respond`]): the answer as the client gets it (the `/versions` filter; a
///    rejection as Matrix error JSON, logged and counted once; the CORS fields).
/// 6. account ([`account`]): request counters and the raw-data observer.
///
/// The phases are plain functions around the few awaits, which stay in this one function: each
/// nested future is copied into its caller's when first awaited, and an async function per
/// phase cost one such copy per phase and request.
pub(crate) async fn handle(
    state: Arc<InboundState>,
    req: Request<Body>,
    peer: &Peer,
    mut deadline: Deadline<'_>,
) -> Answer {
    let facts = RequestFacts::take(&state, &req);
    let method = req.method().clone();
    // 1. classify
    let (endpoint, route) = classify(&state, &req);
    let mut notes = RequestNotes::default();
    // 2. authenticate and 3. rules
    let decision = match route {
        Route::Local(answer) => Decision::Answer(answer),
        // Boxed, like every rare await that may reach the network: inline, it would enlarge
        // every request's future.
        Route::Support => Decision::Answer(Box::pin(state.support.answer()).await),
        Route::Unchecked => Decision::from(Ok(req.into_parts())),
        Route::Checked(params) if endpoint.is_federation => {
            match Box::pin(federation::check_origin(
                &state,
                endpoint.template,
                req.headers(),
            ))
            .await
            {
                Err(err) => Decision::Answer(Err(err)),
                Ok(_) => Decision::from(
                    Box::pin(federation::apply(
                        &state,
                        req,
                        endpoint.template,
                        &params,
                        &mut notes,
                    ))
                    .await,
                ),
            }
        }
        Route::Checked(params) => {
            Decision::from(client::apply(&state, req, endpoint.template, &params, &mut notes).await)
        }
    };
    // 4. forward
    let relayed = matches!(decision, Decision::Forward(..));
    let outcome = match decision {
        Decision::Forward(parts, body) => {
            state
                .forwarder
                .forward(parts, body, peer, &mut deadline)
                .await
        }
        Decision::Answer(answer) => answer.map(Answer::from),
    };
    // The status a raw-data report gives is the homeserver's, never one the proxy made up.
    let forwarded = relayed && outcome.is_ok();
    // 5. respond
    let outcome = match outcome {
        Ok(response) if wants_versions_filter(&method, endpoint, &response) => {
            filter_versions_response(
                response,
                state.config.inbound.max_body_bytes,
                &state.versions,
            )
            .await
        }
        outcome => outcome,
    };
    let response = respond(&state, &method, endpoint, outcome);
    // 6. account
    account(&state, endpoint, facts, notes, forwarded, &response);
    response
}

/// What the authenticate and rules phases decided.
enum Decision {
    Forward(http::request::Parts, Body),
    Answer(Result<Response<Body>, MatrixError>),
}

impl From<Result<(http::request::Parts, Body), MatrixError>> for Decision {
    fn from(checked: Result<(http::request::Parts, Body), MatrixError>) -> Self {
        match checked {
            Ok((parts, body)) => Decision::Forward(parts, body),
            Err(err) => Decision::Answer(Err(err)),
        }
    }
}

impl From<Result<federation::Step, MatrixError>> for Decision {
    fn from(checked: Result<federation::Step, MatrixError>) -> Self {
        match checked {
            Ok(federation::Step::Forward((parts, body))) => Decision::Forward(parts, body),
            Ok(federation::Step::Answer(response)) => Decision::Answer(Ok(response)),
            Err(err) => Decision::Answer(Err(err)),
        }
    }
}
