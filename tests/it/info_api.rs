//! TI-Messenger information API against a fake homeserver OpenID userinfo endpoint.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use timproxy::config::Config;
use timproxy::federation::source::parse_list_json;
use timproxy::federation::{FederationHandle, FederationList, ListSource};
use timproxy::info_api::{InfoApiState, serve};
use timproxy::metrics::Metrics;
use url::Url;

use crate::federation::data;

const TIMEOUT: Duration = Duration::from_secs(10);
const GOOD_TOKEN: &str = "openid-good";
const OUTAGE_TOKEN: &str = "openid-outage";

#[derive(Default)]
struct Homeserver {
    calls: AtomicUsize,
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    access_token: Option<String>,
}

async fn userinfo(State(hs): State<Arc<Homeserver>>, Query(q): Query<TokenQuery>) -> Response {
    hs.calls.fetch_add(1, Ordering::SeqCst);
    match q.access_token.as_deref() {
        Some(GOOD_TOKEN) => {
            axum::Json(serde_json::json!({"sub": "@alice:hs.example"})).into_response()
        }
        Some(OUTAGE_TOKEN) => StatusCode::BAD_GATEWAY.into_response(),
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(serde_json::json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid token"})),
        )
            .into_response(),
    }
}

struct Api {
    base: String,
    homeserver: Arc<Homeserver>,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    _trigger: timproxy::shutdown::ShutdownTrigger,
}

/// A VZD list (it has IK numbers) loaded into a handle.
fn vzd_list(fetched_at: time::OffsetDateTime) -> FederationList {
    let parsed = parse_list_json(&std::fs::read(data("vzd-list.payload.json")).unwrap()).unwrap();
    FederationList::new(
        parsed.version,
        fetched_at,
        true,
        ListSource::VzdJws,
        parsed.entries,
    )
}

async fn start(federation: FederationHandle) -> Api {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let homeserver = Arc::new(Homeserver::default());
    let hs_app = Router::new()
        .route("/_matrix/federation/v1/openid/userinfo", get(userinfo))
        .with_state(homeserver.clone());
    let hs_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hs_addr = hs_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(hs_listener, hs_app).await;
    });

    let mut config = Config::default();
    config.homeserver.url = Url::parse(&format!("http://{hs_addr}")).unwrap();
    let metrics = Metrics::new();
    let state = Arc::new(InfoApiState::new(&config, federation, metrics.clone()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, shutdown) = timproxy::shutdown::channel();
    tokio::spawn(serve(listener, state, shutdown));
    Api {
        base: format!("http://{addr}"),
        homeserver,
        metrics,
        http: reqwest::Client::new(),
        _trigger: trigger,
    }
}

async fn fresh_api() -> Api {
    let handle = FederationHandle::with_list(
        Duration::from_secs(72 * 3600),
        vzd_list(time::OffsetDateTime::now_utc()),
    );
    start(handle).await
}

impl Api {
    async fn get(&self, path: &str, auth: Option<&str>) -> (StatusCode, serde_json::Value) {
        let mut request = self.http.get(format!("{}{path}", self.base));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = tokio::time::timeout(TIMEOUT, request.send())
            .await
            .unwrap()
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, body)
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[derive(serde::Deserialize)]
struct ErrorRow {
    rule: String,
    listener: String,
    path_example: String,
    status: u16,
    errcode: String,
    error: String,
}

/// Every `listener: info` row of the error-body vectors, with the one documented deviation:
/// an unknown server for isInsurance answers 200 `{"isInsurance":false}` instead of 404.
#[tokio::test]
async fn error_bodies_match_the_vectors() {
    let rows: Vec<ErrorRow> = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/error-bodies.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let rows: Vec<_> = rows.into_iter().filter(|r| r.listener == "info").collect();
    assert!(rows.len() >= 7);
    let api = fresh_api().await;
    let good = bearer(GOOD_TOKEN);
    for row in rows {
        let auth = match row.rule.as_str() {
            "info-auth-missing" => None,
            "info-auth-malformed" => Some("Basic abc"),
            "info-auth-failed" => Some("Bearer not-a-valid-token"),
            _ => Some(good.as_str()),
        };
        let (status, body) = api.get(&row.path_example, auth).await;
        if row.rule == "info-servername-not-found" {
            assert_eq!(status, StatusCode::OK, "{}", row.rule);
            assert_eq!(body, serde_json::json!({"isInsurance": false}));
            continue;
        }
        assert_eq!(status.as_u16(), row.status, "{}: {body}", row.rule);
        assert_eq!(
            body,
            serde_json::json!({"errorCode": row.errcode, "errorMessage": row.error}),
            "{}",
            row.rule
        );
    }
}

#[tokio::test]
async fn info_object_on_both_base_paths() {
    let api = fresh_api().await;
    for path in ["/tim-information", "/tim-information/"] {
        let (status, body) = api.get(path, Some(&bearer(GOOD_TOKEN))).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            body,
            serde_json::json!({"title": "Contact Information API des TI-Messengers", "version": "1.0.0"})
        );
    }
}

