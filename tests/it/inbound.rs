//! The inbound listener over real sockets, in front of a small fake homeserver.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use timproxy::config::Config;
use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource};
use timproxy::inbound::forward::{Body, full};
use timproxy::inbound::{self, InboundState, ObservedRequest, RequestObserver};
use timproxy::matrix::x_matrix::XMatrix;
use timproxy::metrics::Metrics;
use timproxy::shutdown;
use tokio::net::TcpListener;

pub(crate) const WAIT: Duration = Duration::from_secs(30);
const ADMIN_TOKEN: &str = "admin-secret";
const BIG: u64 = 64 * 1024 * 1024;

/// Counters of the fake homeserver.
#[derive(Default)]
pub(crate) struct Upstream {
    pub(crate) requests: AtomicU64,
    pub(crate) whoami: AtomicU64,
    pub(crate) uploaded: AtomicU64,
}

fn json_response(status: StatusCode, value: Value) -> Response<Body> {
    let mut r = Response::new(full(value.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        "application/json".parse().unwrap(),
    );
    r
}

fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap()
}

fn chunks(total: u64) -> Body {
    let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
    let stream = futures_util::stream::iter((0..total / chunk.len() as u64).map(move |_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(chunk.clone()))
    }));
    BodyExt::boxed_unsync(StreamBody::new(stream))
}

async fn fake_homeserver(req: Request<Incoming>, up: Arc<Upstream>) -> Response<Body> {
    up.requests.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_owned();
    // The same fake plays the registration service's well-known support endpoint.
    if path == "/backend/well-known-support/hs1.test" {
        return Response::new(full(SUPPORT_DOC));
    }
    if path.starts_with("/backend/well-known-support/") {
        let mut r = Response::new(full(""));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Synapse serves whoami under r0 too; the proxy itself asks under v3.
    if path == "/_matrix/client/v3/account/whoami" || path == "/_matrix/client/r0/account/whoami" {
        up.whoami.fetch_add(1, Ordering::SeqCst);
        return match auth.as_str() {
            "Bearer tok-alice" => {
                json_response(StatusCode::OK, json!({"user_id":"@alice:hs1.test"}))
            }
            "Bearer tok-remote" => {
                json_response(StatusCode::OK, json!({"user_id":"@mallory:evil.test"}))
            }
            "Bearer tok-insured" => {
                json_response(StatusCode::OK, json!({"user_id":"@ina:kasse1.test"}))
            }
            _ => json_response(
                StatusCode::UNAUTHORIZED,
                json!({"errcode":"M_UNKNOWN_TOKEN","error":"x"}),
            ),
        };
    }
    if path.starts_with("/_synapse/admin/") {
        if auth != format!("Bearer {ADMIN_TOKEN}") {
            return json_response(StatusCode::FORBIDDEN, json!({"errcode":"M_FORBIDDEN"}));
        }
        if path == "/_synapse/admin/v1/users/%40bob%3Ahs1.test/accountdata" {
            return json_response(
                StatusCode::OK,
                json!({"account_data":{"global":{
                "de.gematik.tim.account.permissionconfig.pro.v1":{"defaultSetting":"block all"}},"rooms":{}}}),
            );
        }
        if path == "/_synapse/admin/v1/users/%40dave%3Ahs1.test/accountdata" {
            return json_response(
                StatusCode::OK,
                json!({"account_data":{"global":{
                "de.gematik.tim.account.permissionconfig.pro.v1":{"defaultSetting":"allow all","groupExceptions":["isInsuredPerson"]}}}}),
            );
        }
        // Synapse's answers for users it cannot or does not know.
        if path.ends_with("/accountdata") && !path.ends_with("%3Ahs1.test/accountdata") {
            return json_response(
                StatusCode::BAD_REQUEST,
                json!({"errcode":"M_UNKNOWN","error":"Can only look up local users"}),
            );
        }
        if path == "/_synapse/admin/v1/users/%40ghost%3Ahs1.test/accountdata" {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"errcode":"M_NOT_FOUND","error":"User not found"}),
            );
        }
        if path.ends_with("/accountdata") {
            return json_response(
                StatusCode::OK,
                json!({"account_data":{"global":{},"rooms":{}}}),
            );
        }
        if path.ends_with("/context/%24elsewhere") {
            return json_response(
                StatusCode::NOT_FOUND,
                json!({"errcode":"M_UNKNOWN","error":"No row found (events)"}),
            );
        }
        if path.ends_with("/context/%24broken") {
            return json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"errcode":"M_UNKNOWN","error":"Internal server error"}),
            );
        }
        if path.ends_with("/context/%24old") {
            return json_response(
                StatusCode::OK,
                json!({"event":{"origin_server_ts": now_ms() - 25 * 3600 * 1000}}),
            );
        }
        if path.contains("/context/") {
            return json_response(
                StatusCode::OK,
                json!({"event":{"origin_server_ts": now_ms()}}),
            );
        }
    }
    if path == "/_matrix/client/versions" {
        return json_response(
            StatusCode::OK,
            json!({"versions":["v1.12","v1.11","r0.6.1","v1.2"],"unstable_features":{"x":true}}),
        );
    }
    if path == "/_matrix/media/v3/upload" {
        let mut body = req.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                n += data.len() as u64;
            }
        }
        up.uploaded.store(n, Ordering::SeqCst);
        return json_response(
            StatusCode::OK,
            json!({"content_uri":"mxc://hs1.test/x","received":n,"target":target,"method":"POST"}),
        );
    }
    if path == "/_matrix/client/v1/media/download/hs1.test/big" {
        let mut r = Response::new(chunks(BIG));
        r.headers_mut().insert("content-length", BIG.into());
        return r;
    }
    if path == "/_matrix/client/v3/rooms/%21missing%3Ahs1.test/members" {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"errcode":"M_NOT_FOUND","error":"upstream says no"}),
        );
    }
    let headers: HashMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let method = req.method().to_string();
    let body = req.into_body().collect().await.unwrap().to_bytes();
    json_response(
        StatusCode::OK,
        json!({"echo":true,"method":method,"target":target,"headers":headers,
               "body":String::from_utf8_lossy(&body)}),
    )
}

