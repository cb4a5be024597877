//! Client-server rules: which TIM rule applies to which endpoint, and reading the body only
//! where a rule must see it. Everything else streams through untouched.
//!
//! The routes below are the client rows of the rule-coverage table
//! (`src/policy/coverage.tsv`); a test walks that table through this listener. Path parameters
//! are percent-decoded before a rule reads them (`m.room.%6Dember` is `m.room.member`), as
//! the homeserver decodes them. Every rule outcome passes the request's [`Gate`], so rules in
//! shadow mode (`policy.shadow`) are reported instead of enforced.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request};
use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;

use super::account::RequestNotes;
use super::body::{read_body, with_body};
use super::forward::Body;
use super::{InboundState, LISTENER};
use crate::error::MatrixError;
use crate::matrix::endpoints::PathParams;
use crate::matrix::ids::{UserId, same_server_name};
use crate::metrics::Metrics;
use crate::policy::invite::{InviteContext, InviteSource, check_invite, client_invitee};
use crate::policy::shadow::{Gate, Mode, Reporter};
use crate::policy::{self, parse_object, redaction, third_party_invite};

type Ready = (http::request::Parts, Body);

const REGISTER: &str = "/_matrix/client/v3/register";
const CREATE_ROOM: &str = "/_matrix/client/v3/createRoom";
const INVITE: &str = "/_matrix/client/v3/rooms/{roomId}/invite";
const STATE: &str = "/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}";
const SEND: &str = "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}";
/// Synapse's older spelling of SEND without a transaction id (`legacy_endpoints.tsv`).
const SEND_WITHOUT_TXN: &str = "/_matrix/client/v3/rooms/{roomId}/send/{eventType}";
const REDACT: &str = "/_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}";
const PRESENCE: &str = "/_matrix/client/v3/presence/{userId}/status";
const UPGRADE: &str = "/_matrix/client/v3/rooms/{roomId}/upgrade";
const MEMBER: &str = "m.room.member";

/// A path parameter, percent-decoded.
pub(crate) fn decoded(params: &PathParams<'_>, path: &str, name: &str) -> Option<String> {
    params
        .get(path, name)
        .map(|v| percent_decode_str(v).decode_utf8_lossy().into_owned())
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

/// Logs and counts what a request's [`Gate`] decided: shadowed refusals
/// (`timproxy_rejections_total{mode="shadow"}`) and rewrites
/// (`timproxy_rewrites_total{mode=…}`). Like every rejection log, it names rule, method,
/// endpoint template and status, never IDs or tokens.
pub(crate) struct RuleReport<'a> {
    metrics: &'a Metrics,
    method: &'a Method,
    template: &'a str,
}

impl<'a> RuleReport<'a> {
    pub(crate) fn new(metrics: &'a Metrics, method: &'a Method, template: &'a str) -> Self {
        Self {
            metrics,
            method,
            template,
        }
    }
}

impl Reporter for RuleReport<'_> {
    fn would_refuse(&self, error: &MatrixError) {
        self.metrics
            .reject_in_mode(LISTENER, error.rule, Mode::Shadow.label());
        tracing::info!(
            rule = error.rule,
            mode = Mode::Shadow.label(),
            method = %self.method,
            endpoint = self.template,
            status = error.status.as_u16(),
            "request would have been rejected; rule in shadow mode, forwarded unchanged"
        );
    }

    fn rewrite(&self, rule: &'static str, change: &'static str, mode: Mode) {
        self.metrics.rewrite(LISTENER, rule, mode.label());
        match mode {
            Mode::Enforce => tracing::debug!(
                rule,
                change,
                method = %self.method,
                endpoint = self.template,
                "request rewritten"
            ),
            Mode::Shadow => tracing::info!(
                rule,
                mode = mode.label(),
                change,
                method = %self.method,
                endpoint = self.template,
                "request would have been rewritten; rule in shadow mode, forwarded unchanged"
            ),
        }
    }
}

/// The refusal of an endpoint TIM does not offer ([`policy::blocked_endpoint`]), unless its
/// rule is in shadow mode: then it is reported and the request goes on.
pub(crate) fn blocked_endpoint(
    state: &InboundState,
    method: &Method,
    template: &str,
) -> Option<MatrixError> {
    let refusal = policy::blocked_endpoint(template)?;
    let report = RuleReport::new(&state.metrics, method, template);
    Gate::new(&state.config.policy.shadow, &report)
        .check(Err(refusal))
        .err()
}

/// The user behind the request's access token. Boxed, like every await below that may reach
/// the network (whoami, account data, the admin API, a federation list refresh): they are
/// rare, and inline they would make every request's future, which is moved several times per
/// request, as large as theirs.
async fn requester(
    state: &InboundState,
    parts: &http::request::Parts,
) -> Result<Arc<UserId>, MatrixError> {
    let token = super::whoami::access_token(&parts.headers, parts.uri.query());
    Box::pin(state.whoami.resolve(token.as_deref())).await
}

