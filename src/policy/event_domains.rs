//! A_25534-event-domain: every Matrix domain named in an event must be federated, on the way
//! in and on the way out.
//!
//! gematik, `MessengerService.adoc` ("Server-Server Prüfungen"): "Bei jedem Event muss der
//! Messenger-Proxy die Föderationszugehörigkeit der im Event enthaltenen Matrix-Domains
//! prüfen." The rule id is the federation-membership requirement as the reference cites it
//! (A_25534, the gemSpec text was not available), suffixed with the route it guards. It
//! protects the federation boundary and can never be shadowed.
//!
//! **Routes** ([`EventBody::of`]): the federation requests whose body carries events, both
//! inbound (remote server → homeserver) and outbound (homeserver → remote server):
//! `PUT /_matrix/federation/v1/send/{txnId}` (a transaction of PDUs and EDUs),
//! `send_join` v1/v2, `send_leave` v1/v2, `send_knock` v1, `invite` v1 (the event) and v2 (the
//! event and the stripped `invite_room_state`), `exchange_third_party_invite`.
//!
//! **Domains of a PDU**: `sender`, `room_id` (room versions ≤ 11 carry the creating server),
//! `origin` when present; for `m.room.member` also `state_key` (the member, e.g. an invite's
//! target), `content.join_authorised_via_users_server` and
//! `content.third_party_invite.signed.mxid`. A stripped state event of `invite_room_state`:
//! `sender`, and `state_key` of membership events.
//! **Domains of an EDU**, by type (the types Synapse handles): `m.typing` `user_id`, `room_id`;
//! `m.receipt` every room id and user id; `m.presence` every `push[].user_id`;
//! `m.device_list_update`, `m.signing_key_update` (and `org.matrix.signing_key_update`)
//! `user_id`; `m.direct_to_device` `sender` and every recipient user id. EDUs of other types
//! carry nothing Synapse acts on and pass unread.
//!
//! A domain is allowed when it is the own server name or listed in the federation list (with
//! refresh-on-miss). An event the proxy cannot read (not an object, a required field missing
//! or of the wrong type, a repeated field, a malformed id) is treated as offending: what cannot
//! be checked does not pass.
//!
//! **A transaction with an offending PDU or EDU** is answered by the proxy and never reaches
//! the other side: `200 {"pdus":{}}`. Why not drop only the offending parts: the sender's
//! X-Matrix signature covers the whole body, so an edited transaction fails authentication
//! at the receiver, which answers 401 — and a Synapse sender backs off and retries the same
//! PDUs for that destination indefinitely (its catch-up resends them), stalling all traffic
//! between the two servers. Why not refuse with 403: the same retry loop. So the proxy takes
//! the transaction off the sender's queue and drops all of it; nothing of it reaches the
//! homeserver (inbound) or leaves it (outbound). The clean PDUs of that transaction are not
//! lost for good: the receiver fetches missing events when a later event refers to them
//! (`get_missing_events`); its EDUs (typing, receipts, presence, to-device) are. A legitimate
//! Synapse never produces offending parts (it sends its own users' events and EDUs, and
//! remote joins it accepted), so this only costs something when a peer misbehaves.
//! A single event (`send_join`, `invite`, …) with an offending domain is refused with 403
//! `M_FORBIDDEN` "`<domain>` kann nicht in der Föderation gefunden werden".
//!
//! Only the fields above are parsed, borrowed from the body (`RawValue` for the rest); bodies
//! are read up to `federation.max_event_body_bytes`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::error::MatrixError;
use crate::federation::list::Membership;
use crate::matrix::ids::{UserId, same_server_name, validate_server_name};
use crate::policy::FederationList;

pub const RULE: &str = "A_25534-event-domain";

/// How a federation request body carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventBody {
    /// `PUT /_matrix/federation/v1/send/{txnId}`: `{"pdus":[…],"edus":[…]}`.
    Transaction,
    /// The body is one PDU.
    Event,
    /// `PUT /_matrix/federation/v2/invite/…`: `{"event":…,"invite_room_state":[…]}`.
    InviteV2,
}

