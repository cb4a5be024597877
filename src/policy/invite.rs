//! A_25534 (federation membership of inviter and invitee), A_26021-01 / AF_10064-02 (the
//! invitee's permission configuration) and the TI-M ePA rule "no invites between insured
//! persons", applied to every route through which Synapse performs an invite:
//! `POST …/invite`, `PUT …/state/m.room.member/{userId}` with `membership: invite`, createRoom
//! `invite` and `initial_state` member events, and inbound federation invites (v1, v2).
//! Third-party invites, which name no Matrix ID, are refused in [`super::third_party_invite`].

use serde_json::Value;

use crate::config::PolicyConfig;
use crate::error::MatrixError;
use crate::federation::list::Membership;
use crate::matrix::ids::{UserId, same_server_name};
use crate::policy::permission_config::{self, ConfigKind, Decision, DefaultSetting};
use crate::policy::shadow::Gate;
use crate::policy::{AccountDataSource, FederationList, LookupError, body_parse_error};

pub const RULE_FEDERATION: &str = "A_25534";
pub const RULE_PERMISSION: &str = "A_26021-01";
pub const RULE_PERMISSION_INVALID: &str = "A_26021-01-config";
pub const RULE_INSURED: &str = "ePA-insured-to-insured";

/// Where the invite came from (selects the reference's wording of a policy block).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InviteSource {
    Client,
    Federation,
}

/// What a check needs besides the two users.
pub struct InviteContext<'a, F, A> {
    pub federation: &'a F,
    pub account_data: &'a A,
    pub policy: &'a PolicyConfig,
    /// `homeserver.server_name`: the invitee's config can only be read for local users, those
    /// whose server name is exactly this one (port included).
    pub own_server: &'a str,
    /// `federation.enforce`; false disables every check here.
    pub enforce: bool,
}

fn not_federated(server: &str) -> MatrixError {
    MatrixError::forbidden(
        format!("{server} kann nicht in der Föderation gefunden werden"),
        RULE_FEDERATION,
    )
}

async fn insurance_of<F: FederationList>(
    federation: &F,
    server: &str,
    own_server: &str,
) -> Result<bool, MatrixError> {
    match federation.membership(server).await {
        Membership::Member { is_insurance } => Ok(is_insurance),
        // The own server serves its local users even without a usable list.
        _ if same_server_name(server, own_server) => Ok(false),
        _ => Err(not_federated(server)),
    }
}

/// Check one invite of `invitee` by `inviter`. Each rule's outcome passes `gate`, so a
/// shadowed rule is evaluated and reported without stopping the invite.
pub async fn check_invite<F: FederationList, A: AccountDataSource>(
    ctx: &InviteContext<'_, F, A>,
    gate: &Gate<'_>,
    inviter: &UserId,
    invitee: &UserId,
    source: InviteSource,
) -> Result<(), MatrixError> {
    if !ctx.enforce {
        return Ok(());
    }
    // A_25534. A server outside the list counts as not insured for the rules below (they only
    // run when A_25534 is shadowed).
    let mut insured = [false; 2];
    for (slot, user) in insured.iter_mut().zip([invitee, inviter]) {
        match insurance_of(ctx.federation, user.server_name(), ctx.own_server).await {
            Ok(is_insurance) => *slot = is_insurance,
            Err(refusal) => gate.check(Err(refusal))?,
        }
    }
    let [invitee_insured, inviter_insured] = insured;
    if invitee_insured && inviter_insured {
        gate.check(Err(MatrixError::forbidden(
            "invite between insured persons is not allowed",
            RULE_INSURED,
        )))?;
    }
    if !ctx.policy.invite_permission_check
        || !same_server_name(invitee.server_name(), ctx.own_server)
    {
        return Ok(());
    }
    let blocked_message = match source {
        InviteSource::Client => "The invite was blocked by the invitees policy",
        InviteSource::Federation => "Cannot invite this user",
    };
    // A local user the homeserver does not know (yet: an application service creates its users
    // when they are first invited) has no account data, so the operator default applies;
    // whether the user exists is the homeserver's to answer.
    let data = match ctx.account_data.global_account_data(invitee).await {
        Ok(data) => data,
        Err(LookupError::NotFound) => serde_json::Map::new(),
        Err(e) => return gate.check(Err(e.into_matrix_error(RULE_PERMISSION, "AccountData"))),
    };
    let (kind, content) = ConfigKind::lookup_order(ctx.policy.flavour)
        .into_iter()
        .find_map(|kind| data.get(kind.event_type()).map(|c| (kind, Some(c))))
        .unwrap_or((ConfigKind::lookup_order(ctx.policy.flavour)[0], None));
    let server_default =
        DefaultSetting::parse(&ctx.policy.default_permission).unwrap_or(DefaultSetting::AllowAll);
    gate.check(
        match permission_config::decide(kind, content, server_default, inviter, inviter_insured) {
            Decision::Allow => Ok(()),
            Decision::Block => Err(MatrixError::forbidden(blocked_message, RULE_PERMISSION)),
            Decision::Invalid(reason) => {
                tracing::info!(rule = RULE_PERMISSION_INVALID, %reason, "invitee permission config does not fit its schema");
                Err(MatrixError::forbidden(
                    blocked_message,
                    RULE_PERMISSION_INVALID,
                ))
            }
        },
    )
}