/// Apply the client rules of `template` to `req`.
pub(crate) async fn apply(
    state: &Arc<InboundState>,
    req: Request<Body>,
    template: &str,
    params: &PathParams<'_>,
    notes: &mut RequestNotes,
) -> Result<Ready, MatrixError> {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let report = RuleReport::new(&state.metrics, &method, template);
    let gate = Gate::new(&state.config.policy.shadow, &report);
    let route = Route {
        state,
        gate: &gate,
        params,
    };
    // An alias spelled out as an endpoint of its own (an operator's `r0` extra) gets the rules
    // of its v1.11 route.
    match (&method, &*policy::coverage::canonical(template)) {
        (&Method::POST, REGISTER) => {
            gate.check(policy::guest::check_register(parts.uri.query()))?;
            Ok((parts, body))
        }
        (&Method::POST, CREATE_ROOM) => route.create_room(parts, body, notes).await,
        (&Method::POST, INVITE) => route.invite(parts, body, notes).await,
        (&Method::PUT, STATE) => route.state_event(parts, body, notes).await,
        (&Method::PUT, SEND) | (&Method::POST, SEND_WITHOUT_TXN) => {
            route.send_event(parts, body).await
        }
        (&Method::PUT, REDACT) => route.redact(parts, body).await,
        (&Method::PUT, PRESENCE) => route.presence(parts, body).await,
        (&Method::POST, UPGRADE) => route.upgrade(parts, body).await,
        _ => route.media_server(parts, body).await,
    }
}

/// What every rule route needs.
struct Route<'a> {
    state: &'a Arc<InboundState>,
    gate: &'a Gate<'a>,
    params: &'a PathParams<'a>,
}

