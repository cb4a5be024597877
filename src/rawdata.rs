//! Raw-data (performance) reports (TIM-PROXY digest §9, fix §12 item 9).
//!
//! The request path only builds a [`RawDataReport`] and hands it to [`Reporter::report`],
//! which never waits: a bounded channel feeds a writer task that batches reports into the
//! store's outbox. A separate sender ([`spawn_sender`]) delivers due reports to
//! `raw_data.url` with an `Idempotency-Key` header, retries with exponential backoff and
//! drops reports older than `raw_data.retention`. Back-pressure under a long collector
//! outage therefore lives in the database, not in memory.
//!
//! Differences to the reference (digest §9 FIX): `Inst-ID` comes from `raw_data.instance_id`
//! (not the operation code), `UA-cid` from the user agent's `client_id`, `start` is taken
//! before the upstream call, every field is always present, and nothing blocks the request.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::config::{Config, RawDataConfig};
use crate::metrics::{Metrics, OutcomeLabels};
use crate::shutdown::Shutdown;
use crate::store::{NewOutboxItem, OutboxRow, Store, now_ms};

mod observer;
pub mod useragent;

pub use observer::Observer;
pub use useragent::UserAgent;

/// Value of every field the request did not provide.
pub const NOT_AVAILABLE: &str = "n/a";
/// Header carrying the report's idempotency key on every delivery attempt.
pub const IDEMPOTENCY_HEADER: &str = "Idempotency-Key";
/// Name of the advisory lock held by the replica that sends reports.
pub const SENDER_LOCK: &str = "rawdata-sender";

/// Reports buffered between the request path and the writer task. Beyond this the store is
/// evidently not keeping up, and reports are dropped (counted) rather than slowing requests.
const WRITER_QUEUE: usize = 8192;
/// How long one delivery POST may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Delivered rows are kept this long for inspection, then deleted.
const DELIVERED_KEEP: Duration = Duration::from_secs(3600);
/// How often a replica without the sender lock checks whether it can take over.
const LOCK_RETRY: Duration = Duration::from_secs(10);

/// `start` format: ISO 8601 UTC with milliseconds and `Z`, as the reference emits.
const START_FORMAT: &[BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
);

/// Reported operations (enum names as sent; digest §9 table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    MpClientLoginSupportedLoginTypes,
    MpClientLoginRequestAccessToken,
    MpClientLoginRequestOpenidToken,
    MpInviteWithinOrganisationSearch,
    MpInviteWithinOrganisationInvite,
    MpInviteOutsideOrganisationInviteSender,
    MpInviteOutsideOrganisationInviteReceiver,
    MpExchangeEventWithinOrganisation,
    MpExchangeEventOutsideOrganisationSender,
    MpExchangeEventOutsideOrganisationReceiver,
}

impl Operation {
    /// The TIM use-case code of the operation.
    pub fn code(self) -> &'static str {
        match self {
            Operation::MpClientLoginSupportedLoginTypes => "TIM.UC_100 57_01",
            Operation::MpClientLoginRequestAccessToken => "TIM.UC_100 57_02",
            Operation::MpClientLoginRequestOpenidToken => "TIM.UC_100 57_03",
            Operation::MpInviteWithinOrganisationSearch => "TIM.UC_101 04_01",
            Operation::MpInviteWithinOrganisationInvite => "TIM.UC_101 04_02",
            Operation::MpInviteOutsideOrganisationInviteSender => "TIM.UC_100 61_02",
            Operation::MpInviteOutsideOrganisationInviteReceiver => "TIM.UC_100 61_03",
            Operation::MpExchangeEventWithinOrganisation => "TIM.UC_100 63_01",
            Operation::MpExchangeEventOutsideOrganisationSender => "TIM.UC_100 62_01",
            Operation::MpExchangeEventOutsideOrganisationReceiver => "TIM.UC_100 62_02",
        }
    }
}