impl EventBody {
    /// The event-carrying federation endpoints, by method and path. `path` may be a raw
    /// request path (outbound) or an endpoint template (inbound): both have one segment per
    /// parameter.
    pub fn of(method: &http::Method, path: &str) -> Option<EventBody> {
        if method != http::Method::PUT {
            return None;
        }
        let rest = path.strip_prefix("/_matrix/federation/")?;
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["v1", "send", txn] if !txn.is_empty() => Some(EventBody::Transaction),
            ["v1" | "v2", "send_join" | "send_leave", room, event]
            | ["v1", "send_knock" | "invite", room, event]
                if !room.is_empty() && !event.is_empty() =>
            {
                Some(EventBody::Event)
            }
            ["v2", "invite", room, event] if !room.is_empty() && !event.is_empty() => {
                Some(EventBody::InviteV2)
            }
            ["v1", "exchange_third_party_invite", room] if !room.is_empty() => {
                Some(EventBody::Event)
            }
            _ => None,
        }
    }
}

/// One domain that is not federated (or a part that could not be read), for the answer and
/// the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offence {
    /// The server name, or empty when the part could not be read.
    pub domain: String,
    /// Where it was found, e.g. `PDU sender`, `m.receipt user id`.
    pub field: &'static str,
}

/// What a checked body holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    pub pdus: usize,
    pub edus: usize,
    /// Empty when everything is federated.
    pub offences: Vec<Offence>,
    /// The `m.room.member` invites among a transaction's PDUs, `(sender, invitee)`: an
    /// invite reaches the invitee's server through `/send` as well as through `/invite`, so
    /// the invite rules run on these too (the caller's part: they need homeserver lookups).
    pub invites: Vec<(String, String)>,
}

/// What happens to a checked body (see the module documentation).
#[derive(Debug)]
pub enum Decision {
    /// Everything is federated: forward the body unchanged.
    Forward,
    /// A transaction naming a non-federated domain: answer [`HELD_BACK_ANSWER`], forward
    /// nothing.
    HoldBack,
    /// A single event naming a non-federated domain.
    Refuse(MatrixError),
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.offences.is_empty()
    }

    pub fn decide(&self, kind: EventBody) -> Decision {
        match self.offences.first() {
            None => Decision::Forward,
            Some(_) if kind == EventBody::Transaction => Decision::HoldBack,
            Some(first) if first.domain.is_empty() => Decision::Refuse(MatrixError::forbidden(
                format!("event refused: {} cannot be read", first.field),
                RULE,
            )),
            Some(first) => Decision::Refuse(MatrixError::forbidden(
                format!(
                    "{} kann nicht in der Föderation gefunden werden",
                    first.domain
                ),
                RULE,
            )),
        }
    }

    /// The one log line of a held-back transaction (the caller counts it).
    pub fn log_held_back(&self, listener: &'static str, method: &http::Method) {
        tracing::info!(
            listener,
            rule = RULE,
            method = %method,
            endpoint = "/_matrix/federation/v1/send/{txnId}",
            status = 200,
            pdus = self.pdus,
            edus = self.edus,
            offending = self.offences.len(),
            domains = %self.summary(),
            "federation transaction held back: it names non-federated domains"
        );
    }

    /// Distinct offending domains, for one log line (bounded).
    pub fn summary(&self) -> String {
        let mut seen: Vec<&str> = Vec::new();
        for o in &self.offences {
            let name = if o.domain.is_empty() {
                o.field
            } else {
                o.domain.as_str()
            };
            if !seen.contains(&name) && seen.len() < 8 {
                seen.push(name);
            }
        }
        seen.join(", ")
    }
}

/// The answer the proxy gives for a transaction it holds back (see the module documentation).
pub const HELD_BACK_ANSWER: &str = r#"{"pdus":{}}"#;