impl Route<'_> {
    fn param(&self, parts: &http::request::Parts, name: &str) -> Option<String> {
        decoded(self.params, parts.uri.path(), name)
    }

    async fn read(&self, body: Body) -> Result<Bytes, MatrixError> {
        read_body(body, self.state.config.inbound.max_body_bytes).await
    }

    /// The invite rules for one invitee (A_25534, A_26021-01, ePA insured).
    async fn check_invite(
        &self,
        inviter: &UserId,
        invitee: &UserId,
        notes: &mut RequestNotes,
    ) -> Result<(), MatrixError> {
        notes.inviter_server = Some(inviter.server_name().to_owned());
        notes.invitee_server = Some(invitee.server_name().to_owned());
        Box::pin(check_invite(
            &invite_context(self.state),
            self.gate,
            inviter,
            invitee,
            InviteSource::Client,
        ))
        .await
    }

    /// createRoom: the room's whole start ([`policy::create_room`]), then the invite rules
    /// per invitee, or A_25534 for the creator's own server when nobody is invited.
    async fn create_room(
        &self,
        parts: http::request::Parts,
        body: Body,
        notes: &mut RequestNotes,
    ) -> Result<Ready, MatrixError> {
        let creator = requester(self.state, &parts).await?;
        let bytes = self.read(body).await?;
        let mut value = parse_object(&bytes)?;
        let plan = policy::create_room::prepare_create_room(
            &mut value,
            &self.state.config.policy,
            self.gate,
        )?;
        if plan.invitees.is_empty() {
            if self.state.config.federation.enforce
                && !is_own_server(self.state, creator.server_name())
            {
                // A_25534 also covers the creator's own server; local users are always ours.
                self.check_invite(&creator, &creator, &mut RequestNotes::default())
                    .await?;
            }
        } else {
            for invitee in &plan.invitees {
                self.check_invite(&creator, invitee, notes).await?;
            }
        }
        let bytes = if plan.rewritten {
            Bytes::from(serde_json::to_vec(&value).map_err(|_| policy::body_parse_error())?)
        } else {
            bytes
        };
        Ok(with_body(parts, bytes))
    }

    /// `POST …/invite`: by Matrix ID, or a 3PID invite (Synapse's reading: `medium` and
    /// `address` present, `user_id` then ignored).
    async fn invite(
        &self,
        parts: http::request::Parts,
        body: Body,
        notes: &mut RequestNotes,
    ) -> Result<Ready, MatrixError> {
        let inviter = requester(self.state, &parts).await?;
        let bytes = self.read(body).await?;
        let value = parse_object(&bytes)?;
        if third_party_invite::is_client_3pid_invite(&value) {
            let reference_answer = value.get("user_id").is_none();
            self.gate
                .check(Err(third_party_invite::refused(reference_answer)))?;
            return Ok(with_body(parts, bytes));
        }
        let invitee = client_invitee(&value)?;
        self.check_invite(&inviter, &invitee, notes).await?;
        Ok(with_body(parts, bytes))
    }

    /// `PUT …/state/{eventType}/{stateKey}`: content rules for every state event, and what
    /// the event type makes it: an invite (`m.room.member`, `membership: invite`), a 3PID
    /// invite, a join rule (A_28271) or a redaction (A_28358).
    async fn state_event(
        &self,
        parts: http::request::Parts,
        body: Body,
        notes: &mut RequestNotes,
    ) -> Result<Ready, MatrixError> {
        let event_type = self.param(&parts, "eventType").unwrap_or_default();
        let state_key = self.param(&parts, "stateKey").unwrap_or_default();
        let bytes = self.read(body).await?;
        let content = parse_object(&bytes)?;
        policy::event::check_content(self.gate, &event_type, &content)?;
        match event_type.as_str() {
            MEMBER => {
                if let Some(invitee) = policy::invite::member_invitee(&state_key, &content)? {
                    let inviter = requester(self.state, &parts).await?;
                    self.check_invite(&inviter, &invitee, notes).await?;
                }
            }
            third_party_invite::STATE_EVENT_TYPE => {
                self.gate.check(Err(third_party_invite::refused(false)))?;
            }
            policy::join_rules::EVENT_TYPE => {
                self.gate.check(policy::join_rules::check_join_rules(
                    &content,
                    self.state.config.policy.flavour,
                ))?;
            }
            redaction::EVENT_TYPE => self.check_redacts(&parts, &content).await?,
            _ => {}
        }
        Ok(with_body(parts, bytes))
    }

    /// `PUT …/send/{eventType}/{txnId}` (and `POST …/send/{eventType}`): content rules; an
    /// `m.room.redaction` is a redaction.
    /// Message bodies are the most frequent bodies, so only their relation is parsed.
    async fn send_event(
        &self,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<Ready, MatrixError> {
        let event_type = self.param(&parts, "eventType").unwrap_or_default();
        let bytes = self.read(body).await?;
        if event_type == redaction::EVENT_TYPE {
            let content = parse_object(&bytes)?;
            policy::event::check_content(self.gate, &event_type, &content)?;
            self.check_redacts(&parts, &content).await?;
        } else {
            let content = policy::parse_relation(&bytes)?;
            policy::event::check_content(self.gate, &event_type, &content)?;
        }
        Ok(with_body(parts, bytes))
    }

    /// A redaction event's `content.redacts` names its target.
    async fn check_redacts(
        &self,
        parts: &http::request::Parts,
        content: &Value,
    ) -> Result<(), MatrixError> {
        let Some(target) = redaction::redacts(content) else {
            return Ok(());
        };
        let room = self
            .params
            .get(parts.uri.path(), "roomId")
            .ok_or_else(policy::body_parse_error)?;
        // The admin API lookup takes path segments as they arrive in a URL.
        let target = utf8_percent_encode(target, NON_ALPHANUMERIC).to_string();
        self.check_redaction_age(room, &target).await
    }

    async fn check_redaction_age(&self, room: &str, event: &str) -> Result<(), MatrixError> {
        let now_ms =
            i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(i64::MAX);
        self.gate.check(
            Box::pin(redaction::check_redaction(
                &self.state.admin,
                room,
                event,
                now_ms,
                self.state.config.policy.redaction_max_age,
            ))
            .await,
        )
    }

    /// `PUT …/redact/{eventId}/{txnId}`: the redaction's own content, then the target's age.
    async fn redact(&self, parts: http::request::Parts, body: Body) -> Result<Ready, MatrixError> {
        let path = parts.uri.path();
        let (Some(room), Some(event)) = (
            self.params.get(path, "roomId"),
            self.params.get(path, "eventId"),
        ) else {
            return Err(policy::body_parse_error());
        };
        let bytes = self.read(body).await?;
        let content = policy::parse_relation(&bytes)?;
        policy::event::check_content(self.gate, redaction::EVENT_TYPE, &content)?;
        self.check_redaction_age(room, event).await?;
        Ok(with_body(parts, bytes))
    }

    async fn presence(
        &self,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<Ready, MatrixError> {
        let bytes = self.read(body).await?;
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|_| policy::body_parse_error())?;
        self.gate.check(policy::presence::check_presence(
            &value,
            self.state.config.policy.presence_status_max,
        ))?;
        Ok(with_body(parts, bytes))
    }

    async fn upgrade(&self, parts: http::request::Parts, body: Body) -> Result<Ready, MatrixError> {
        let bytes = self.read(body).await?;
        let value = parse_object(&bytes)?;
        let version = policy::room_version::upgrade_version(&value)?;
        self.gate.check(policy::room_version::check_room_version(
            version,
            &self.state.config.policy.allowed_room_versions,
        ))?;
        Ok(with_body(parts, bytes))
    }

    /// Every other endpoint streams; media addressed by `{serverName}` must come from a
    /// federated server (A_26328).
    async fn media_server(
        &self,
        parts: http::request::Parts,
        body: Body,
    ) -> Result<Ready, MatrixError> {
        if let Some(server) = self.param(&parts, "serverName")
            && self.state.config.federation.enforce
            && !is_own_server(self.state, &server)
        {
            let membership = Box::pin(self.state.federation.check(&server)).await;
            policy::media_server::check_media_server(&server, &membership)?;
        }
        Ok((parts, body))
    }
}