/// Which listener saw the request: inbound (clients, remote servers) or outbound (our
/// homeserver talking to remote servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where the invitee of an invite or createRoom lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invitee {
    /// No invitee (createRoom without `invite`, or an invite without `user_id`).
    None,
    /// On `homeserver.server_name`.
    Local,
    /// On another server.
    Remote,
}

/// Client-server routes (after `/_matrix/client/<version>`) reported as
/// `MP_EXCHANGE_EVENT_WITHIN_ORGANISATION`: the room, directory, tag and receipt routes the
/// reference reports: the 41 routes of its `roomRoutes` (createRoom is decided apart).
const EXCHANGE_WITHIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/rooms/{roomId}/relations/{eventId}"),
    ("GET", "/rooms/{roomId}/relations/{eventId}/{relType}"),
    (
        "GET",
        "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}",
    ),
    ("GET", "/rooms/{roomId}/hierarchy"),
    ("POST", "/rooms/{roomId}/report/{eventId}"),
    ("POST", "/knock/{roomIdOrAlias}"),
    ("GET", "/publicRooms"),
    ("POST", "/publicRooms"),
    ("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}"),
    ("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey}"),
    ("GET", "/rooms/{roomId}/state/{eventType}/{stateKey}"),
    ("GET", "/rooms/{roomId}/state"),
    ("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}"),
    ("POST", "/rooms/{roomId}/upgrade"),
    ("GET", "/rooms/{roomId}/event/{eventId}"),
    ("GET", "/rooms/{roomId}/context/{eventId}"),
    ("GET", "/rooms/{roomId}/members"),
    ("GET", "/rooms/{roomId}/joined_members"),
    ("GET", "/rooms/{roomId}/messages"),
    ("GET", "/rooms/{roomId}/aliases"),
    ("POST", "/rooms/{roomId}/join"),
    ("POST", "/join/{roomIdOrAlias}"),
    ("POST", "/rooms/{roomId}/leave"),
    ("POST", "/rooms/{roomId}/forget"),
    ("POST", "/rooms/{roomId}/kick"),
    ("POST", "/rooms/{roomId}/ban"),
    ("POST", "/rooms/{roomId}/unban"),
    ("POST", "/rooms/{roomId}/read_markers"),
    ("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}"),
    ("PUT", "/rooms/{roomId}/typing/{userId}"),
    ("GET", "/joined_rooms"),
    ("GET", "/directory/room/{roomAlias}"),
    ("PUT", "/directory/room/{roomAlias}"),
    ("DELETE", "/directory/room/{roomAlias}"),
    ("GET", "/directory/list/room/{roomId}"),
    ("PUT", "/directory/list/room/{roomId}"),
    ("GET", "/user/{userId}/rooms/{roomId}/tags"),
    ("PUT", "/user/{userId}/rooms/{roomId}/tags/{tag}"),
    ("DELETE", "/user/{userId}/rooms/{roomId}/tags/{tag}"),
    ("GET", "/user/{userId}/rooms/{roomId}/account_data/{type}"),
    ("PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}"),
];

/// Federation routes reported in either direction (digest §9 table): invites (v1 and v2) and
/// single-event fetches. The outbound listener has no endpoint table; [`federation_template`]
/// names its requests from this one.
const FEDERATION_ROUTES: &[(&str, &str)] = &[
    ("PUT", "/_matrix/federation/v1/invite/{roomId}/{eventId}"),
    ("PUT", "/_matrix/federation/v2/invite/{roomId}/{eventId}"),
    ("GET", "/_matrix/federation/v1/event/{eventId}"),
];

/// The template of a reported federation route `path` addresses, if any. `path` is the raw
/// request path (no query); a parameter matches any non-empty segment.
pub fn federation_template(method: &http::Method, path: &str) -> Option<&'static str> {
    if !path.starts_with("/_matrix/federation/") {
        return None;
    }
    FEDERATION_ROUTES
        .iter()
        .find(|(m, template)| *m == method.as_str() && matches_template(template, path))
        .map(|(_, template)| *template)
}