/// Check the events of `body` (a request to an [`EventBody`] endpoint). `Err` only when the
/// body is not the JSON the endpoint takes (400, as the receiver would answer).
pub async fn check<F: FederationList>(
    kind: EventBody,
    body: &[u8],
    own_server: &str,
    federation: &F,
) -> Result<Verdict, MatrixError> {
    let mut names = Names::default();
    let (pdus, edus) = collect(kind, body, &mut names)?;
    let mut verdict = Verdict {
        pdus,
        edus,
        offences: names.unreadable,
        invites: if kind == EventBody::Transaction {
            names.invites
        } else {
            Vec::new()
        },
    };
    for (domain, field) in names.distinct {
        if same_server_name(&domain, own_server) {
            continue;
        }
        if !matches!(
            federation.membership(&domain).await,
            Membership::Member { .. }
        ) {
            verdict.offences.push(Offence {
                domain: domain.into_owned(),
                field,
            });
        }
    }
    Ok(verdict)
}

/// Deserialize a JSON object into `T` (a derived struct would also take an array, by
/// position; the receiver takes only objects).
fn object<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    serde_json::from_str(text).ok()
}

/// Read every domain of the body into `names`; the number of PDUs and EDUs.
fn collect<'a>(
    kind: EventBody,
    body: &'a [u8],
    names: &mut Names<'a>,
) -> Result<(usize, usize), MatrixError> {
    let bad = || MatrixError::bad_json("body is not the JSON this endpoint takes", RULE);
    match kind {
        EventBody::Transaction => {
            let text = std::str::from_utf8(body).map_err(|_| bad())?;
            let txn: TransactionBody<'a> = object(text).ok_or_else(bad)?;
            for pdu in &txn.pdus {
                pdu_domains(pdu, names);
            }
            for edu in &txn.edus {
                edu_domains(edu, names);
            }
            Ok((txn.pdus.len(), txn.edus.len()))
        }
        EventBody::Event => {
            let event: &'a RawValue = serde_json::from_slice(body).map_err(|_| bad())?;
            pdu_domains(event, names);
            Ok((1, 0))
        }
        EventBody::InviteV2 => {
            let text = std::str::from_utf8(body).map_err(|_| bad())?;
            let invite: InviteV2Body<'a> = object(text).ok_or_else(bad)?;
            pdu_domains(invite.event, names);
            for stripped in &invite.invite_room_state {
                stripped_domains(stripped, names);
            }
            Ok((1, 0))
        }
    }
}

/// Distinct server names of one body, each with the first field it was found in.
#[derive(Default)]
struct Names<'a> {
    distinct: Vec<(Cow<'a, str>, &'static str)>,
    /// Server names already in `distinct` (ids of one body mostly share a server, so the
    /// last one is compared first).
    seen: HashSet<Cow<'a, str>>,
    unreadable: Vec<Offence>,
    /// `m.room.member` PDUs with membership `invite`: `(sender, invitee)`.
    invites: Vec<(String, String)>,
}

impl<'a> Names<'a> {
    fn server(&mut self, server: Cow<'a, str>, field: &'static str) {
        if self
            .distinct
            .last()
            .is_some_and(|(last, _)| *last == server)
        {
            return;
        }
        if self.seen.insert(server.clone()) {
            self.distinct.push((server, field));
        }
    }

    fn unreadable(&mut self, field: &'static str) {
        if self.unreadable.len() < 16 {
            self.unreadable.push(Offence {
                domain: String::new(),
                field,
            });
        }
    }

    /// A user id's server name.
    fn user(&mut self, id: Cow<'a, str>, field: &'static str) {
        if UserId::parse(&id).is_err() {
            return self.unreadable(field);
        }
        let server = match id {
            Cow::Borrowed(s) => s.split_once(':').map(|(_, server)| Cow::Borrowed(server)),
            Cow::Owned(s) => s
                .split_once(':')
                .map(|(_, server)| Cow::Owned(server.to_owned())),
        };
        match server {
            Some(server) => self.server(server, field),
            None => self.unreadable(field),
        }
    }

    /// A room id's server name (`!opaque:server`); room versions without one are skipped.
    fn room(&mut self, id: Cow<'a, str>, field: &'static str) {
        let Some(rest) = id.strip_prefix('!') else {
            return self.unreadable(field);
        };
        let Some((_, server)) = rest.split_once(':') else {
            return;
        };
        if validate_server_name(server).is_err() {
            return self.unreadable(field);
        }
        let server = match id {
            Cow::Borrowed(s) => Cow::Borrowed(&s[s.len() - server.len()..]),
            Cow::Owned(_) => Cow::Owned(server.to_owned()),
        };
        self.server(server, field);
    }
}