#[tokio::test]
async fn answers_come_from_the_federation_list() {
    let api = fresh_api().await;
    let auth = bearer(GOOD_TOKEN);
    let payload: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data("vzd-list.payload.json")).unwrap()).unwrap();
    for entry in payload["domainList"].as_array().unwrap() {
        let domain = entry["domain"].as_str().unwrap();
        let (status, body) = api
            .get(
                &format!("/tim-information/v1/server/isInsurance?serverName={domain}"),
                Some(&auth),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["isInsurance"], entry["isInsurance"], "{domain}");
        for ik in entry["ik"].as_array().into_iter().flatten() {
            let ik = ik.as_str().unwrap();
            let (status, body) = api
                .get(
                    &format!("/tim-information/v1/server/findByIk?ikNumber={ik}"),
                    Some(&auth),
                )
                .await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, serde_json::json!({"serverName": domain}));
        }
    }
    // Port and case do not matter for server names.
    let (_, body) = api
        .get(
            "/tim-information/v1/server/isInsurance?serverName=Versicherte.TIM.gematiker-kk.example:443",
            Some(&auth),
        )
        .await;
    assert_eq!(body["isInsurance"], true);
}

/// Issue 14, finding 7: every distinct call with the same invalid token reached the
/// homeserver. Verified and refused tokens are both remembered; outages are not.
#[tokio::test]
async fn verified_and_refused_tokens_are_cached_outages_are_not() {
    let api = fresh_api().await;
    let good = bearer(GOOD_TOKEN);
    for _ in 0..5 {
        let (status, _) = api.get("/tim-information", Some(&good)).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(api.homeserver.calls.load(Ordering::SeqCst), 1);
    for _ in 0..5 {
        let (status, body) = api.get("/tim-information", Some("Bearer wrong")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errorMessage"], "no mxid associated with bearer token");
    }
    assert_eq!(
        api.homeserver.calls.load(Ordering::SeqCst),
        2,
        "the same invalid token was asked for again"
    );
    let (status, _) = api.get("/tim-information", Some("Bearer other")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(api.homeserver.calls.load(Ordering::SeqCst), 3);
    for _ in 0..2 {
        let (status, _) = api
            .get("/tim-information", Some(&bearer(OUTAGE_TOKEN)))
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
    assert_eq!(api.homeserver.calls.load(Ordering::SeqCst), 5);
}

/// Issue 14, finding 7: the error body repeated the raw `Authorization` value, credentials
/// included.
#[tokio::test]
async fn malformed_authorization_is_never_echoed() {
    let api = fresh_api().await;
    for header in [
        "Basic dXNlcjpzZWNyZXQtcGFzc3dvcmQ=",
        "bearer secret-token-lowercase-scheme",
        "Bearer",
        "Token secret-token",
    ] {
        let (status, body) = api.get("/tim-information", Some(header)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header}");
        let text = body.to_string();
        assert!(
            !text.contains("secret") && !text.contains("dXNlcj"),
            "{header} echoed: {text}"
        );
        assert_eq!(body["errorMessage"], "malformed bearer token");
    }
    assert_eq!(api.homeserver.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn homeserver_outage_is_503_not_401() {
    let api = fresh_api().await;
    let (status, body) = api
        .get("/tim-information", Some(&bearer(OUTAGE_TOKEN)))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["errorCode"], "503");
}

#[tokio::test]
async fn expired_or_missing_list_is_503() {
    let expired = FederationHandle::with_list(
        Duration::from_secs(72 * 3600),
        vzd_list(time::OffsetDateTime::now_utc() - time::Duration::hours(73)),
    );
    let api = start(expired).await;
    let auth = bearer(GOOD_TOKEN);
    for path in [
        "/tim-information/v1/server/isInsurance?serverName=a.example",
        "/tim-information/v1/server/findByIk?ikNumber=109912340",
    ] {
        let (status, body) = api.get(path, Some(&auth)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(body["errorCode"], "503");
    }
    let empty = start(FederationHandle::new(Duration::from_secs(60))).await;
    let (status, _) = empty
        .get(
            "/tim-information/v1/server/isInsurance?serverName=a.example",
            Some(&auth),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn unknown_paths_are_plain_404_and_rejections_are_counted() {
    let api = fresh_api().await;
    let (status, body) = api
        .get("/tim-information/v2/nothing", Some(&bearer(GOOD_TOKEN)))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, serde_json::Value::Null);
    api.get("/tim-information", None).await;
    let text = api.metrics.encode();
    assert!(
        text.contains(r#"timproxy_rejections_total{listener="info",rule="info-auth-missing",mode="enforce"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"timproxy_requests_total{listener="info",endpoint="/tim-information",status="401"} 1"#
        ),
        "{text}"
    );
}