fn matches_template(template: &str, path: &str) -> bool {
    let mut expected = template.split('/');
    let mut got = path.split('/');
    loop {
        match (expected.next(), got.next()) {
            (None, None) => return true,
            (Some(e), Some(g)) if e.starts_with('{') => {
                if g.is_empty() {
                    return false;
                }
            }
            (Some(e), Some(g)) if e == g => {}
            _ => return false,
        }
    }
}

/// The operation to report for a request, if any. `template` is the matched endpoint
/// template (`/_matrix/client/v3/rooms/{roomId}/invite`), never the raw path.
pub fn operation_for(
    direction: Direction,
    method: &http::Method,
    template: &str,
    invitee: Invitee,
) -> Option<Operation> {
    let method = method.as_str();
    if let Some(rest) = template.strip_prefix("/_matrix/federation/") {
        let (_version, route) = rest.split_once('/')?;
        let route = format!("/{route}");
        return match (method, route.as_str(), direction) {
            ("PUT", "/invite/{roomId}/{eventId}", Direction::Inbound) => {
                Some(Operation::MpInviteOutsideOrganisationInviteReceiver)
            }
            ("PUT", "/invite/{roomId}/{eventId}", Direction::Outbound) => {
                Some(Operation::MpInviteOutsideOrganisationInviteSender)
            }
            ("GET", "/event/{eventId}", Direction::Inbound) => {
                Some(Operation::MpExchangeEventOutsideOrganisationReceiver)
            }
            ("GET", "/event/{eventId}", Direction::Outbound) => {
                Some(Operation::MpExchangeEventOutsideOrganisationSender)
            }
            _ => None,
        };
    }
    let rest = template.strip_prefix("/_matrix/client/")?;
    let (_version, route) = rest.split_once('/')?;
    let route = format!("/{route}");
    let invite_op = match invitee {
        Invitee::Local => Some(Operation::MpInviteWithinOrganisationInvite),
        Invitee::Remote => Some(Operation::MpInviteOutsideOrganisationInviteSender),
        Invitee::None => None,
    };
    match (method, route.as_str()) {
        ("GET", "/login") => Some(Operation::MpClientLoginSupportedLoginTypes),
        ("POST", "/login") => Some(Operation::MpClientLoginRequestAccessToken),
        ("POST", "/user/{userId}/openid/request_token") => {
            Some(Operation::MpClientLoginRequestOpenidToken)
        }
        ("POST", "/user_directory/search") => Some(Operation::MpInviteWithinOrganisationSearch),
        ("POST", "/rooms/{roomId}/invite") => invite_op,
        ("POST", "/createRoom") => invite_op.or(Some(Operation::MpExchangeEventWithinOrganisation)),
        (m, r) if EXCHANGE_WITHIN_ROUTES.contains(&(m, r)) => {
            Some(Operation::MpExchangeEventWithinOrganisation)
        }
        _ => None,
    }
}

/// The `message` object of a report; every field is always present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawDataMessage {
    #[serde(rename = "Inst-ID")]
    pub inst_id: String,
    #[serde(rename = "M-Dom")]
    pub m_dom: String,
    #[serde(rename = "UA-A")]
    pub ua_a: String,
    #[serde(rename = "UA-P")]
    pub ua_p: String,
    #[serde(rename = "UA-OS")]
    pub ua_os: String,
    #[serde(rename = "UA-OS-VERSION")]
    pub ua_os_version: String,
    #[serde(rename = "UA-PTV")]
    pub ua_ptv: String,
    #[serde(rename = "UA-PV")]
    pub ua_pv: String,
    #[serde(rename = "UA-cid")]
    pub ua_cid: String,
    #[serde(rename = "profOID")]
    pub prof_oid: String,
    #[serde(rename = "tID")]
    pub t_id: String,
    #[serde(rename = "Res")]
    pub res: u16,
    #[serde(rename = "sizeIn")]
    pub size_in: u64,
    #[serde(rename = "sizeOut")]
    pub size_out: u64,
}