#[derive(Deserialize)]
struct TransactionBody<'a> {
    #[serde(borrow, default)]
    pdus: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    edus: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct InviteV2Body<'a> {
    #[serde(borrow)]
    event: &'a RawValue,
    #[serde(borrow, default)]
    invite_room_state: Vec<&'a RawValue>,
}

/// The fields of a PDU that name servers; everything else is skipped unread.
#[derive(Deserialize)]
struct Pdu<'a> {
    #[serde(borrow)]
    sender: Cow<'a, str>,
    #[serde(borrow)]
    room_id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    state_key: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    origin: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct MemberContent<'a> {
    #[serde(borrow, default)]
    membership: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    join_authorised_via_users_server: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    third_party_invite: Option<ThirdPartyInvite<'a>>,
}

#[derive(Deserialize)]
struct ThirdPartyInvite<'a> {
    #[serde(borrow, default)]
    signed: Option<Signed<'a>>,
}

#[derive(Deserialize)]
struct Signed<'a> {
    #[serde(borrow, default)]
    mxid: Option<Cow<'a, str>>,
}

const MEMBER: &str = "m.room.member";

fn pdu_domains<'a>(raw: &'a RawValue, names: &mut Names<'a>) {
    let Some(pdu) = object::<Pdu<'a>>(raw.get()) else {
        return names.unreadable("PDU");
    };
    names.user(pdu.sender.clone(), "PDU sender");
    names.room(pdu.room_id, "PDU room_id");
    if let Some(origin) = pdu.origin {
        if validate_server_name(&origin).is_err() {
            names.unreadable("PDU origin");
        } else {
            names.server(origin, "PDU origin");
        }
    }
    if pdu.kind != MEMBER {
        return;
    }
    let Some(member) = pdu.state_key else {
        return names.unreadable("m.room.member state_key");
    };
    let Some(content) = pdu.content else {
        return names.user(member, "m.room.member state_key");
    };
    let Some(content) = object::<MemberContent<'a>>(content.get()) else {
        names.user(member, "m.room.member state_key");
        return names.unreadable("m.room.member content");
    };
    if content.membership.as_deref() == Some("invite") {
        names
            .invites
            .push((pdu.sender.into_owned(), member.clone().into_owned()));
    }
    names.user(member, "m.room.member state_key");
    if let Some(user) = content.join_authorised_via_users_server {
        names.user(user, "join_authorised_via_users_server");
    }
    if let Some(mxid) = content
        .third_party_invite
        .and_then(|t| t.signed)
        .and_then(|s| s.mxid)
    {
        names.user(mxid, "third_party_invite mxid");
    }
}

/// A stripped state event of `invite_room_state`.
#[derive(Deserialize)]
struct Stripped<'a> {
    #[serde(borrow)]
    sender: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    state_key: Option<Cow<'a, str>>,
}

fn stripped_domains<'a>(raw: &'a RawValue, names: &mut Names<'a>) {
    let Some(event) = object::<Stripped<'a>>(raw.get()) else {
        return names.unreadable("invite_room_state event");
    };
    names.user(event.sender, "invite_room_state sender");
    if event.kind == MEMBER
        && let Some(member) = event.state_key
    {
        names.user(member, "invite_room_state member");
    }
}

#[derive(Deserialize)]
struct Edu<'a> {
    #[serde(borrow)]
    edu_type: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Typing<'a> {
    #[serde(borrow)]
    room_id: Cow<'a, str>,
    #[serde(borrow)]
    user_id: Cow<'a, str>,
}

/// room id → receipt type → user id → receipt.
type Receipts<'a> = HashMap<Cow<'a, str>, HashMap<Cow<'a, str>, HashMap<Cow<'a, str>, IgnoredAny>>>;

#[derive(Deserialize)]
struct Presence<'a> {
    #[serde(borrow)]
    push: Vec<PresenceUpdate<'a>>,
}

