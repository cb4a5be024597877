//! Client-server rules: which TIM rule applies to which endpoint, and reading the body only
//! where a rule must see it. Everything else streams through untouched.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use percent_encoding::percent_decode_str;
use serde_json::Value;

use super::forward::{self, Body};
use super::{InboundState, RequestNotes, read_body};
use crate::error::MatrixError;
use crate::matrix::endpoints::PathParams;
use crate::matrix::ids::same_server_name;
use crate::policy::invite::{InviteContext, InviteSource, check_invite, client_invitee};
use crate::policy::{self, parse_object};

type Ready = (http::request::Parts, Body);

/// A path parameter, percent-decoded.
pub(crate) fn decoded(params: &PathParams<'_>, path: &str, name: &str) -> Option<String> {
    params
        .get(path, name)
        .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
}

/// Rebuild the request with a buffered (possibly rewritten) body and its new length.
pub(crate) fn with_body(mut parts: http::request::Parts, bytes: Bytes) -> Ready {
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    (parts, forward::full(bytes))
}

pub(crate) fn invite_context(
    state: &InboundState,
) -> InviteContext<'_, crate::federation::FederationHandle, super::admin_api::AdminApi> {
    InviteContext {
        federation: &state.federation,
        account_data: &state.admin,
        policy: &state.config.policy,
        own_server: &state.config.homeserver.server_name,
        enforce: state.config.federation.enforce,
    }
}

/// Does `server` name this homeserver? Whole server names, port included
/// ([`same_server_name`]): `localhost:8801` is another server than `localhost:8800`.
pub(crate) fn is_own_server(state: &InboundState, server: &str) -> bool {
    same_server_name(server, &state.config.homeserver.server_name)
}

/// Awaits that may reach the network (whoami, account data, the admin API, a federation list
/// refresh) are boxed: they are rare, and inline they would make every request's future, which
/// is moved several times per request, as large as theirs.
pub(crate) async fn apply(
    state: &Arc<InboundState>,
    req: Request<Body>,
    template: &str,
    params: &PathParams<'_>,
    notes: &mut RequestNotes,
) -> Result<Ready, MatrixError> {
    let limit = state.config.inbound.max_body_bytes;
    let policy_config = &state.config.policy;
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let stream = |parts, body| Ok((parts, body));
    match (method, template) {
        (Method::POST, "/_matrix/client/v3/register") => {
            policy::guest::check_register(parts.uri.query())?;
            stream(parts, body)
        }
        (Method::POST, "/_matrix/client/v3/createRoom") => {
            let token = super::whoami::access_token(&parts.headers, parts.uri.query());
            let creator = Box::pin(state.whoami.resolve(token.as_deref())).await?;
            let bytes = read_body(body, limit).await?;
            let mut value = parse_object(&bytes)?;
            let plan = policy::create_room::prepare_create_room(&mut value, policy_config)?;
            if let Some(invitee) = &plan.invitee {
                notes.inviter_server = Some(creator.server_name().to_owned());
                notes.invitee_server = Some(invitee.server_name().to_owned());
                Box::pin(check_invite(
                    &invite_context(state),
                    &creator,
                    invitee,
                    InviteSource::Client,
                ))
                .await?;
            } else if state.config.federation.enforce
                && !is_own_server(state, creator.server_name())
            {
                // A_25534 also covers the creator's own server; local users are always ours.
                Box::pin(check_invite(
                    &invite_context(state),
                    &creator,
                    &creator,
                    InviteSource::Client,
                ))
                .await?;
            }
            let bytes = if plan.rewritten {
                Bytes::from(serde_json::to_vec(&value).map_err(|_| policy::body_parse_error())?)
            } else {
                bytes
            };
            Ok(with_body(parts, bytes))
        }
        (Method::POST, "/_matrix/client/v3/rooms/{roomId}/invite") => {
            let token = super::whoami::access_token(&parts.headers, parts.uri.query());
            let inviter = Box::pin(state.whoami.resolve(token.as_deref())).await?;
            let bytes = read_body(body, limit).await?;
            let value = parse_object(&bytes)?;
            let invitee = client_invitee(&value)?;
            notes.inviter_server = Some(inviter.server_name().to_owned());
            notes.invitee_server = Some(invitee.server_name().to_owned());
            Box::pin(check_invite(
                &invite_context(state),
                &inviter,
                &invitee,
                InviteSource::Client,
            ))
            .await?;
            Ok(with_body(parts, bytes))
        }
        (Method::PUT, "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}") => {
            if decoded(params, parts.uri.path(), "eventType").as_deref()
                != Some(policy::join_rules::EVENT_TYPE)
            {
                return stream(parts, body);
            }
            let bytes = read_body(body, limit).await?;
            policy::join_rules::check_join_rules(
                &parse_object(&bytes)?,
                state.config.policy.flavour,
            )?;
            Ok(with_body(parts, bytes))
        }
        (Method::PUT, "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}") => {
            let bytes = read_body(body, limit).await?;
            let content = policy::parse_relation(&bytes)?;
            policy::threads::check_threads(&content)?;
            if decoded(params, parts.uri.path(), "eventType").as_deref()
                == Some(policy::reaction::EVENT_TYPE)
            {
                policy::reaction::check_reaction(&content)?;
            }
            Ok(with_body(parts, bytes))
        }
        (Method::PUT, "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}") => {
            let (Some(room), Some(event)) = (
                params.get(parts.uri.path(), "roomId"),
                params.get(parts.uri.path(), "eventId"),
            ) else {
                return Err(policy::body_parse_error());
            };
            let now_ms =
                i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(i64::MAX);
            Box::pin(policy::redaction::check_redaction(
                &state.admin,
                room,
                event,
                now_ms,
                policy_config.redaction_max_age,
            ))
            .await?;
            stream(parts, body)
        }
        (Method::PUT, "/_matrix/client/v3/presence/{userId}/status") => {
            let bytes = read_body(body, limit).await?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|_| {
                MatrixError::bad_json("Failed to deserialize request body", "body-parse")
            })?;
            policy::presence::check_presence(&value, policy_config.presence_status_max)?;
            Ok(with_body(parts, bytes))
        }
        (Method::POST, "/_matrix/client/v3/rooms/{roomId}/upgrade") => {
            let bytes = read_body(body, limit).await?;
            policy::room_version::check_upgrade(
                &parse_object(&bytes)?,
                &policy_config.allowed_room_versions,
            )?;
            Ok(with_body(parts, bytes))
        }
        _ => {
            if let Some(server) = decoded(params, parts.uri.path(), "serverName")
                && state.config.federation.enforce
                && !is_own_server(state, &server)
            {
                let membership = Box::pin(state.federation.check(&server)).await;
                policy::media_server::check_media_server(&server, &membership)?;
            }
            stream(parts, body)
        }
    }
}