/// One raw-data report as POSTed to the collector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawDataReport {
    /// When the operation started (taken before the upstream call), ISO 8601 UTC with ms.
    pub start: String,
    #[serde(rename = "durationInMs")]
    pub duration_in_ms: u64,
    pub operation: Operation,
    pub status: u16,
    pub message: RawDataMessage,
}

/// What the request path measured for one reported operation.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub operation: Operation,
    /// Taken before the upstream call.
    pub start: OffsetDateTime,
    /// Upstream call plus relay.
    pub duration: Duration,
    /// Upstream response status.
    pub status: u16,
    /// From the `useragent` request header (client API only; federation reports carry the
    /// defaults).
    pub user_agent: UserAgent,
    /// Request body bytes.
    pub size_in: u64,
    /// Relayed response body bytes.
    pub size_out: u64,
}

fn or_na(value: &str) -> String {
    if value.trim().is_empty() {
        NOT_AVAILABLE.to_owned()
    } else {
        value.to_owned()
    }
}

impl RawDataReport {
    /// Build a report from configuration and what the request path measured.
    pub fn build(config: &Config, m: &Measurement) -> Self {
        let ua = &m.user_agent;
        let start = m
            .start
            .to_offset(time::UtcOffset::UTC)
            .format(START_FORMAT)
            .unwrap_or_else(|_| NOT_AVAILABLE.to_owned());
        Self {
            start,
            duration_in_ms: u64::try_from(m.duration.as_millis()).unwrap_or(u64::MAX),
            operation: m.operation,
            status: m.status,
            message: RawDataMessage {
                inst_id: or_na(&config.raw_data.instance_id),
                m_dom: or_na(&config.homeserver.server_name),
                ua_a: ua.auspraegung.clone(),
                ua_p: ua.plattform.clone(),
                ua_os: ua.os.clone(),
                ua_os_version: ua.os_version.clone(),
                ua_ptv: ua.produkttypversion.clone(),
                ua_pv: ua.produktversion.clone(),
                ua_cid: ua.client_id.clone(),
                prof_oid: or_na(&config.raw_data.profession_oid),
                t_id: or_na(&config.raw_data.telematik_id),
                res: m.status,
                size_in: m.size_in,
                size_out: m.size_out,
            },
        }
    }
}

fn count(metrics: &Metrics, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics
            .outbox_reports
            .get_or_create(&OutcomeLabels { outcome })
            .inc_by(n);
    }
}

/// The request path's handle: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Reporter {
    tx: mpsc::Sender<NewOutboxItem>,
    metrics: Arc<Metrics>,
    /// When a drop was last logged (ms): under sustained overload one line per second is
    /// enough, the counter has the exact number.
    last_drop_log: Arc<AtomicI64>,
}

impl Reporter {
    /// Start the writer task that batches reports into the outbox. The task drains what is
    /// buffered when `shutdown` fires, then ends.
    pub fn spawn(
        store: Store,
        config: &RawDataConfig,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> (Reporter, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(WRITER_QUEUE);
        let batch = usize::try_from(config.batch_size.max(1)).unwrap_or(100);
        let handle = tokio::spawn(write_loop(store, rx, batch, metrics.clone(), shutdown));
        let reporter = Reporter {
            tx,
            metrics,
            last_drop_log: Arc::new(AtomicI64::new(i64::MIN)),
        };
        (reporter, handle)
    }

    /// Queue a report for delivery without waiting. When the writer is behind (queue
    /// full) or gone, the report is dropped, counted as `dropped` and logged.
    pub fn report(&self, report: RawDataReport) {
        let payload = match serde_json::to_string(&report) {
            Ok(p) => p,
            Err(e) => {
                count(&self.metrics, "dropped", 1);
                tracing::warn!(error = %e, "raw-data report not serialisable; dropped");
                return;
            }
        };
        let item = NewOutboxItem {
            idempotency_key: format!("{:032x}", rand::random::<u128>()),
            created_at: now_ms(),
            payload,
        };
        match self.tx.try_send(item) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.dropped("raw-data writer queue full (store slow or down); report dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.dropped("raw-data writer stopped; report dropped");
            }
        }
    }
}