#[derive(Deserialize)]
struct PresenceUpdate<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
}

/// `m.device_list_update` and `m.signing_key_update`.
#[derive(Deserialize)]
struct UserUpdate<'a> {
    #[serde(borrow)]
    user_id: Cow<'a, str>,
}

#[derive(Deserialize)]
struct ToDevice<'a> {
    #[serde(borrow)]
    sender: Cow<'a, str>,
    #[serde(borrow)]
    messages: HashMap<Cow<'a, str>, IgnoredAny>,
}

fn edu_domains<'a>(raw: &'a RawValue, names: &mut Names<'a>) {
    let Some(edu) = object::<Edu<'a>>(raw.get()) else {
        return names.unreadable("EDU");
    };
    let content = edu.content.map_or("null", RawValue::get);
    let read = match edu.edu_type.as_ref() {
        "m.typing" => object::<Typing<'a>>(content).map(|t| {
            names.room(t.room_id, "m.typing room_id");
            names.user(t.user_id, "m.typing user_id");
        }),
        "m.receipt" => serde_json::from_str::<Receipts<'a>>(content)
            .ok()
            .map(|rooms| {
                for (room, by_type) in rooms {
                    names.room(room, "m.receipt room id");
                    for users in by_type.into_values() {
                        for user in users.into_keys() {
                            names.user(user, "m.receipt user id");
                        }
                    }
                }
            }),
        "m.presence" => object::<Presence<'a>>(content).map(|p| {
            for update in p.push {
                names.user(update.user_id, "m.presence user_id");
            }
        }),
        "m.device_list_update" => object::<UserUpdate<'a>>(content)
            .map(|u| names.user(u.user_id, "m.device_list_update user_id")),
        "m.signing_key_update" | "org.matrix.signing_key_update" => {
            object::<UserUpdate<'a>>(content)
                .map(|u| names.user(u.user_id, "m.signing_key_update user_id"))
        }
        "m.direct_to_device" => object::<ToDevice<'a>>(content).map(|d| {
            names.user(d.sender, "m.direct_to_device sender");
            for recipient in d.messages.into_keys() {
                names.user(recipient, "m.direct_to_device recipient");
            }
        }),
        _ => Some(()),
    };
    if read.is_none() {
        names.unreadable("EDU content");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::invite::tests::Fed;
    use serde_json::json;

    fn fed() -> Fed {
        Fed([("hs1.test", false), ("hs2.test", false)].into())
    }

    fn run(kind: EventBody, bytes: &[u8]) -> Result<Verdict, MatrixError> {
        let fed = fed();
        futures_util::FutureExt::now_or_never(check(kind, bytes, "hs1.test:8448", &fed))
            .expect("no I/O")
    }

    fn check_now(kind: EventBody, body: &serde_json::Value) -> Verdict {
        run(kind, body.to_string().as_bytes()).expect("readable body")
    }

    pub fn pdu(sender: &str) -> serde_json::Value {
        json!({"type":"m.room.message","room_id":"!r:hs1.test","sender":sender,
               "origin_server_ts":1,"content":{"body":"hi"},"depth":3,
               "prev_events":["$a"],"auth_events":["$b"],"hashes":{"sha256":"x"},
               "signatures":{"hs2.test":{"ed25519:a":"s"}}})
    }

    fn member(sender: &str, target: &str, membership: &str) -> serde_json::Value {
        json!({"type":"m.room.member","room_id":"!r:hs1.test","sender":sender,
               "state_key":target,"content":{"membership":membership}})
    }

    fn domains(v: &Verdict) -> Vec<(&str, &str)> {
        v.offences
            .iter()
            .map(|o| (o.domain.as_str(), o.field))
            .collect()
    }

    #[test]
    fn routes_are_recognised_by_method_and_path() {
        use http::Method;
        let cases = [
            (
                "/_matrix/federation/v1/send/{txnId}",
                Some(EventBody::Transaction),
            ),
            (
                "/_matrix/federation/v1/send/123",
                Some(EventBody::Transaction),
            ),
            (
                "/_matrix/federation/v2/send_join/%21r%3Aa/%24e",
                Some(EventBody::Event),
            ),
            (
                "/_matrix/federation/v1/send_join/{roomId}/{eventId}",
                Some(EventBody::Event),
            ),
            (
                "/_matrix/federation/v2/send_leave/{roomId}/{eventId}",
                Some(EventBody::Event),
            ),
            (
                "/_matrix/federation/v1/send_knock/{roomId}/{eventId}",
                Some(EventBody::Event),
            ),
            (
                "/_matrix/federation/v1/invite/{roomId}/{eventId}",
                Some(EventBody::Event),
            ),
            (
                "/_matrix/federation/v2/invite/{roomId}/{eventId}",
                Some(EventBody::InviteV2),
            ),
            (
                "/_matrix/federation/v1/exchange_third_party_invite/{roomId}",
                Some(EventBody::Event),
            ),
            ("/_matrix/federation/v1/send/", None),
            ("/_matrix/federation/v1/send/a/b", None),
            ("/_matrix/federation/v2/send_knock/r/e", None),
            ("/_matrix/federation/v1/make_join/r/u", None),
            ("/_matrix/client/v3/rooms/r/send/m.room.message/t", None),
        ];
        for (path, expected) in cases {
            assert_eq!(EventBody::of(&Method::PUT, path), expected, "{path}");
        }
        assert_eq!(
            EventBody::of(&Method::GET, "/_matrix/federation/v1/send/1"),
            None
        );
    }

    /// Server-server endpoints with a body that carries no events, and why. A new v1.11
    /// federation endpoint with a body must land here or in [`EventBody::of`].
    const NO_EVENTS: [(&str, &str); 6] = [
        (
            "/_matrix/federation/v1/3pid/onbind",
            "identity-server callback; third-party invites are refused (third-party-invite)",
        ),
        (
            "/_matrix/federation/v1/get_missing_events/{roomId}",
            "event ids only; the events come back in the answer",
        ),
        (
            "/_matrix/federation/v1/publicRooms",
            "refused before auth (A_26520/A_28590)",
        ),
        (
            "/_matrix/federation/v1/user/keys/claim",
            "asks for the receiver's own users' keys",
        ),
        (
            "/_matrix/federation/v1/user/keys/query",
            "asks for the receiver's own users' keys",
        ),
        (
            "/_matrix/key/v2/query",
            "server names whose keys to fetch; fetching goes through the outbound CONNECT check",
        ),
    ];

    #[test]
    fn every_federation_endpoint_with_a_body_is_checked_or_listed_as_carrying_no_events() {
        use crate::matrix::endpoints::Api;
        let mut unaccounted = Vec::new();
        for e in crate::matrix::endpoints::v1_11() {
            let with_body = e.method == http::Method::PUT || e.method == http::Method::POST;
            if e.api != Api::ServerServer || !with_body {
                continue;
            }
            let carries = EventBody::of(&e.method, &e.template).is_some();
            let listed = NO_EVENTS.iter().any(|(t, _)| *t == e.template);
            if carries == listed {
                unaccounted.push(format!("{} {}", e.method, e.template));
            }
        }
        assert!(unaccounted.is_empty(), "{unaccounted:?}");
    }

    #[test]
    fn a_transaction_of_federated_events_is_clean() {
        let txn = json!({"origin":"hs2.test","pdus":[pdu("@a:hs2.test"), member("@b:hs2.test","@b:hs2.test","join")],
            "edus":[{"edu_type":"m.typing","content":{"room_id":"!r:hs1.test","user_id":"@a:hs2.test","typing":true}}]});
        let v = check_now(EventBody::Transaction, &txn);
        assert!(v.is_clean(), "{v:?}");
        assert_eq!((v.pdus, v.edus), (2, 1));
    }

    #[test]
    fn every_domain_field_of_a_pdu_is_checked() {
        let cases = [
            (pdu("@evil:evil.test"), "PDU sender"),
            (
                json!({"type":"m.room.message","room_id":"!r:evil.test","sender":"@a:hs2.test"}),
                "PDU room_id",
            ),
            (
                json!({"type":"m.room.message","room_id":"!r:hs1.test","sender":"@a:hs2.test","origin":"evil.test"}),
                "PDU origin",
            ),
            (
                member("@a:hs2.test", "@x:evil.test", "invite"),
                "m.room.member state_key",
            ),
            (
                json!({"type":"m.room.member","room_id":"!r:hs1.test","sender":"@a:hs2.test","state_key":"@a:hs2.test",
                    "content":{"membership":"join","join_authorised_via_users_server":"@x:evil.test"}}),
                "join_authorised_via_users_server",
            ),
            (
                json!({"type":"m.room.member","room_id":"!r:hs1.test","sender":"@a:hs2.test","state_key":"@a:hs2.test",
                    "content":{"membership":"invite","third_party_invite":{"signed":{"mxid":"@x:evil.test"}}}}),
                "third_party_invite mxid",
            ),
        ];
        for (event, field) in cases {
            let v = check_now(
                EventBody::Transaction,
                &json!({"pdus":[pdu("@a:hs2.test"), event.clone()]}),
            );
            assert_eq!(domains(&v), [("evil.test", field)], "{event}");
            let v = check_now(EventBody::Transaction, &json!({"pdus": [event.clone()]}));
            assert!(matches!(
                v.decide(EventBody::Transaction),
                Decision::HoldBack
            ));
            let v = check_now(EventBody::Event, &event);
            let Decision::Refuse(refusal) = v.decide(EventBody::Event) else {
                panic!("not refused: {v:?}");
            };
            assert_eq!(
                refusal.error,
                "evil.test kann nicht in der Föderation gefunden werden"
            );
        }
    }

    #[test]
    fn every_user_of_an_edu_is_checked() {
        let cases = [
            (
                json!({"edu_type":"m.typing","content":{"room_id":"!r:hs1.test","user_id":"@x:evil.test","typing":true}}),
                "m.typing user_id",
            ),
            (
                json!({"edu_type":"m.receipt","content":{"!r:hs1.test":{"m.read":{"@a:hs2.test":{"event_ids":["$e"]},"@x:evil.test":{"event_ids":["$e"]}}}}}),
                "m.receipt user id",
            ),
            (
                json!({"edu_type":"m.presence","content":{"push":[{"user_id":"@a:hs2.test","presence":"online"},{"user_id":"@x:evil.test","presence":"online"}]}}),
                "m.presence user_id",
            ),
            (
                json!({"edu_type":"m.device_list_update","content":{"user_id":"@x:evil.test","device_id":"D","stream_id":1}}),
                "m.device_list_update user_id",
            ),
            (
                json!({"edu_type":"m.signing_key_update","content":{"user_id":"@x:evil.test"}}),
                "m.signing_key_update user_id",
            ),
            (
                json!({"edu_type":"m.direct_to_device","content":{"sender":"@x:evil.test","type":"m.room_key","message_id":"m","messages":{}}}),
                "m.direct_to_device sender",
            ),
            (
                json!({"edu_type":"m.direct_to_device","content":{"sender":"@a:hs2.test","type":"m.room_key","message_id":"m","messages":{"@x:evil.test":{"D":{}}}}}),
                "m.direct_to_device recipient",
            ),
        ];
        for (edu, field) in cases {
            let v = check_now(
                EventBody::Transaction,
                &json!({"pdus":[],"edus":[edu.clone()]}),
            );
            assert_eq!(domains(&v), [("evil.test", field)], "{edu}");
        }
        // Types Synapse does not handle pass unread.
        let v = check_now(
            EventBody::Transaction,
            &json!({"pdus":[],"edus":[{"edu_type":"org.example.custom","content":{"user_id":"@x:evil.test"}}]}),
        );
        assert!(v.is_clean());
    }

    #[test]
    fn what_cannot_be_read_does_not_pass() {
        for part in [
            json!({"pdus":[{"type":"m.room.message","room_id":"!r:hs1.test"}]}),
            json!({"pdus":[{"type":"m.room.message","room_id":"!r:hs1.test","sender":5}]}),
            json!({"pdus":[{"type":"m.room.message","room_id":"!r:hs1.test","sender":"not-a-user"}]}),
            json!({"pdus":[{"type":"m.room.member","room_id":"!r:hs1.test","sender":"@a:hs2.test"}]}),
            json!({"pdus":[{"type":"m.room.member","room_id":"!r:hs1.test","sender":"@a:hs2.test","state_key":"@a:hs2.test","content":{"join_authorised_via_users_server":1}}]}),
            json!({"pdus":["x"]}),
            json!({"pdus":[["@a:hs2.test","!r:hs1.test","m.room.message"]]}),
            json!({"pdus":[],"edus":[{"edu_type":"m.typing","content":{"user_id":["@a:hs2.test"]}}]}),
            json!({"pdus":[],"edus":[{"content":{}}]}),
        ] {
            let v = check_now(EventBody::Transaction, &part);
            assert!(!v.is_clean(), "{part}");
        }
        // A repeated field (Synapse's JSON reader keeps the last) is unreadable here.
        let repeated = br#"{"pdus":[{"type":"m.room.message","room_id":"!r:hs1.test","sender":"@a:hs2.test","sender":"@x:evil.test"}]}"#;
        assert!(!run(EventBody::Transaction, repeated).unwrap().is_clean());
        for body in [&b"[]"[..], b"{", b"{\"pdus\":{}}"] {
            assert_eq!(run(EventBody::Transaction, body).unwrap_err().status, 400);
        }
    }

    #[test]
    fn the_own_server_and_escaped_ids_are_handled() {
        // Our own server name (with its port) needs no list entry; escapes force owned
        // strings.
        let v = check_now(
            EventBody::Transaction,
            &json!({"pdus":[member("@a:hs2.test", "@bob:hs1.test:8448", "invite")],
                    "edus":[{"edu_type":"m.direct_to_device","content":{"sender":"@a:hs2.test","messages":{"@b\u{0}ob:hs1.test:8448":{}}}}]}),
        );
        assert!(v.is_clean(), "{v:?}");
        let escaped = br#"{"pdus":[{"type":"m.room.message","room_id":"!r:hs1.test","sender":"@a:evil\u002etest"}]}"#;
        let v = run(EventBody::Transaction, escaped).unwrap();
        assert_eq!(domains(&v), [("evil.test", "PDU sender")]);
    }

    #[test]
    fn a_transaction_lists_its_member_invites_for_the_invite_rules() {
        let txn = json!({"pdus":[
            member("@a:hs2.test", "@bob:hs1.test:8448", "invite"),
            member("@a:hs2.test", "@c:hs2.test", "join"),
            pdu("@a:hs2.test"),
            member("@a:hs2.test", "@c:hs2.test", "invite"),
        ]});
        let verdict = check_now(EventBody::Transaction, &txn);
        assert!(verdict.is_clean());
        assert_eq!(
            verdict.invites,
            [
                ("@a:hs2.test".to_owned(), "@bob:hs1.test:8448".to_owned()),
                ("@a:hs2.test".to_owned(), "@c:hs2.test".to_owned()),
            ]
        );
        // A single event goes through the /invite rules of its own route.
        let single = check_now(
            EventBody::Event,
            &member("@a:hs2.test", "@bob:hs1.test:8448", "invite"),
        );
        assert!(single.invites.is_empty());
    }

    #[test]
    fn invite_v2_checks_the_event_and_the_stripped_state() {
        let ok = json!({"event": member("@a:hs2.test", "@b:hs1.test", "invite"), "room_version":"10",
            "invite_room_state":[{"type":"m.room.create","sender":"@a:hs2.test","state_key":"","content":{}}]});
        assert!(check_now(EventBody::InviteV2, &ok).is_clean());
        let bad = json!({"event": member("@a:hs2.test", "@b:hs1.test", "invite"),
            "invite_room_state":[{"type":"m.room.create","sender":"@c:evil.test","state_key":"","content":{}}]});
        assert_eq!(
            domains(&check_now(EventBody::InviteV2, &bad)),
            [("evil.test", "invite_room_state sender")]
        );
    }
}