/// The invitee of a membership event (`m.room.member` with `state_key`), if its membership
/// is `invite`. Synapse invites whoever the state key names, so a state key that is not a
/// user ID is refused rather than forwarded unchecked.
pub fn member_invitee(state_key: &str, content: &Value) -> Result<Option<UserId>, MatrixError> {
    if content.get("membership").and_then(Value::as_str) != Some("invite") {
        return Ok(None);
    }
    UserId::parse(state_key).map(Some).map_err(|_| {
        MatrixError::new(
            http::StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "the state key of an m.room.member invite must be a user ID",
            "body-parse",
        )
    })
}

/// `POST /rooms/{roomId}/invite`: the invitee (`user_id`; 3PID invites are refused).
pub fn client_invitee(body: &Value) -> Result<UserId, MatrixError> {
    let user_id = body.get("user_id").and_then(Value::as_str).ok_or_else(|| {
        MatrixError::bad_json(
            "InviteUser.Request.userId is missing",
            "invite-user-id-missing",
        )
    })?;
    UserId::parse(user_id).map_err(|_| body_parse_error())
}

/// An inbound federation invite, from the v1 body (the event) or the v2 body (`{"event":…}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederationInvite {
    pub sender: UserId,
    pub invitee: UserId,
    pub membership_is_invite: bool,
}