impl Reporter {
    fn dropped(&self, why: &'static str) {
        count(&self.metrics, "dropped", 1);
        if observer::once_per_second(&self.last_drop_log) {
            tracing::warn!("{why}");
        }
    }
}

async fn write_loop(
    store: Store,
    mut rx: mpsc::Receiver<NewOutboxItem>,
    batch_size: usize,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) {
    let mut stop = shutdown.clone();
    loop {
        let first = tokio::select! {
            item = rx.recv() => item,
            () = stop.wait() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        write_batch(&store, &batch, &metrics, &shutdown).await;
    }
    // Shutdown: whatever is still buffered goes to the store before the task ends.
    rx.close();
    let mut rest = Vec::new();
    while let Some(item) = rx.recv().await {
        rest.push(item);
    }
    for chunk in rest.chunks(batch_size) {
        write_batch(&store, chunk, &metrics, &shutdown).await;
    }
}

/// Insert one batch, retrying while the store is down. Once shutdown was requested only a
/// few attempts are made, so stopping stays bounded.
async fn write_batch(
    store: &Store,
    batch: &[NewOutboxItem],
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let mut delay = Duration::from_millis(100);
    let mut attempts_after_shutdown = 0;
    loop {
        match store.enqueue_reports(batch).await {
            Ok(n) => {
                count(metrics, "queued", n);
                return;
            }
            Err(e) => {
                if shutdown.is_triggered() {
                    attempts_after_shutdown += 1;
                    if attempts_after_shutdown >= 3 {
                        count(metrics, "dropped", batch.len() as u64);
                        tracing::error!(error = %e, reports = batch.len(), "raw-data outbox unwritable at shutdown; reports dropped");
                        return;
                    }
                }
                tracing::warn!(error = %e, reports = batch.len(), "raw-data outbox write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Delay before the next attempt of a report that has failed `attempts` times:
/// `retry_initial · 2^attempts`, at most `retry_max`.
pub fn backoff(config: &RawDataConfig, attempts: i64) -> Duration {
    let shift = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    config
        .retry_initial
        .saturating_mul(1u32 << shift)
        .min(config.retry_max)
}

/// Start the background sender. Only the replica holding the [`SENDER_LOCK`] sends; the
/// others check now and then whether they can take over.
pub fn spawn_sender(
    store: Store,
    config: RawDataConfig,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(DELIVERY_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "raw-data sender: cannot build the HTTP client; not sending");
                return;
            }
        };
        let mut stop = shutdown.clone();
        while !shutdown.is_triggered() {
            match store.try_lock(SENDER_LOCK).await {
                Ok(Some(guard)) => {
                    send_while_holding(&store, &client, &config, &metrics, &shutdown).await;
                    if let Err(e) = guard.release().await {
                        tracing::warn!(error = %e, "raw-data sender: releasing the lock failed");
                    }
                }
                Ok(None) => {
                    tokio::select! {
                        () = tokio::time::sleep(LOCK_RETRY) => {}
                        () = stop.wait() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "raw-data sender: store unavailable");
                    tokio::select! {
                        () = tokio::time::sleep(LOCK_RETRY.min(config.retry_max)) => {}
                        () = stop.wait() => {}
                    }
                }
            }
        }
    })
}

/// Send rounds until shutdown. Store errors are retried with backoff; after a run of them
/// the lock is given up (its connection may be gone) and re-taken by the caller.
async fn send_while_holding(
    store: &Store,
    client: &reqwest::Client,
    config: &RawDataConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) {
    let idle = config.retry_initial.min(Duration::from_secs(1));
    let mut stop = shutdown.clone();
    let mut store_failures = 0u32;
    while !shutdown.is_triggered() {
        let pause = match send_round(store, client, config, metrics, shutdown).await {
            Ok(RoundOutcome {
                claimed,
                unreachable,
            }) => {
                store_failures = 0;
                if claimed == 0 || unreachable {
                    idle
                } else {
                    Duration::ZERO
                }
            }
            Err(e) => {
                store_failures += 1;
                tracing::warn!(error = %e, "raw-data sender: store error");
                if store_failures >= 5 {
                    return;
                }
                backoff(config, i64::from(store_failures))
            }
        };
        if !pause.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.wait() => {}
            }
        }
    }
}