async fn start_upstream(up: Arc<Upstream>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let up = up.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let up = up.clone();
                    async move { Ok::<_, Infallible>(fake_homeserver(req, up).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[derive(Default)]
struct Recorder(Mutex<Vec<ObservedRequest>>);
impl RequestObserver for Recorder {
    fn observe(&self, obs: &ObservedRequest) {
        self.0.lock().unwrap().push(obs.clone());
    }
}

pub(crate) struct Harness {
    pub(crate) addr: SocketAddr,
    pub(crate) up: Arc<Upstream>,
    pub(crate) metrics: Arc<Metrics>,
    observed: Arc<Recorder>,
    pub(crate) federation: FederationHandle,
    client: Client<HttpConnector, Body>,
    trigger: shutdown::ShutdownTrigger,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

fn entry(domain: &str, insurance: bool) -> DomainEntry {
    DomainEntry {
        domain: domain.into(),
        is_insurance: insurance,
        telematik_id: None,
        ik: vec![],
    }
}

pub(crate) async fn start_with(tweak: impl FnOnce(&mut Config)) -> Harness {
    start_observed(tweak, None).await
}

/// [`start_with`], with `observer` (instead of the recorder) receiving finished requests.
pub(crate) async fn start_observed(
    tweak: impl FnOnce(&mut Config),
    observer: Option<Arc<dyn RequestObserver>>,
) -> Harness {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let up = Arc::new(Upstream::default());
    let upstream = start_upstream(up.clone()).await;
    let mut config = Config::default();
    config.homeserver.url = format!("http://{upstream}").parse().unwrap();
    config.homeserver.server_name = "hs1.test".into();
    config.homeserver.admin_token = Some(ADMIN_TOKEN.into());
    config.homeserver.request_timeout = Duration::from_secs(20);
    tweak(&mut config);
    let list = FederationList::new(
        1,
        time::OffsetDateTime::now_utc(),
        false,
        ListSource::File,
        vec![
            entry("hs1.test", false),
            entry("hs2.test", false),
            entry("kasse1.test", true),
            entry("kasse2.test", true),
        ],
    );
    let federation = FederationHandle::with_list(Duration::from_secs(3600), list);
    let metrics = Metrics::new();
    let state = InboundState::new(&config, federation.clone(), metrics.clone()).unwrap();
    let observed = Arc::new(Recorder::default());
    state.set_observer(observer.unwrap_or_else(|| observed.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = shutdown::channel();
    let server = tokio::spawn(inbound::serve(listener, Arc::new(state), signal));
    let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    Harness {
        addr,
        up,
        metrics,
        observed,
        federation,
        client,
        trigger,
        server,
    }
}

pub(crate) async fn start() -> Harness {
    start_with(|_| {}).await
}

impl Harness {
    pub(crate) async fn send_body(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Response<Incoming> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, target));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        tokio::time::timeout(WAIT, self.client.request(req.body(body).unwrap()))
            .await
            .expect("request timed out")
            .unwrap()
    }

    pub(crate) async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body
            .map(|b| full(b.to_string()))
            .unwrap_or_else(|| full(Bytes::new()));
        let response = self.send_body(method, target, headers, body).await;
        let status = response.status();
        let bytes = tokio::time::timeout(WAIT, response.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub(crate) async fn alice(
        &self,
        method: Method,
        target: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        self.send(
            method,
            target,
            &[("authorization", "Bearer tok-alice")],
            Some(body),
        )
        .await
    }

    pub(crate) async fn federation(
        &self,
        method: Method,
        target: &str,
        origin: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let x = XMatrix {
            origin: origin.into(),
            destination: Some("hs1.test".into()),
            key: "ed25519:a".into(),
            sig: "c2ln".into(),
        };
        self.send(method, target, &[("authorization", &x.render())], body)
            .await
    }
}

pub(crate) fn echoed_body(v: &Value) -> Value {
    assert_eq!(v["echo"], true, "not forwarded: {v}");
    serde_json::from_str(v["body"].as_str().unwrap()).unwrap()
}

pub(crate) fn assert_rejected(got: &(StatusCode, Value), status: u16, errcode: &str) {
    assert_eq!(got.0.as_u16(), status, "{}", got.1);
    assert_eq!(got.1["errcode"], errcode, "{}", got.1);
}

pub(crate) fn sample(name: &str) -> &'static str {
    match name {
        "roomId" => "%21room%3Ahs1.test",
        "userId" => "%40alice%3Ahs1.test",
        "serverName" => "hs1.test",
        "eventId" => "%24new",
        "eventType" => "m.room.message",
        "roomAlias" | "roomIdOrAlias" => "%23alias%3Ahs1.test",
        _ => "sample",
    }
}

fn fill(template: &str) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => sample(name).to_owned(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Federation routes that only serve third-party invites (refused on every route).
const THIRD_PARTY_ROUTES: [&str; 2] = [
    "/_matrix/federation/v1/exchange_third_party_invite/{roomId}",
    "/_matrix/federation/v1/3pid/onbind",
];

#[tokio::test]
async fn every_v1_11_endpoint_is_forwarded_except_tim_blocks() {
    let h = start_with(registration_service_is_upstream).await;
    let event = json!({"sender":"@x:hs2.test","room_id":"!room:hs1.test","state_key":"@carol:hs1.test","type":"m.room.member","content":{"membership":"invite"}});
    let body = json!({"user_id":"@carol:hs1.test","new_version":"10","room_version":"10","sender":"@x:hs2.test",
        "room_id":"!room:hs1.test","type":"m.room.member",
        "state_key":"@carol:hs1.test","content":{"membership":"invite"},"event":event});
    let endpoints = timproxy::matrix::endpoints::v1_11();
    assert_eq!(endpoints.len(), 191);
    let (mut forwarded, mut blocked) = (0, 0);
    for e in &endpoints {
        let target = fill(&e.template);
        let is_fed = e.template.starts_with("/_matrix/federation/")
            || e.template.starts_with("/_matrix/key/");
        let with_body = e.method == Method::POST || e.method == Method::PUT;
        let got = if is_fed {
            h.federation(
                e.method.clone(),
                &target,
                "hs2.test",
                with_body.then(|| body.clone()),
            )
            .await
        } else {
            h.send(
                e.method.clone(),
                &target,
                &[("authorization", "Bearer tok-alice")],
                with_body.then(|| body.clone()),
            )
            .await
        };
        if let Some(block) = timproxy::policy::blocked_endpoint(&e.template) {
            assert_eq!(got.0, block.status, "{} {}", e.method, e.template);
            blocked += 1;
            continue;
        }
        if THIRD_PARTY_ROUTES.contains(&e.template.as_str()) {
            assert_rejected(&got, 403, "M_FORBIDDEN");
            blocked += 1;
            continue;
        }
        assert_eq!(
            got.0,
            StatusCode::OK,
            "{} {}: {}",
            e.method,
            e.template,
            got.1
        );
        if e.template == "/.well-known/matrix/server" {
            assert_eq!(got.1, json!({"m.server":"hs1.test:443"}));
        } else if e.template == "/.well-known/matrix/support" {
            // Served from the registration service (A_26265), not the homeserver.
            assert_eq!(got.1, serde_json::from_str::<Value>(SUPPORT_DOC).unwrap());
        } else if e.template == "/_matrix/client/v3/account/whoami" {
            assert_eq!(got.1["user_id"], "@alice:hs1.test");
        } else if e.template != "/_matrix/client/versions" {
            assert_eq!(got.1["target"], target, "{} {}", e.method, e.template);
            assert_eq!(got.1["method"], e.method.as_str());
        }
        forwarded += 1;
    }
    // media v3 config, two preview_url, get_token, federation publicRooms GET + POST, and the
    // two federation routes that only serve third-party invites.
    assert_eq!(blocked, 8);
    assert_eq!(forwarded, 191 - 8);
}

#[tokio::test]
async fn legacy_endpoints_are_forwarded() {
    let h = start().await;
    let legacy =
        timproxy::matrix::endpoints::parse_legacy(timproxy::matrix::endpoints::LEGACY_TSV).unwrap();
    assert!(!legacy.is_empty());
    for e in &legacy {
        let target = fill(&e.template);
        // Key endpoints are open: no X-Matrix needed, as for /key/v2/server.
        let headers: &[(&str, &str)] = if e.template.starts_with("/_matrix/key/") {
            &[]
        } else {
            &[("authorization", "Bearer tok-alice")]
        };
        let body = (e.method == Method::PUT || e.method == Method::POST)
            .then(|| json!({"actions":["notify"]}));
        let got = h.send(e.method.clone(), &target, headers, body).await;
        assert_eq!(got.0, 200, "{} {}: {}", e.method, e.template, got.1);
        assert_eq!(got.1["target"], target, "{} {}", e.method, e.template);
    }
}

/// The answer for `target`, reduced to what a rule decides: the status and, for a rejection,
/// the errcode; for a forward, the path the homeserver saw.
async fn decision(
    h: &Harness,
    method: &Method,
    target: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let got = h
        .send(
            method.clone(),
            target,
            &[("authorization", "Bearer tok-alice")],
            body.cloned(),
        )
        .await;
    // The fake homeserver never answers with an errcode on these paths.
    let detail = if got.1["errcode"].is_string() {
        json!({"errcode": got.1["errcode"], "error": got.1["error"]})
    } else {
        json!({"forwarded": got.1["target"]})
    };
    (got.0.as_u16(), detail)
}

#[tokio::test]
async fn alias_spellings_get_exactly_the_rules_of_their_canonical_endpoint() {
    let h = start().await;
    let aliases =
        timproxy::matrix::endpoints::parse_aliases(timproxy::matrix::endpoints::ALIASES_TSV)
            .unwrap();
    let table = timproxy::matrix::endpoints::EndpointTable::served(&[]).unwrap();
    // One body every rule accepts, one that several rules refuse.
    let benign = json!({"user_id":"@carol:hs1.test","room_version":"10","new_version":"10",
        "join_rule":"invite","body":"x","presence":"online"});
    let refused = json!({"user_id":"@bob:hs1.test","room_version":"1","new_version":"1",
        "join_rule":"public","invite":["@a:hs1.test","@b:hs1.test"],"presence":"online",
        "status_msg":"x".repeat(300),"m.relates_to":{"rel_type":"m.thread","event_id":"$e"}});
    let mut compared = 0;
    for e in table.endpoints() {
        for alias in &aliases {
            let Some(rest) = e.template.strip_prefix(alias.canonical.as_str()) else {
                continue;
            };
            let canonical = fill(&e.template);
            let spelled = fill(&format!("{}{rest}", alias.alias));
            let bodies: Vec<Option<&Value>> = if e.method == Method::GET {
                vec![None]
            } else {
                vec![Some(&benign), Some(&refused)]
            };
            for body in bodies {
                let (status, detail) = decision(&h, &e.method, &canonical, body).await;
                let (alias_status, alias_detail) = decision(&h, &e.method, &spelled, body).await;
                assert_eq!(
                    alias_status, status,
                    "{} {spelled} vs {canonical}",
                    e.method
                );
                match detail.get("forwarded") {
                    Some(Value::Null) => assert!(alias_detail.get("forwarded").is_some()),
                    Some(_) => assert_eq!(alias_detail, json!({"forwarded": spelled})),
                    None => assert_eq!(alias_detail, detail, "{} {spelled}", e.method),
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 150, "{compared}");
    // And by hand, rules that certainly fire.
    let room = "/_matrix/client/r0/rooms/%21r%3Ahs1.test";
    assert_rejected(
        &h.alice(
            Method::PUT,
            &format!("{room}/state/m.room.join_rules"),
            json!({"join_rule":"public"}),
        )
        .await,
        400,
        "M_INVALID_ROOM_STATE",
    );
    assert_rejected(
        &h.alice(Method::PUT, &format!("{room}/redact/%24old/t1"), json!({}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert_rejected(
        &h.send(Method::GET, "/_matrix/media/r0/config", &[], None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_rejected(
        &h.send(
            Method::GET,
            "/_matrix/media/r0/download/unlisted.test/m",
            &[],
            None,
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let got = h
        .alice(Method::GET, "/_matrix/client/r0/events?from=s1", json!({}))
        .await;
    assert_eq!(got.1["target"], "/_matrix/client/r0/events?from=s1");
}

#[tokio::test]
async fn send_without_transaction_id_gets_the_send_rules() {
    let h = start().await;
    for send in [
        "/_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message",
        "/_matrix/client/r0/rooms/%21r%3Ahs1.test/send/m.room.message",
    ] {
        let got = h.alice(Method::POST, send, json!({"body":"x"})).await;
        assert_eq!(got.1["target"], send, "{}", got.1);
        let thread = json!({"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$e"}});
        assert_rejected(
            &h.alice(Method::POST, send, thread).await,
            400,
            "M_FORBIDDEN",
        );
    }
    let react = "/_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.reaction";
    let two = json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍👍"}});
    assert_rejected(&h.alice(Method::POST, react, two).await, 400, "M_BAD_JSON");
}

#[tokio::test]
async fn non_v1_11_paths_are_unrecognized_and_never_forwarded() {
    let h = start().await;
    for target in [
        "/_matrix/client/v3/asdf",
        "/_synapse/admin/v1/users/%40alice%3Ahs1.test",
        "/_synapse/client/oidc/callback",
        "/metrics",
        "/_matrix/client/r1/sync",
        "/_matrix/client/unstable/sync",
        "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device",
        "/_matrix/client/v3/sync/",
        "/_matrix/client//v3/sync",
        "/_matrix/client/v3/rooms//members",
        "/_matrix/client/v3/pushrules",
    ] {
        let got = h.send(Method::GET, target, &[], None).await;
        assert_rejected(&got, 404, "M_UNRECOGNIZED");
    }
    assert_eq!(h.up.requests.load(Ordering::SeqCst), 0);
    let text = h.metrics.encode();
    assert!(text.contains(r#"rule="unknown-endpoint""#), "{text}");
}

#[tokio::test]
async fn known_path_with_wrong_method_is_405() {
    let h = start().await;
    let got = h
        .send(Method::DELETE, "/_matrix/client/v3/createRoom", &[], None)
        .await;
    assert_rejected(&got, 405, "M_UNRECOGNIZED");
    assert_eq!(
        got.1["error"],
        "This endpoint is implemented, but the method is not supported."
    );
}

#[tokio::test]
async fn extra_endpoints_and_exposed_synapse_admin_are_forwarded() {
    let h = start_with(|c| {
        c.inbound.extra_endpoints = vec!["GET /_synapse/client/oidc/callback".into()];
        c.inbound.expose_synapse_admin = true;
    })
    .await;
    assert_eq!(
        h.send(
            Method::GET,
            "/_synapse/client/oidc/callback?code=1",
            &[],
            None
        )
        .await
        .0,
        200
    );
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let got = h
        .send(
            Method::GET,
            "/_synapse/admin/v1/server_version",
            &[("authorization", &admin)],
            None,
        )
        .await;
    assert_eq!(got.1["target"], "/_synapse/admin/v1/server_version");
    assert_rejected(
        &h.send(Method::GET, "/metrics", &[], None).await,
        404,
        "M_UNRECOGNIZED",
    );
}

#[tokio::test]
async fn tim_blocked_endpoints_answer_with_rule_errors_before_auth() {
    let h = start().await;
    assert_rejected(
        &h.send(Method::GET, "/_matrix/media/v3/config", &[], None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_rejected(
        &h.send(
            Method::GET,
            "/_matrix/media/v3/preview_url?url=x",
            &[],
            None,
        )
        .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_rejected(
        &h.send(
            Method::GET,
            "/_matrix/client/v1/media/preview_url",
            &[],
            None,
        )
        .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_rejected(
        &h.send(
            Method::POST,
            "/_matrix/client/v1/login/get_token",
            &[],
            Some(json!({})),
        )
        .await,
        404,
        "M_UNRECOGNIZED",
    );
    assert_rejected(
        &h.send(Method::GET, "/_matrix/client/v1/login/get_token", &[], None)
            .await,
        404,
        "M_UNRECOGNIZED",
    );
    for method in [Method::GET, Method::POST] {
        let got = h
            .send(
                method,
                "/_matrix/federation/v1/publicRooms",
                &[],
                Some(json!({})),
            )
            .await;
        assert_rejected(&got, 403, "M_FORBIDDEN");
        assert_eq!(got.1["error"], "A_26520, A_28590");
    }
    assert_eq!(h.up.requests.load(Ordering::SeqCst), 0);
    assert!(
        h.metrics
            .encode()
            .contains(r#"rule="A_26520/A_28590",mode="enforce"} 2"#)
    );
}

#[tokio::test]
async fn client_public_rooms_is_forwarded() {
    let h = start().await;
    assert_eq!(
        h.alice(Method::POST, "/_matrix/client/v3/publicRooms", json!({}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn request_target_is_forwarded_byte_for_byte() {
    let h = start().await;
    let target =
        "/_matrix/client/v3/rooms/%21room%3Ahs1.test/messages?from=a%2Fb&dir=b&filter=%7B%7D";
    let got = h
        .send(Method::GET, target, &[("authorization", "Bearer t")], None)
        .await;
    assert_eq!(got.1["target"], target);
    let headers = &got.1["headers"];
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["authorization"], "Bearer t");
    let fed = "/_matrix/federation/v1/state/%21room%3Ahs1.test?event_id=%24e%2Bx";
    assert_eq!(
        h.federation(Method::GET, fed, "hs2.test", None).await.1["target"],
        fed
    );
}

#[tokio::test]
async fn upstream_error_bodies_are_relayed_untouched() {
    let h = start().await;
    let got = h
        .send(
            Method::GET,
            "/_matrix/client/v3/rooms/%21missing%3Ahs1.test/members",
            &[],
            None,
        )
        .await;
    assert_eq!(got.0, 404);
    assert_eq!(
        got.1,
        json!({"errcode":"M_NOT_FOUND","error":"upstream says no"})
    );
}

#[tokio::test]
async fn unreachable_homeserver_is_502() {
    let h = start_with(|c| c.homeserver.url = "http://127.0.0.1:1".parse().unwrap()).await;
    assert_rejected(
        &h.send(Method::GET, "/_matrix/client/v3/sync", &[], None)
            .await,
        502,
        "M_UNKNOWN",
    );
}

#[tokio::test]
async fn versions_are_filtered_to_v1_11() {
    let h = start().await;
    let got = h
        .send(Method::GET, "/_matrix/client/versions", &[], None)
        .await;
    assert_eq!(
        got.1,
        json!({"versions":["r0.6.1","v1.2","v1.11"],"unstable_features":{}})
    );
}

#[tokio::test]
async fn create_room_rules() {
    let h = start().await;
    let url = "/_matrix/client/v3/createRoom";
    // allow: one local invitee without config; default version injected, unknown fields kept.
    let got = h.alice(Method::POST, url, json!({"x.unknown":1,"invite":["@carol:hs1.test"],"preset":"public_chat","creation_content":{"x.c":2}})).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        echoed_body(&got.1),
        json!({"x.unknown":1,"invite":["@carol:hs1.test"],"preset":"public_chat","creation_content":{"x.c":2,"m.federate":false},"room_version":"10"})
    );
    assert_rejected(
        &h.alice(
            Method::POST,
            url,
            json!({"invite":["@a:hs1.test","@b:hs1.test"]}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_rejected(
        &h.alice(Method::POST, url, json!({"room_version":"11"}))
            .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_rejected(
        &h.alice(
            Method::POST,
            url,
            json!({"creation_content":{"type":"de.gematik.tim.roomtype.default.v2"}}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    let got = h
        .alice(Method::POST, url, json!({"invite":["@bob:hs1.test"]}))
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "The invite was blocked by the invitees policy"
    );
    let got = h
        .alice(Method::POST, url, json!({"invite":["@x:evil.test"]}))
        .await;
    assert_eq!(
        got.1["error"],
        "evil.test kann nicht in der Föderation gefunden werden"
    );
    assert_rejected(
        &h.alice(Method::POST, url, json!([1])).await,
        400,
        "M_BAD_JSON",
    );
    assert_rejected(
        &h.send(Method::POST, url, &[], Some(json!({}))).await,
        401,
        "M_MISSING_TOKEN",
    );
    assert_rejected(
        &h.send(
            Method::POST,
            url,
            &[("authorization", "Bearer nope")],
            Some(json!({})),
        )
        .await,
        401,
        "M_UNKNOWN_TOKEN",
    );
    let metrics = h.metrics.encode();
    for rule in [
        "A_25368-01",
        "A_26202/A_26203",
        "A_28596",
        "A_26021-01",
        "A_25534",
    ] {
        assert!(
            metrics.contains(&format!("rule=\"{rule}\"")),
            "{rule}: {metrics}"
        );
    }
}

#[tokio::test]
async fn create_room_by_unfederated_creator_refused() {
    let h = start().await;
    let got = h
        .send(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            &[("authorization", "Bearer tok-remote")],
            Some(json!({})),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn create_room_public_refused_on_epa() {
    let h = start_with(|c| c.policy.flavour = timproxy::config::Flavour::Epa).await;
    let got = h
        .alice(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            json!({"visibility":"public"}),
        )
        .await;
    assert_rejected(&got, 400, "M_INVALID_ROOM_STATE");
    assert_eq!(
        h.alice(Method::POST, "/_matrix/client/v3/createRoom", json!({}))
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn whoami_is_cached_by_token() {
    let h = start().await;
    for _ in 0..3 {
        assert_eq!(
            h.alice(Method::POST, "/_matrix/client/v3/createRoom", json!({}))
                .await
                .0,
            200
        );
    }
    assert_eq!(h.up.whoami.load(Ordering::SeqCst), 1);
    let text = h.metrics.encode();
    assert!(
        text.contains(r#"whoami_cache_total{outcome="hit"} 2"#),
        "{text}"
    );
}

#[tokio::test]
async fn client_invite_rules() {
    let h = start().await;
    let url = "/_matrix/client/v3/rooms/%21room%3Ahs1.test/invite";
    assert_eq!(
        h.alice(
            Method::POST,
            url,
            json!({"user_id":"@carol:hs1.test","reason":"r"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.alice(Method::POST, url, json!({"user_id":"@z:hs2.test"}))
            .await
            .0,
        200
    );
    assert_rejected(
        &h.alice(Method::POST, url, json!({"user_id":"@bob:hs1.test"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Malformed config (bare-string groupExceptions) fails closed.
    assert_rejected(
        &h.alice(Method::POST, url, json!({"user_id":"@dave:hs1.test"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert!(h.metrics.encode().contains(r#"rule="A_26021-01-config""#));
    let got = h
        .alice(Method::POST, url, json!({"id_server":"x","medium":"email"}))
        .await;
    assert_eq!(got.1["error"], "InviteUser.Request.userId is missing");
    assert_rejected(
        &h.alice(Method::POST, url, json!({"user_id":"@x:unlisted.test"}))
            .await,
        403,
        "M_FORBIDDEN",
    );
    let observed = h.observed.0.lock().unwrap();
    let invite = observed
        .iter()
        .find(|o| o.endpoint_template.ends_with("/invite") && o.status == 200)
        .unwrap();
    assert_eq!(invite.inviter_server.as_deref(), Some("hs1.test"));
    assert!(!invite.is_federation);
}

#[tokio::test]
async fn invitee_on_same_host_other_port_is_another_server() {
    let h = start().await;
    let url = "/_matrix/client/v3/rooms/%21room%3Ahs1.test/invite";
    // `hs1.test:8449` is listed (the list holds domains) but is not this server: its own proxy
    // checks the invitee's permissions, ours must not ask our homeserver about that user.
    let got = h
        .alice(Method::POST, url, json!({"user_id":"@carol:hs1.test:8449"}))
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(echoed_body(&got.1)["user_id"], "@carol:hs1.test:8449");
    let event = json!({"sender":"@x:hs2.test","state_key":"@carol:hs1.test:8449","room_id":"!r:hs1.test",
                       "type":"m.room.member","content":{"membership":"invite"}});
    let got = h
        .federation(
            Method::PUT,
            "/_matrix/federation/v2/invite/%21r%3Ahs1.test/%24ev",
            "hs2.test",
            Some(json!({"event": event, "room_version":"10"})),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
}

#[tokio::test]
async fn admin_lookups_that_find_nothing_leave_the_answer_to_the_homeserver() {
    let h = start().await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    // A user the homeserver does not know yet (an application service user) has no account
    // data: the operator default (allow all) applies and the homeserver answers the invite.
    let got = h
        .alice(
            Method::POST,
            &format!("{room}/invite"),
            json!({"user_id":"@ghost:hs1.test"}),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    // An event that is not in this room has no age to check.
    let got = h
        .alice(
            Method::PUT,
            &format!("{room}/redact/%24elsewhere/t1"),
            json!({}),
        )
        .await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        got.1["target"],
        "/_matrix/client/v3/rooms/%21r%3Ahs1.test/redact/%24elsewhere/t1"
    );
    // A homeserver that fails is still a failure: the redaction is refused.
    let got = h
        .alice(
            Method::PUT,
            &format!("{room}/redact/%24broken/t2"),
            json!({}),
        )
        .await;
    assert_rejected(&got, 502, "M_UNKNOWN");
}

#[tokio::test]
async fn unknown_local_invitee_is_blocked_when_the_operator_default_blocks() {
    let h = start_with(|c| c.policy.default_permission = "block all".into()).await;
    let got = h
        .alice(
            Method::POST,
            "/_matrix/client/v3/rooms/%21r%3Ahs1.test/invite",
            json!({"user_id":"@ghost:hs1.test"}),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "The invite was blocked by the invitees policy"
    );
}

#[tokio::test]
async fn permission_checks_fail_closed_without_admin_token() {
    let h = start_with(|c| c.homeserver.admin_token = None).await;
    let got = h
        .alice(
            Method::POST,
            "/_matrix/client/v3/rooms/%21r%3Ahs1.test/invite",
            json!({"user_id":"@carol:hs1.test"}),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
}

#[tokio::test]
async fn federation_disabled_skips_federation_and_permission_checks() {
    let h = start_with(|c| c.federation.enforce = false).await;
    assert_eq!(
        h.alice(
            Method::POST,
            "/_matrix/client/v3/rooms/%21r%3Ahs1.test/invite",
            json!({"user_id":"@bob:hs1.test"})
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.send(
            Method::GET,
            "/_matrix/federation/v1/state/%21r%3Ahs1.test",
            &[],
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn x_matrix_origin_and_destination_checks() {
    let h = start().await;
    let url = "/_matrix/federation/v1/event/%24e";
    assert_eq!(
        h.federation(Method::GET, url, "hs2.test", None).await.0,
        200
    );
    assert_eq!(
        h.federation(Method::GET, url, "hs2.test:8448", None)
            .await
            .0,
        200
    );
    let got = h.federation(Method::GET, url, "evil.test", None).await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(got.1["error"], "not part of federation");
    let got = h.send(Method::GET, url, &[], None).await;
    assert_rejected(&got, 401, "M_UNAUTHORIZED");
    assert_eq!(
        got.1["error"],
        "missing X-Matrix authorization header with origin field"
    );
    assert_rejected(
        &h.send(Method::GET, url, &[("authorization", "Bearer x")], None)
            .await,
        401,
        "M_UNAUTHORIZED",
    );
    // Synapse refuses another destination with 401, and compares the whole string.
    for destination in ["other.test", "HS1.test", "hs1.test:8448"] {
        let header = format!(
            "X-Matrix origin=hs2.test,destination={destination},key=\"ed25519:a\",sig=\"x\""
        );
        assert_rejected(
            &h.send(Method::GET, url, &[("authorization", &header)], None)
                .await,
            401,
            "M_UNAUTHORIZED",
        );
    }
    let unquoted = "X-Matrix origin=hs2.test,key=\"ed25519:a\",sig=\"x\"";
    assert_eq!(
        h.send(Method::GET, url, &[("authorization", unquoted)], None)
            .await
            .0,
        200
    );
}

#[tokio::test]
async fn x_matrix_headers_synapse_refuses_as_malformed_get_its_400() {
    let h = start().await;
    // SyTest "Non-numeric ports in server names are rejected": Synapse answers 400.
    for header in [
        r#"X-Matrix origin=localhost:http,destination=hs1.test,key="ed25519:a",sig="c2ln""#,
        r#"X-Matrix origin=hs2.test,destination=hs1.test,key="ed25519:a""#,
    ] {
        let got = h
            .send(
                Method::GET,
                "/_matrix/federation/v1/query/profile?user_id=%40a%3Ahs1.test",
                &[("authorization", header)],
                None,
            )
            .await;
        assert_rejected(&got, 400, "M_UNAUTHORIZED");
    }
    assert!(h.metrics.encode().contains(r#"rule="x-matrix-malformed""#));
    assert_eq!(h.up.requests.load(Ordering::SeqCst), 0);
}

/// The federation list is swapped hundreds of times while federation requests are in
/// flight: readers always see one whole list (old or new), so a server in every list is
/// never refused, a server in every other list is either served or refused cleanly, and
/// nothing errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_list_swaps_under_load_never_fail_a_request() {
    let h = Arc::new(start().await);
    let swapper = {
        let federation = h.federation.clone();
        tokio::spawn(async move {
            let mut swaps = 0u32;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < deadline && swaps < 400 {
                swaps += 1;
                let mut entries: Vec<DomainEntry> = (0..2_000)
                    .map(|i| entry(&format!("filler{i}-{swaps}.test"), false))
                    .collect();
                entries.push(entry("hs1.test", false));
                entries.push(entry("hs2.test", false));
                if swaps.is_multiple_of(2) {
                    entries.push(entry("flaky.test", false));
                }
                federation.replace(FederationList::new(
                    i64::from(swaps) + 1,
                    time::OffsetDateTime::now_utc(),
                    false,
                    ListSource::File,
                    entries,
                ));
                tokio::task::yield_now().await;
            }
            swaps
        })
    };
    let mut clients = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let h = h.clone();
        clients.spawn(async move {
            let (mut served, mut refused) = (0u32, 0u32);
            for i in 0..60 {
                let url = format!("/_matrix/federation/v1/event/%24e{worker}-{i}");
                let got = h.federation(Method::GET, &url, "hs2.test", None).await;
                assert_eq!(got.0, 200, "member refused during a swap: {got:?}");
                let got = h.federation(Method::GET, &url, "flaky.test", None).await;
                match got.0.as_u16() {
                    200 => served += 1,
                    403 => {
                        assert_eq!(got.1["errcode"], "M_FORBIDDEN", "{got:?}");
                        refused += 1;
                    }
                    other => panic!("unexpected status {other} during a swap: {got:?}"),
                }
            }
            (served, refused)
        });
    }
    let (mut served, mut refused) = (0, 0);
    while let Some(result) = clients.join_next().await {
        let (s, r) = result.unwrap();
        served += s;
        refused += r;
    }
    let swaps = swapper.await.unwrap();
    assert!(swaps >= 10, "only {swaps} swaps happened");
    assert_eq!(served + refused, 8 * 60);
    assert!(
        h.federation.snapshot().unwrap().version > 1,
        "the list was never replaced"
    );
}

#[tokio::test]
async fn synapse_unauthenticated_federation_calls_pass() {
    let h = start().await;
    for target in [
        "/_matrix/key/v2/server",
        "/_matrix/key/v2/query/hs2.test",
        "/_matrix/federation/v1/version",
        "/_matrix/federation/v1/openid/userinfo?access_token=x",
    ] {
        assert_eq!(
            h.send(Method::GET, target, &[], None).await.0,
            200,
            "{target}"
        );
    }
    assert_eq!(
        h.send(Method::POST, "/_matrix/key/v2/query", &[], Some(json!({})))
            .await
            .0,
        200
    );
    // With X-Matrix, /version is checked.
    assert_eq!(
        h.federation(
            Method::GET,
            "/_matrix/federation/v1/version",
            "evil.test",
            None
        )
        .await
        .0,
        403
    );
}

#[tokio::test]
async fn federation_invite_rules() {
    let h = start().await;
    let event = |invitee: &str, membership: &str| json!({"sender":"@x:hs2.test","room_id":"!r:hs1.test","state_key":invitee,"type":"m.room.member","content":{"membership":membership}});
    let v1 = "/_matrix/federation/v1/invite/%21r%3Ahs1.test/%24ev";
    let v2 = "/_matrix/federation/v2/invite/%21r%3Ahs1.test/%24ev";
    assert_eq!(
        h.federation(
            Method::PUT,
            v1,
            "hs2.test",
            Some(event("@carol:hs1.test", "invite"))
        )
        .await
        .0,
        200
    );
    let got = h
        .federation(
            Method::PUT,
            v2,
            "hs2.test",
            Some(json!({"event": event("@carol:hs1.test", "invite"),"room_version":"10"})),
        )
        .await;
    assert_eq!(got.0, 200);
    let got = h
        .federation(
            Method::PUT,
            v2,
            "hs2.test",
            Some(json!({"event": event("@bob:hs1.test", "invite")})),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(got.1["error"], "Cannot invite this user");
    assert_rejected(
        &h.federation(
            Method::PUT,
            v1,
            "hs2.test",
            Some(event("@carol:hs1.test", "join")),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let insured = json!({"sender":"@i:kasse1.test","room_id":"!r:kasse1.test","type":"m.room.member","state_key":"@carol:kasse2.test","content":{"membership":"invite"}});
    assert_rejected(
        &h.federation(Method::PUT, v1, "kasse1.test", Some(insured))
            .await,
        403,
        "M_FORBIDDEN",
    );
    assert!(
        h.metrics
            .encode()
            .contains(r#"rule="ePA-insured-to-insured""#)
    );
}

/// Finding 2 (issue 14): Synapse performs an invite for an `m.room.member` state event with
/// `membership: invite`, so that route gets exactly the invite rules of `POST …/invite`.
#[tokio::test]
async fn invites_as_state_events_get_the_invite_rules() {
    let h = start().await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    let member = |who: &str| format!("{room}/state/m.room.member/{who}");
    let invite = json!({"membership":"invite"});
    // A_25534: the invitee's server is not federated (raw `@` and `:` as well as encoded).
    for path in [member("@bob:hs3.test"), member("%40bob%3Ahs3.test")] {
        let got = h.alice(Method::PUT, &path, invite.clone()).await;
        assert_rejected(&got, 403, "M_FORBIDDEN");
        assert_eq!(
            got.1["error"],
            "hs3.test kann nicht in der Föderation gefunden werden"
        );
    }
    // The decoded event type decides, not the raw text.
    let encoded_type = format!("{room}/state/m.room.%6Dember/%40bob%3Ahs3.test");
    assert_rejected(
        &h.alice(Method::PUT, &encoded_type, invite.clone()).await,
        403,
        "M_FORBIDDEN",
    );
    // A_26021-01: a local invitee's permission configuration blocks (and a malformed one
    // fails closed).
    let got = h
        .alice(Method::PUT, &member("%40bob%3Ahs1.test"), invite.clone())
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "The invite was blocked by the invitees policy"
    );
    assert_rejected(
        &h.alice(Method::PUT, &member("%40dave%3Ahs1.test"), invite.clone())
            .await,
        403,
        "M_FORBIDDEN",
    );
    // ePA: no invites between insured persons.
    let got = h
        .send(
            Method::PUT,
            &member("%40carl%3Akasse2.test"),
            &[("authorization", "Bearer tok-insured")],
            Some(invite.clone()),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    // A state key Synapse cannot read as a user is refused, not forwarded unchecked.
    assert_rejected(
        &h.alice(Method::PUT, &member("bob"), invite.clone()).await,
        400,
        "M_INVALID_PARAM",
    );
    // An allowed invite, and memberships that are no invite, reach the homeserver unchanged.
    for (who, content) in [
        ("%40carol%3Ahs1.test", invite.clone()),
        (
            "%40alice%3Ahs1.test",
            json!({"membership":"join","displayname":"A"}),
        ),
        (
            "%40bob%3Ahs3.test",
            json!({"membership":"ban","reason":"spam"}),
        ),
        ("%40bob%3Ahs3.test", json!({"membership":"leave"})),
    ] {
        let got = h.alice(Method::PUT, &member(who), content.clone()).await;
        assert_eq!(got.0, 200, "{who} {content}: {}", got.1);
        assert_eq!(echoed_body(&got.1), content);
    }
    let metrics = h.metrics.encode();
    for rule in [
        "A_25534",
        "A_26021-01",
        "A_26021-01-config",
        "ePA-insured-to-insured",
    ] {
        assert!(
            metrics.contains(&format!("rule=\"{rule}\",mode=\"enforce\"")),
            "{rule}: {metrics}"
        );
    }
}

/// A third-party invite names no Matrix ID the invite rules could check; Synapse performs one
/// through any of these routes.
#[tokio::test]
async fn third_party_invites_are_refused_on_every_route() {
    let h = start().await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    let threepid = json!({"medium":"email","address":"a@b.example","id_server":"is.example","id_access_token":"t"});
    // Synapse performs the 3PID invite and ignores `user_id` when medium and address are there.
    let mut with_user = threepid.clone();
    with_user["user_id"] = json!("@carol:hs1.test");
    assert_rejected(
        &h.alice(Method::POST, &format!("{room}/invite"), with_user)
            .await,
        403,
        "M_FORBIDDEN",
    );
    // Without user_id: the reference's answer.
    let got = h
        .alice(Method::POST, &format!("{room}/invite"), threepid.clone())
        .await;
    assert_rejected(&got, 400, "M_BAD_JSON");
    assert_eq!(got.1["error"], "InviteUser.Request.userId is missing");
    assert_rejected(
        &h.alice(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            json!({"invite_3pid":[threepid]}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_rejected(
        &h.alice(
            Method::PUT,
            &format!("{room}/state/m.room.third_party_invite/tok"),
            json!({"display_name":"a…","key_validity_url":"https://is.example","public_key":"k"}),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    let event = json!({"sender":"@x:hs2.test","state_key":"@carol:hs1.test","type":"m.room.member","content":{"membership":"invite"}});
    assert_rejected(
        &h.federation(
            Method::PUT,
            "/_matrix/federation/v1/exchange_third_party_invite/%21r%3Ahs1.test",
            "hs2.test",
            Some(event),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert_rejected(
        &h.send(
            Method::PUT,
            "/_matrix/federation/v1/3pid/onbind",
            &[],
            Some(json!({"mxid":"@carol:hs1.test","invites":[]})),
        )
        .await,
        403,
        "M_FORBIDDEN",
    );
    assert!(
        h.metrics
            .encode()
            .contains(r#"rule="third-party-invite",mode="enforce"} 6"#)
    );
    assert_eq!(
        h.up.requests.load(Ordering::SeqCst),
        h.up.whoami.load(Ordering::SeqCst)
    );
}

/// Finding 3 (issue 14): Synapse applies `initial_state` over the preset, so a `public` join
/// rule there makes a public room; and every other part of createRoom that is an invite counts.
#[tokio::test]
async fn create_room_initial_state_is_checked_like_the_rest_of_the_room() {
    let url = "/_matrix/client/v3/createRoom";
    let join_rule = |rule: &str| json!({"type":"m.room.join_rules","state_key":"","content":{"join_rule":rule}});
    let pro = start().await;
    let body =
        json!({"preset":"private_chat","initial_state":[join_rule("public")],"room_version":"10"});
    let got = pro.alice(Method::POST, url, body).await;
    assert_eq!(got.0, 200, "{}", got.1);
    assert_eq!(
        echoed_body(&got.1),
        json!({"preset":"private_chat","initial_state":[join_rule("public")],"room_version":"10","creation_content":{"m.federate":false}})
    );
    // Invites inside initial_state are invites.
    let member = |who: &str| json!({"type":"m.room.member","state_key":who,"content":{"membership":"invite"}});
    let got = pro
        .alice(
            Method::POST,
            url,
            json!({"initial_state":[member("@bob:hs3.test")]}),
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "hs3.test kann nicht in der Föderation gefunden werden"
    );
    let got = pro
        .alice(
            Method::POST,
            url,
            json!({"initial_state":[member("@bob:hs1.test")]}),
        )
        .await;
    assert_eq!(
        got.1["error"],
        "The invite was blocked by the invitees policy"
    );
    let got = pro
        .alice(
            Method::POST,
            url,
            json!({"invite":["@carol:hs1.test"],"initial_state":[member("@erin:hs1.test")]}),
        )
        .await;
    assert_eq!(
        got.1["error"],
        "Only one user can be invited at room creation. - see A_25368-01"
    );

    let epa = start_with(|c| c.policy.flavour = timproxy::config::Flavour::Epa).await;
    for rule in ["public", "knock", "restricted", "knock_restricted"] {
        let body = json!({"preset":"private_chat","initial_state":[join_rule(rule)]});
        assert_rejected(
            &epa.alice(Method::POST, url, body).await,
            400,
            "M_INVALID_ROOM_STATE",
        );
    }
    assert_eq!(
        epa.alice(
            Method::POST,
            url,
            json!({"initial_state":[join_rule("invite")]})
        )
        .await
        .0,
        200
    );
}

/// Threads and reactions are refused on every route that sends event content, not only
/// `PUT …/send`; redactions through `send` and `state` get the age rule.
#[tokio::test]
async fn content_rules_hold_on_every_route_that_carries_content() {
    let h = start().await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    let thread = json!({"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$e"}});
    for (method, path, body) in [
        (
            Method::PUT,
            format!("{room}/send/m.room.message/t1"),
            json!({"body":"x","m.relates_to":{"rel_type":"io.element.thread","event_id":"$e"}}),
        ),
        (
            Method::PUT,
            format!("{room}/state/m.room.topic/"),
            thread.clone(),
        ),
        (
            Method::PUT,
            format!("{room}/state/x.custom/key"),
            thread.clone(),
        ),
        (
            Method::PUT,
            format!("{room}/redact/%24new/t2"),
            json!({"reason":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$e"}}),
        ),
        (
            Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            json!({"initial_state":[{"type":"m.room.topic","content":thread}]}),
        ),
        (
            Method::POST,
            "/_matrix/client/v3/createRoom".to_owned(),
            json!({"creation_content":thread}),
        ),
    ] {
        let got = h.alice(method.clone(), &path, body).await;
        assert_rejected(&got, 400, "M_FORBIDDEN");
        assert_eq!(
            got.1["error"], "Message threading is not supported – see A_25395-02",
            "{method} {path}"
        );
    }
    let two = json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍👍"}});
    assert_rejected(
        &h.alice(Method::PUT, &format!("{room}/state/m.reaction/k"), two)
            .await,
        400,
        "M_BAD_JSON",
    );
    for path in [
        format!("{room}/send/m.room.redaction/t3"),
        format!("{room}/state/m.room.redaction/k"),
    ] {
        let got = h.alice(Method::PUT, &path, json!({"redacts":"$old"})).await;
        assert_rejected(&got, 403, "M_FORBIDDEN");
        assert_eq!(
            got.1["error"],
            "Event cannot be redacted, it is older than 24h - see A_28358"
        );
        assert_eq!(
            h.alice(Method::PUT, &path, json!({"redacts":"$new"}))
                .await
                .0,
            200
        );
    }
}

#[tokio::test]
async fn state_send_redact_presence_register_upgrade_rules() {
    let h = start().await;
    let room = "/_matrix/client/v3/rooms/%21r%3Ahs1.test";
    // A_28271, with and without trailing slash for the empty state key.
    for suffix in ["/state/m.room.join_rules/", "/state/m.room.join_rules"] {
        assert_rejected(
            &h.alice(
                Method::PUT,
                &format!("{room}{suffix}"),
                json!({"join_rule":"public"}),
            )
            .await,
            400,
            "M_INVALID_ROOM_STATE",
        );
        assert_eq!(
            h.alice(
                Method::PUT,
                &format!("{room}{suffix}"),
                json!({"join_rule":"invite"})
            )
            .await
            .0,
            200
        );
    }
    assert_eq!(
        h.alice(
            Method::PUT,
            &format!("{room}/state/m.room.name/"),
            json!({"join_rule":"public"})
        )
        .await
        .0,
        200
    );
    // A_25395-02
    let send = format!("{room}/send/m.room.message/t1");
    assert_rejected(
        &h.alice(
            Method::PUT,
            &send,
            json!({"body":"x","m.relates_to":{"rel_type":"m.thread","event_id":"$e"}}),
        )
        .await,
        400,
        "M_FORBIDDEN",
    );
    assert_eq!(
        h.alice(Method::PUT, &send, json!({"body":"x"})).await.0,
        200
    );
    // A_26228-01
    let react = format!("{room}/send/m.reaction/t2");
    assert_eq!(
        h.alice(
            Method::PUT,
            &react,
            json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍🏽"}})
        )
        .await
        .0,
        200
    );
    assert_rejected(
        &h.alice(
            Method::PUT,
            &react,
            json!({"m.relates_to":{"rel_type":"m.annotation","event_id":"$e","key":"👍👍"}}),
        )
        .await,
        400,
        "M_BAD_JSON",
    );
    // A_28358
    assert_eq!(
        h.alice(Method::PUT, &format!("{room}/redact/%24new/t3"), json!({}))
            .await
            .0,
        200
    );
    let got = h
        .alice(Method::PUT, &format!("{room}/redact/%24old/t4"), json!({}))
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "Event cannot be redacted, it is older than 24h - see A_28358"
    );
    // presence
    let presence = "/_matrix/client/v3/presence/%40alice%3Ahs1.test/status";
    assert_eq!(
        h.alice(
            Method::PUT,
            presence,
            json!({"presence":"online","status_msg":"x".repeat(250)})
        )
        .await
        .0,
        200
    );
    assert_rejected(
        &h.alice(
            Method::PUT,
            presence,
            json!({"presence":"online","status_msg":"x".repeat(251)}),
        )
        .await,
        403,
        "M_TOO_LARGE",
    );
    // guest
    let got = h
        .send(
            Method::POST,
            "/_matrix/client/v3/register?kind=guest",
            &[],
            Some(json!({})),
        )
        .await;
    assert_eq!(got.1["error"], "Guest access is disabled");
    assert_eq!(
        h.send(
            Method::POST,
            "/_matrix/client/v3/register?kind=user",
            &[],
            Some(json!({}))
        )
        .await
        .0,
        200
    );
    // upgrade
    assert_rejected(
        &h.alice(
            Method::POST,
            &format!("{room}/upgrade"),
            json!({"new_version":"11"}),
        )
        .await,
        400,
        "M_UNSUPPORTED_ROOM_VERSION",
    );
    assert_eq!(
        h.alice(
            Method::POST,
            &format!("{room}/upgrade"),
            json!({"new_version":"9"})
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn media_server_name_must_be_federated() {
    let h = start().await;
    assert_eq!(
        h.send(
            Method::GET,
            "/_matrix/media/v3/download/hs2.test/m1",
            &[],
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        h.send(
            Method::GET,
            "/_matrix/client/v1/media/thumbnail/hs1.test/m1?width=1",
            &[],
            None
        )
        .await
        .0,
        200
    );
    let got = h
        .send(
            Method::GET,
            "/_matrix/client/v1/media/download/evil.test/m1",
            &[],
            None,
        )
        .await;
    assert_rejected(&got, 403, "M_FORBIDDEN");
    assert_eq!(
        got.1["error"],
        "evil.test kann nicht in der Föderation gefunden werden"
    );
}

#[tokio::test]
async fn rule_bodies_over_the_limit_are_413() {
    let h = start_with(|c| c.inbound.max_body_bytes = 1024).await;
    let got = h
        .alice(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            json!({"name":"x".repeat(2000)}),
        )
        .await;
    assert_rejected(&got, 413, "M_TOO_LARGE");
}

#[tokio::test]
async fn large_bodies_stream_through_upload_and_download() {
    let h = start_with(|c| c.inbound.max_body_bytes = 1024).await;
    let response = h
        .send_body(
            Method::POST,
            "/_matrix/media/v3/upload",
            &[
                ("authorization", "Bearer t"),
                ("content-type", "application/octet-stream"),
            ],
            chunks(BIG),
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["received"], BIG);
    assert_eq!(h.up.uploaded.load(Ordering::SeqCst), BIG);
    let response = h
        .send_body(
            Method::GET,
            "/_matrix/client/v1/media/download/hs1.test/big",
            &[],
            full(Bytes::new()),
        )
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut n = 0u64;
    while let Some(frame) = tokio::time::timeout(WAIT, body.frame()).await.unwrap() {
        if let Ok(data) = frame.unwrap().into_data() {
            n += data.len() as u64;
        }
    }
    assert_eq!(n, BIG);
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let h = start().await;
    assert_eq!(
        h.send(Method::GET, "/_matrix/client/v3/sync", &[], None)
            .await
            .0,
        200
    );
    h.trigger.trigger();
    let result = tokio::time::timeout(Duration::from_secs(15), h.server)
        .await
        .unwrap()
        .unwrap();
    assert!(result.is_ok());
    assert!(tokio::net::TcpStream::connect(h.addr).await.is_err());
}

#[tokio::test]
async fn drain_closes_idle_connections_and_still_answers_a_started_request() {
    use tokio::io::AsyncReadExt;
    let h = start().await;
    let mut idle = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (_, closed) = raw_exchange(
        &mut idle,
        b"GET /_matrix/client/v3/sync HTTP/1.1\r\nhost: hs1.test\r\n\r\n",
        1,
    )
    .await;
    assert!(!closed);
    // A request whose head is in but whose body is not yet. It follows a complete request in
    // the same write, so once that one is answered the proxy has read the head of this one.
    let mut started = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (text, closed) = raw_exchange(
        &mut started,
        b"GET /_matrix/client/v3/sync HTTP/1.1\r\nhost: hs1.test\r\n\r\n\
          PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message/d1 HTTP/1.1\r\n\
          host: hs1.test\r\nauthorization: Bearer tok-alice\r\ncontent-length: 15\r\n\r\n",
        1,
    )
    .await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && !closed, "{text}");
    h.trigger.trigger();
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut rest))
        .await
        .expect("idle connection still open during the drain")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let (text, closed) = raw_exchange(&mut started, br#"{"body":"late"}"#, 1).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    let closed = closed
        || tokio::time::timeout(Duration::from_secs(5), started.read(&mut rest))
            .await
            .is_ok_and(|r| r.unwrap_or(0) == 0);
    assert!(closed, "connection left open after the drain");
    // Bounded below the listener's own DRAIN_TIMEOUT (10 s): the drain ended because every
    // connection closed, not because it gave up on them.
    tokio::time::timeout(Duration::from_secs(5), h.server)
        .await
        .expect("listener still draining")
        .unwrap()
        .unwrap();
}

/// A listener with `inbound.tls` (a self-signed certificate for `localhost`), and a client
/// builder that trusts it and resolves `localhost` to it. The directory holds the files.
async fn start_tls() -> (Harness, reqwest::ClientBuilder, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let h = start_with(|c| {
        c.inbound.tls = Some(timproxy::config::TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        })
    })
    .await;
    let root = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .resolve("localhost", h.addr);
    (h, client, dir)
}

#[tokio::test]
async fn tls_listener_serves_https() {
    let (h, client, _dir) = start_tls().await;
    let client = client.build().unwrap();
    let url = format!(
        "https://localhost:{}/.well-known/matrix/server",
        h.addr.port()
    );
    let response = tokio::time::timeout(WAIT, client.get(&url).send())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let url = format!("https://localhost:{}/_matrix/client/v3/sync", h.addr.port());
    let body: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
}

/// One raw HTTP/1.x exchange: write `bytes`, then read until `answers` complete answers (all
/// with `content-length`) arrived or the server closed. Returns what was read and whether the
/// server closed the connection.
pub(crate) async fn raw_exchange(
    stream: &mut tokio::net::TcpStream,
    bytes: &[u8],
    answers: usize,
) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let complete = |got: &[u8]| {
        let text = String::from_utf8_lossy(got);
        let mut rest = &text[..];
        let mut n = 0;
        while let Some(end) = rest.find("\r\n\r\n") {
            let head = rest[..end].to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            let body_start = end + 4;
            if rest.len() < body_start + len || head.starts_with("http/1.1 100") && len != 0 {
                break;
            }
            if !head.starts_with("http/1.1 100") {
                n += 1;
            }
            rest = &rest[body_start + len..];
        }
        n
    };
    let mut closed = false;
    while complete(&got) < answers {
        match tokio::time::timeout(WAIT, stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Err(_) => panic!(
                "no answer within {WAIT:?}: {}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let h = start().await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let two = b"GET /_matrix/client/v3/sync?n=1 HTTP/1.1\r\nhost: hs1.test\r\n\r\n\
                PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message/t1 HTTP/1.1\r\n\
                host: hs1.test\r\ncontent-length: 2\r\n\r\n{}";
    let (text, closed) = raw_exchange(&mut stream, two, 2).await;
    assert!(!closed, "{text}");
    let first = text.find("sync?n=1").expect("first answer");
    let second = text.find("send/m.room.message/t1").expect("second answer");
    assert!(first < second, "{text}");
    assert_eq!(text.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{text}");
    // Still open for a third.
    let (text, _) = raw_exchange(
        &mut stream,
        b"GET /_matrix/client/versions HTTP/1.1\r\nhost: hs1.test\r\n\r\n",
        1,
    )
    .await;
    assert!(text.contains("v1.11") && !text.contains("v1.12"), "{text}");
}

#[tokio::test]
async fn http10_clients_get_their_connection_closed_unless_they_ask_to_keep_it() {
    let h = start().await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (text, closed) = raw_exchange(
        &mut stream,
        b"GET /_matrix/client/v3/sync HTTP/1.0\r\nhost: hs1.test\r\nconnection: keep-alive\r\n\r\n",
        1,
    )
    .await;
    assert!(
        !closed && text.contains("connection: keep-alive\r\n"),
        "{text}"
    );
    let (text, _) = raw_exchange(
        &mut stream,
        b"GET /_matrix/client/v3/sync HTTP/1.0\r\nhost: hs1.test\r\n\r\n",
        1,
    )
    .await;
    assert!(text.contains("connection: close\r\n"), "{text}");
    let mut rest = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut stream, &mut rest))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "server kept an HTTP/1.0 connection open");
}

#[tokio::test]
async fn expect_continue_and_chunked_request_bodies_reach_the_homeserver() {
    let h = start().await;
    let mut stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let head = b"PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message/t2 HTTP/1.1\r\n\
                 host: hs1.test\r\nauthorization: Bearer tok-alice\r\ncontent-length: 15\r\n\
                 expect: 100-continue\r\n\r\n";
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(head).await.unwrap();
    let mut interim = [0u8; 25];
    tokio::time::timeout(WAIT, stream.read_exact(&mut interim))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    let (text, _) = raw_exchange(&mut stream, br#"{"body":"late"}"#, 1).await;
    assert!(text.contains(r#"\"body\":\"late\""#), "{text}");
    assert!(
        !text.contains("expect"),
        "Expect reached the homeserver: {text}"
    );
    // A chunked body of a rule-checked endpoint is decoded before the rules see it.
    let chunked = b"PUT /_matrix/client/v3/rooms/%21r%3Ahs1.test/send/m.room.message/t3 HTTP/1.1\r\n\
                    host: hs1.test\r\nauthorization: Bearer tok-alice\r\ntransfer-encoding: chunked\r\n\r\n\
                    7\r\n{\"body\"\r\n9;x=y\r\n:\"split\"}\r\n0\r\n\r\n";
    let (text, closed) = raw_exchange(&mut stream, chunked, 1).await;
    assert!(!closed, "{text}");
    assert!(text.contains(r#"\"body\":\"split\""#), "{text}");
    assert!(!text.contains("transfer-encoding\":"), "{text}");
}

#[tokio::test]
async fn http2_is_served_with_prior_knowledge_and_http1_over_tls() {
    let h = start().await;
    let stream = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let request = Request::get(format!("http://{}/_matrix/client/v3/sync?h2=1", h.addr))
        .body(full(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(WAIT, sender.send_request(request))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["target"], "/_matrix/client/v3/sync?h2=1");

    let (h, client, _dir) = start_tls().await;
    let client = client.http1_only().build().unwrap();
    let url = format!("https://localhost:{}/_matrix/client/v3/sync", h.addr.port());
    for _ in 0..3 {
        let response = tokio::time::timeout(WAIT, client.get(&url).send())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    }
}

const SUPPORT_DOC: &str = r#"{"contacts":[{"matrix_id":"@admin:hs1.test","role":"m.role.admin"}],"support_page":"https://hs1.test/help"}"#;

fn registration_service_is_upstream(c: &mut Config) {
    c.registration_service.url = c.homeserver.url.clone();
}

#[tokio::test]
async fn well_known_support_comes_from_the_registration_service_by_full_server_name() {
    let h = start_with(registration_service_is_upstream).await;
    let got = h
        .send(Method::GET, "/.well-known/matrix/support", &[], None)
        .await;
    assert_eq!(got.0, 200);
    assert_eq!(got.1, serde_json::from_str::<Value>(SUPPORT_DOC).unwrap());
}

#[tokio::test]
async fn well_known_support_unknown_server_is_404_or_the_configured_fallback() {
    let h = start_with(|c| {
        registration_service_is_upstream(c);
        c.registration_service.support_server_name = Some("unknown.test".into());
    })
    .await;
    assert_rejected(
        &h.send(Method::GET, "/.well-known/matrix/support", &[], None)
            .await,
        404,
        "M_NOT_FOUND",
    );

    let dir = tempfile::tempdir().unwrap();
    let fallback = dir.path().join("support.json");
    std::fs::write(
        &fallback,
        r#"{"support_page":"https://operator.example/help"}"#,
    )
    .unwrap();
    let h = start_with(|c| {
        registration_service_is_upstream(c);
        c.registration_service.support_server_name = Some("unknown.test".into());
        c.registration_service.support_fallback_file = Some(fallback.clone());
    })
    .await;
    let got = h
        .send(Method::GET, "/.well-known/matrix/support", &[], None)
        .await;
    assert_eq!(got.0, 200);
    assert_eq!(
        got.1,
        json!({"support_page":"https://operator.example/help"})
    );
}

#[tokio::test]
async fn well_known_support_with_registration_service_down_is_502() {
    let h = start_with(|c| {
        c.registration_service.url = "http://127.0.0.1:1".parse().unwrap();
    })
    .await;
    assert_rejected(
        &h.send(Method::GET, "/.well-known/matrix/support", &[], None)
            .await,
        502,
        "M_UNKNOWN",
    );
}