pub fn federation_invite(body: &Value, v2: bool) -> Result<FederationInvite, MatrixError> {
    let event = if v2 {
        body.get("event").ok_or_else(body_parse_error)?
    } else {
        body
    };
    let field = |name: &str| event.get(name).and_then(Value::as_str);
    let sender = field("sender")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(body_parse_error)?;
    let invitee = field("state_key")
        .and_then(|s| UserId::parse(s).ok())
        .ok_or_else(body_parse_error)?;
    let membership = event
        .get("content")
        .and_then(|c| c.get("membership"))
        .and_then(Value::as_str);
    Ok(FederationInvite {
        sender,
        invitee,
        membership_is_invite: membership == Some("invite"),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Flavour;
    use crate::federation::list::domain_of;
    use serde_json::{Map, json};
    use std::collections::HashMap;

    pub struct Fed(pub HashMap<&'static str, bool>);
    impl FederationList for Fed {
        async fn membership(&self, server: &str) -> Membership {
            match self.0.get(domain_of(server)) {
                Some(i) => Membership::Member { is_insurance: *i },
                None => Membership::NotMember,
            }
        }
    }
    pub struct Data(pub Result<Map<String, Value>, LookupError>);
    impl AccountDataSource for Data {
        async fn global_account_data(&self, _: &UserId) -> Result<Map<String, Value>, LookupError> {
            self.0.clone()
        }
    }

    fn fed() -> Fed {
        Fed(HashMap::from([
            ("hs1.test", false),
            ("hs2.test", false),
            ("kasse1", true),
            ("kasse2", true),
        ]))
    }

    fn uid(s: &str) -> UserId {
        UserId::parse(s).unwrap()
    }

    async fn run(
        data: Data,
        policy: &PolicyConfig,
        inviter: &str,
        invitee: &str,
    ) -> Result<(), MatrixError> {
        let fed = fed();
        let ctx = InviteContext {
            federation: &fed,
            account_data: &data,
            policy,
            own_server: "hs1.test",
            enforce: true,
        };
        check_invite(
            &ctx,
            &Gate::enforcing(),
            &uid(inviter),
            &uid(invitee),
            InviteSource::Client,
        )
        .await
    }

    fn data(v: Value) -> Data {
        Data(Ok(v.as_object().unwrap().clone()))
    }

    #[tokio::test]
    async fn invite_blocked_when_default_block_and_no_exception() {
        let p = PolicyConfig::default();
        let d = data(json!({permission_config::TYPE_PRO: {"defaultSetting":"block all"}}));
        let err = run(d, &p, "@a:hs2.test", "@b:hs1.test").await.unwrap_err();
        assert_eq!(
            (err.rule, err.error.as_str()),
            (
                RULE_PERMISSION,
                "The invite was blocked by the invitees policy"
            )
        );
    }

    #[tokio::test]
    async fn invite_allowed_without_config_and_for_remote_invitees() {
        let p = PolicyConfig::default();
        assert!(
            run(data(json!({})), &p, "@a:hs2.test", "@b:hs1.test")
                .await
                .is_ok()
        );
        // Remote invitee: its own proxy evaluates its config.
        let d = Data(Err(LookupError::NoAdminToken));
        assert!(run(d, &p, "@a:hs1.test", "@b:hs2.test").await.is_ok());
    }

    #[tokio::test]
    async fn invitee_on_same_host_other_port_is_remote_and_not_looked_up() {
        let p = PolicyConfig::default();
        // The homeserver's admin API refuses users of other servers; asking it is a failure.
        let d = Data(Err(LookupError::Upstream {
            status: 400,
            body: r#"{"errcode":"M_UNKNOWN","error":"Can only look up local users"}"#.into(),
        }));
        assert!(run(d, &p, "@a:hs1.test", "@b:hs1.test:8449").await.is_ok());
    }

    #[tokio::test]
    async fn own_server_without_list_entry_means_exactly_this_server_name() {
        let p = PolicyConfig::default();
        let ctx = |fed, data| InviteContext {
            federation: fed,
            account_data: data,
            policy: &p,
            own_server: "hs1.test:8448",
            enforce: true,
        };
        let unlisted = Fed(HashMap::new());
        let data = data(json!({}));
        let local = uid("@a:hs1.test:8448");
        assert!(
            check_invite(
                &ctx(&unlisted, &data),
                &Gate::enforcing(),
                &local,
                &local,
                InviteSource::Client
            )
            .await
            .is_ok()
        );
        let other_port = uid("@b:hs1.test:8449");
        let err = check_invite(
            &ctx(&unlisted, &data),
            &Gate::enforcing(),
            &local,
            &other_port,
            InviteSource::Client,
        )
        .await
        .unwrap_err();
        assert_eq!(err.rule, RULE_FEDERATION);
    }

    #[tokio::test]
    async fn unknown_local_invitee_gets_the_operator_default() {
        let allow = PolicyConfig::default();
        assert!(
            run(
                Data(Err(LookupError::NotFound)),
                &allow,
                "@a:hs2.test",
                "@as_user:hs1.test"
            )
            .await
            .is_ok()
        );
        let block = PolicyConfig {
            default_permission: "block all".into(),
            ..PolicyConfig::default()
        };
        let err = run(
            Data(Err(LookupError::NotFound)),
            &block,
            "@a:hs2.test",
            "@as_user:hs1.test",
        )
        .await
        .unwrap_err();
        assert_eq!(err.rule, RULE_PERMISSION);
        // Anything else the admin API answers still fails closed.
        let err = run(
            Data(Err(LookupError::Upstream {
                status: 500,
                body: "{}".into(),
            })),
            &allow,
            "@a:hs2.test",
            "@b:hs1.test",
        )
        .await
        .unwrap_err();
        assert_eq!(err.status, http::StatusCode::BAD_GATEWAY);
    }

    #[tokio::test]
    async fn malformed_config_fails_closed_with_distinct_rule() {
        let p = PolicyConfig::default();
        let d = data(json!({permission_config::TYPE_PRO: {"defaultSetting":"Allow All"}}));
        assert_eq!(
            run(d, &p, "@a:hs2.test", "@b:hs1.test")
                .await
                .unwrap_err()
                .rule,
            RULE_PERMISSION_INVALID
        );
    }

    #[tokio::test]
    async fn epa_flavour_reads_epa_type_then_legacy() {
        let p = PolicyConfig {
            flavour: Flavour::Epa,
            ..PolicyConfig::default()
        };
        let d = data(
            json!({permission_config::TYPE_PRO: {"defaultSetting":"block all"},
                            permission_config::TYPE_LEGACY: {"defaultSetting":"block all","domainExceptions":{"hs2.test":{}}}}),
        );
        assert!(run(d, &p, "@a:hs2.test", "@b:hs1.test").await.is_ok());
    }

    #[tokio::test]
    async fn unfederated_and_insured_pairs_refused() {
        let p = PolicyConfig::default();
        let err = run(data(json!({})), &p, "@a:evil.test", "@b:hs1.test")
            .await
            .unwrap_err();
        assert_eq!(
            err.error,
            "evil.test kann nicht in der Föderation gefunden werden"
        );
        let err = run(data(json!({})), &p, "@a:kasse1", "@b:kasse2")
            .await
            .unwrap_err();
        assert_eq!(err.rule, RULE_INSURED);
    }

    #[tokio::test]
    async fn shadowed_rules_are_evaluated_and_the_next_rule_still_runs() {
        use crate::policy::shadow::tests::{Recorded, shadowing};
        let p = PolicyConfig::default();
        let fed = fed();
        let d = data(json!({permission_config::TYPE_PRO: {"defaultSetting":"block all"}}));
        let ctx = InviteContext {
            federation: &fed,
            account_data: &d,
            policy: &p,
            own_server: "hs1.test",
            enforce: true,
        };
        let shadow = shadowing(&["ePA-insured-to-insured"]);
        let recorded = Recorded::default();
        let gate = Gate::new(&shadow, &recorded);
        // An insured pair, shadowed: reported, and the invitee's config still decides.
        assert!(
            check_invite(
                &ctx,
                &gate,
                &uid("@a:kasse1"),
                &uid("@b:kasse2"),
                InviteSource::Client
            )
            .await
            .is_ok()
        );
        let err = check_invite(
            &ctx,
            &gate,
            &uid("@a:kasse1"),
            &uid("@b:hs1.test"),
            InviteSource::Client,
        )
        .await
        .unwrap_err();
        assert_eq!(err.rule, RULE_PERMISSION);
        assert_eq!(
            *recorded.0.lock().unwrap(),
            vec!["refuse ePA-insured-to-insured"]
        );
    }

    #[test]
    fn member_events_invite_whoever_the_state_key_names() {
        let invite = json!({"membership":"invite"});
        assert_eq!(
            member_invitee("@b:hs3.test", &invite)
                .unwrap()
                .unwrap()
                .as_str(),
            "@b:hs3.test"
        );
        assert_eq!(
            member_invitee("@b:hs3.test", &json!({"membership":"join"})),
            Ok(None)
        );
        assert_eq!(
            member_invitee("bob", &invite).unwrap_err().errcode,
            "M_INVALID_PARAM"
        );
    }

    #[test]
    fn federation_invite_bodies_parse_v1_and_v2() {
        let event = json!({"sender":"@a:hs2.test","state_key":"@b:hs1.test","type":"m.room.member","content":{"membership":"invite"}});
        let v1 = federation_invite(&event, false).unwrap();
        let v2 = federation_invite(&json!({"event": event, "room_version":"10"}), true).unwrap();
        assert_eq!(v1, v2);
        assert!(v1.membership_is_invite);
        assert_eq!(
            federation_invite(&json!({}), true).unwrap_err().rule,
            "body-parse"
        );
        assert_eq!(
            client_invitee(&json!({"id_server":"x"})).unwrap_err().rule,
            "invite-user-id-missing"
        );
    }
}