struct RoundOutcome {
    claimed: usize,
    unreachable: bool,
}

/// Why one delivery failed.
#[derive(Debug, thiserror::Error)]
enum DeliveryError {
    #[error("collector answered {0}")]
    Status(reqwest::StatusCode),
    #[error("collector unreachable: {0}")]
    Unreachable(String),
}

async fn deliver(
    client: &reqwest::Client,
    url: &url::Url,
    row: &OutboxRow,
) -> Result<(), DeliveryError> {
    let response = client
        .post(url.clone())
        .header(IDEMPOTENCY_HEADER, &row.idempotency_key)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(row.payload.clone())
        .send()
        .await
        .map_err(|e| DeliveryError::Unreachable(e.to_string()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status(status))
    }
}

async fn send_round(
    store: &Store,
    client: &reqwest::Client,
    config: &RawDataConfig,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Result<RoundOutcome, crate::store::StoreError> {
    let now = now_ms();
    let expired = store
        .drop_expired_reports(now.saturating_sub(crate::store::duration_ms(config.retention)))
        .await?;
    if expired > 0 {
        count(metrics, "expired", expired);
        tracing::warn!(
            reports = expired,
            "raw-data reports past retention dropped undelivered"
        );
    }
    store
        .prune_delivered_reports(now.saturating_sub(crate::store::duration_ms(DELIVERED_KEEP)))
        .await?;
    let rows = store
        .claim_due_reports(now, config.batch_size.max(1), config.claim_lease)
        .await?;
    let claimed = rows.len();
    let mut unreachable: Option<i64> = None;
    let mut seen = HashSet::new();
    for row in rows {
        if !seen.insert(row.id) {
            continue;
        }
        if let Some(retry_at) = unreachable {
            store.release_report(row.id, retry_at).await?;
            continue;
        }
        if shutdown.is_triggered() {
            store.release_report(row.id, now_ms()).await?;
            continue;
        }
        match deliver(client, &config.url, &row).await {
            Ok(()) => {
                store.mark_report_delivered(row.id, now_ms()).await?;
                count(metrics, "delivered", 1);
            }
            Err(e) => {
                let retry_at = now_ms()
                    .saturating_add(crate::store::duration_ms(backoff(config, row.attempts)));
                store
                    .mark_report_failed(row.id, &e.to_string(), retry_at)
                    .await?;
                count(metrics, "failed", 1);
                if matches!(e, DeliveryError::Unreachable(_)) {
                    tracing::debug!(error = %e, "raw-data collector unreachable; backing off");
                    unreachable = Some(retry_at);
                }
            }
        }
    }
    let depth = store.outbox_depth().await?;
    metrics
        .outbox_depth
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    Ok(RoundOutcome {
        claimed,
        unreachable: unreachable.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_serialise_as_reference_enum_names() {
        let json = serde_json::to_string(&Operation::MpExchangeEventWithinOrganisation).unwrap();
        assert_eq!(json, "\"MP_EXCHANGE_EVENT_WITHIN_ORGANISATION\"");
        let json = serde_json::to_string(&Operation::MpClientLoginRequestOpenidToken).unwrap();
        assert_eq!(json, "\"MP_CLIENT_LOGIN_REQUEST_OPENID_TOKEN\"");
    }

    #[test]
    fn invite_operation_depends_on_invitee_domain() {
        let post = http::Method::POST;
        let t = "/_matrix/client/v3/rooms/{roomId}/invite";
        assert_eq!(
            operation_for(Direction::Inbound, &post, t, Invitee::Local),
            Some(Operation::MpInviteWithinOrganisationInvite)
        );
        assert_eq!(
            operation_for(Direction::Inbound, &post, t, Invitee::Remote),
            Some(Operation::MpInviteOutsideOrganisationInviteSender)
        );
        assert_eq!(
            operation_for(Direction::Inbound, &post, t, Invitee::None),
            None
        );
    }

    #[test]
    fn create_room_without_invitee_is_an_exchange_within() {
        let op = operation_for(
            Direction::Inbound,
            &http::Method::POST,
            "/_matrix/client/v3/createRoom",
            Invitee::None,
        );
        assert_eq!(op, Some(Operation::MpExchangeEventWithinOrganisation));
    }

    #[test]
    fn federation_direction_selects_sender_or_receiver() {
        let get = http::Method::GET;
        let t = "/_matrix/federation/v1/event/{eventId}";
        assert_eq!(
            operation_for(Direction::Inbound, &get, t, Invitee::None),
            Some(Operation::MpExchangeEventOutsideOrganisationReceiver)
        );
        assert_eq!(
            operation_for(Direction::Outbound, &get, t, Invitee::None),
            Some(Operation::MpExchangeEventOutsideOrganisationSender)
        );
        let invite = "/_matrix/federation/v2/invite/{roomId}/{eventId}";
        assert_eq!(
            operation_for(
                Direction::Inbound,
                &http::Method::PUT,
                invite,
                Invitee::Local
            ),
            Some(Operation::MpInviteOutsideOrganisationInviteReceiver)
        );
    }

    #[test]
    fn federation_templates_name_the_reported_outbound_routes() {
        let put = http::Method::PUT;
        let get = http::Method::GET;
        for (method, path, template) in [
            (
                &put,
                "/_matrix/federation/v2/invite/%21r%3Ahs.test/%24e",
                Some("/_matrix/federation/v2/invite/{roomId}/{eventId}"),
            ),
            (
                &put,
                "/_matrix/federation/v1/invite/%21r%3Ahs.test/%24e",
                Some("/_matrix/federation/v1/invite/{roomId}/{eventId}"),
            ),
            (
                &get,
                "/_matrix/federation/v1/event/%24e",
                Some("/_matrix/federation/v1/event/{eventId}"),
            ),
            (&get, "/_matrix/federation/v1/invite/%21r/%24e", None),
            (&put, "/_matrix/federation/v2/invite/%21r/", None),
            (&put, "/_matrix/federation/v2/invite/%21r/%24e/x", None),
            (&get, "/_matrix/federation/v1/event/", None),
            (&get, "/_matrix/federation/v1/event_auth/%21r/%24e", None),
            (&put, "/_matrix/federation/v1/send/1", None),
            (&get, "/_matrix/client/v3/rooms/%21r/event/%24e", None),
        ] {
            assert_eq!(
                federation_template(method, path),
                template,
                "{method} {path}"
            );
        }
        for (method, template) in FEDERATION_ROUTES {
            let method = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert!(
                operation_for(Direction::Outbound, &method, template, Invitee::None).is_some(),
                "{template} is matched outbound but never reported"
            );
        }
    }

    /// The reported client routes are spelled as the v1.11 endpoint table spells them (a
    /// typo would silently never match).
    #[test]
    fn every_reported_client_route_is_a_served_endpoint() {
        let table = include_str!("matrix/v1_11_endpoints.tsv");
        let served: HashSet<(&str, &str)> = table
            .lines()
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let _api = cols.next()?;
                Some((cols.next()?, cols.next()?))
            })
            .collect();
        for (method, route) in EXCHANGE_WITHIN_ROUTES {
            let found = ["v1", "v3"].iter().any(|version| {
                served.contains(&(
                    *method,
                    format!("/_matrix/client/{version}{route}").as_str(),
                ))
            });
            assert!(found, "{method} {route} is not in the v1.11 table");
        }
    }

    #[test]
    fn sync_and_media_are_not_reported() {
        let get = http::Method::GET;
        assert_eq!(
            operation_for(
                Direction::Inbound,
                &get,
                "/_matrix/client/v3/sync",
                Invitee::None
            ),
            None
        );
        assert_eq!(
            operation_for(
                Direction::Inbound,
                &get,
                "/_matrix/client/v1/media/download/{serverName}/{mediaId}",
                Invitee::None
            ),
            None
        );
        assert_eq!(
            operation_for(
                Direction::Inbound,
                &http::Method::PUT,
                "/_matrix/federation/v1/send/{txnId}",
                Invitee::None
            ),
            None
        );
    }

    #[test]
    fn report_has_every_field_and_inst_id_from_config() {
        let mut config = Config::default();
        config.raw_data.instance_id = "inst-7".to_owned();
        config.raw_data.profession_oid = "1.2.276.0.76.4.50".to_owned();
        config.homeserver.server_name = "home.de".to_owned();
        let start = time::macros::datetime!(2026-01-01 10:00:00.123 UTC);
        let report = RawDataReport::build(
            &config,
            &Measurement {
                operation: Operation::MpExchangeEventWithinOrganisation,
                start,
                duration: Duration::from_millis(42),
                status: 200,
                user_agent: UserAgent::default(),
                size_in: 120,
                size_out: 345,
            },
        );
        let value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["start"], "2026-01-01T10:00:00.123Z");
        assert_eq!(value["durationInMs"], 42);
        assert_eq!(value["operation"], "MP_EXCHANGE_EVENT_WITHIN_ORGANISATION");
        let message = value["message"].as_object().unwrap();
        assert_eq!(message["Inst-ID"], "inst-7");
        assert_eq!(message["M-Dom"], "home.de");
        assert_eq!(message["tID"], NOT_AVAILABLE);
        assert_eq!(message["Res"], 200);
        for key in [
            "Inst-ID",
            "M-Dom",
            "UA-A",
            "UA-P",
            "UA-OS",
            "UA-OS-VERSION",
            "UA-PTV",
            "UA-PV",
            "UA-cid",
            "profOID",
            "tID",
            "Res",
            "sizeIn",
            "sizeOut",
        ] {
            assert!(message.contains_key(key), "missing {key}");
        }
        assert_eq!(message.len(), 14);
    }

    #[test]
    fn reports_are_dropped_and_counted_when_the_writer_cannot_take_them() {
        let metrics = Metrics::new();
        let (tx, rx) = mpsc::channel(1);
        let reporter = Reporter {
            tx,
            metrics: metrics.clone(),
            last_drop_log: Arc::new(AtomicI64::new(i64::MIN)),
        };
        let config = Config::default();
        let m = Measurement {
            operation: Operation::MpClientLoginRequestAccessToken,
            start: OffsetDateTime::now_utc(),
            duration: Duration::ZERO,
            status: 200,
            user_agent: UserAgent::default(),
            size_in: 0,
            size_out: 0,
        };
        reporter.report(RawDataReport::build(&config, &m));
        reporter.report(RawDataReport::build(&config, &m)); // queue (capacity 1) full
        drop(rx);
        reporter.report(RawDataReport::build(&config, &m)); // writer gone
        let text = metrics.encode();
        assert!(
            text.contains("timproxy_outbox_reports_total{outcome=\"dropped\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let config = RawDataConfig {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(700),
            ..RawDataConfig::default()
        };
        assert_eq!(backoff(&config, 0), Duration::from_millis(100));
        assert_eq!(backoff(&config, 2), Duration::from_millis(400));
        assert_eq!(backoff(&config, 3), Duration::from_millis(700));
        assert_eq!(backoff(&config, 1000), Duration::from_millis(700));
    }
}
