//! Turns finished requests of both listeners into raw-data reports: only the operations the
//! spec lists ([`operation_for`]), and only requests the homeserver or the remote server
//! answered (the reference reports after relaying an answer; a refusal by the proxy is no
//! measurement of the operation).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use http::HeaderValue;

use super::useragent::Parsed;
use super::{Direction, Invitee, Measurement, RawDataReport, Reporter, UserAgent, operation_for};
use crate::config::Config;
use crate::inbound::{ObservedRequest, RequestObserver};
use crate::metrics::ReasonLabels;
use crate::store::now_ms;

/// The raw-data [`RequestObserver`] of one configuration.
#[derive(Debug)]
pub struct Observer {
    config: Arc<Config>,
    reporter: Reporter,
    /// When a malformed `useragent` was last logged (ms): one line per second is enough, the
    /// counter has the exact number.
    last_warning: AtomicI64,
}

impl Observer {
    pub fn new(config: Arc<Config>, reporter: Reporter) -> Self {
        Self {
            config,
            reporter,
            last_warning: AtomicI64::new(i64::MIN),
        }
    }

    /// The client's description of itself; malformations are counted and (rate-limited)
    /// logged, never the header's value.
    fn user_agent(&self, header: Option<&HeaderValue>, operation: &str) -> UserAgent {
        let Parsed {
            agent,
            malformations,
        } = UserAgent::parse(header.map(HeaderValue::as_bytes));
        for malformation in &malformations {
            self.reporter
                .metrics
                .useragent_invalid
                .get_or_create(&ReasonLabels {
                    reason: malformation.reason(),
                })
                .inc();
        }
        if let Some(first) = malformations.first()
            && once_per_second(&self.last_warning)
        {
            let reasons: Vec<&str> = malformations.iter().map(|m| m.reason()).collect();
            tracing::warn!(
                reason = first.reason(),
                reasons = ?reasons,
                operation,
                "client sent a malformed useragent header; its fields are reported as n/a"
            );
        }
        agent
    }
}

impl RequestObserver for Observer {
    fn observe(&self, obs: &ObservedRequest) {
        if !obs.forwarded {
            return;
        }
        let invitee = match &obs.invitee_server {
            None => Invitee::None,
            Some(server) if *server == self.config.homeserver.server_name => Invitee::Local,
            Some(_) => Invitee::Remote,
        };
        let Some(operation) =
            operation_for(obs.direction, &obs.method, &obs.endpoint_template, invitee)
        else {
            return;
        };
        // Federation requests carry no client description (the reference reports defaults).
        let user_agent = if obs.is_federation || obs.direction == Direction::Outbound {
            UserAgent::default()
        } else {
            self.user_agent(obs.useragent.as_ref(), operation.code())
        };
        let measurement = Measurement {
            operation,
            start: obs.started,
            duration: obs.duration,
            status: obs.status,
            user_agent,
            size_in: obs.size_in.unwrap_or(0),
            size_out: obs.size_out.unwrap_or(0),
        };
        self.reporter
            .report(RawDataReport::build(&self.config, &measurement));
    }
}

/// Whether a rate-limited line may be logged now (at most one per second per `last`).
pub(super) fn once_per_second(last: &AtomicI64) -> bool {
    let now = now_ms();
    let before = last.load(Ordering::Relaxed);
    now.saturating_sub(before) >= 1000
        && last
            .compare_exchange(before, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::mpsc;

    use super::*;
    use crate::metrics::Metrics;

    fn observer(metrics: Arc<Metrics>) -> (Observer, mpsc::Receiver<crate::store::NewOutboxItem>) {
        let (tx, rx) = mpsc::channel(16);
        let reporter = Reporter {
            tx,
            metrics,
            last_drop_log: Arc::new(AtomicI64::new(i64::MIN)),
        };
        let mut config = Config::default();
        config.homeserver.server_name = "home.de".to_owned();
        (Observer::new(Arc::new(config), reporter), rx)
    }

    fn request(template: &str, method: http::Method) -> ObservedRequest {
        ObservedRequest {
            endpoint_template: template.to_owned(),
            method,
            status: 200,
            started: time::OffsetDateTime::now_utc(),
            duration: Duration::from_millis(3),
            size_in: Some(10),
            size_out: Some(20),
            useragent: None,
            inviter_server: None,
            invitee_server: None,
            is_federation: false,
            direction: Direction::Inbound,
            forwarded: true,
        }
    }

    fn reported(rx: &mut mpsc::Receiver<crate::store::NewOutboxItem>) -> Option<RawDataReport> {
        rx.try_recv()
            .ok()
            .map(|item| serde_json::from_str(&item.payload).unwrap())
    }

    #[test]
    fn a_malformed_useragent_is_counted_by_reason_and_the_report_still_goes_out() {
        let metrics = Metrics::new();
        let (observer, mut rx) = observer(metrics.clone());
        let mut obs = request("/_matrix/client/v3/login", http::Method::POST);
        obs.useragent = Some(HeaderValue::from_static("Mozilla/5.0"));
        observer.observe(&obs);
        obs.useragent = Some(HeaderValue::from_static(r#"{"OS":1,"Plattform":"tv"}"#));
        observer.observe(&obs);
        for _ in 0..2 {
            let report = reported(&mut rx).expect("report lost");
            assert_eq!(report.message.ua_os, "n/a");
        }
        let text = metrics.encode();
        for reason in ["not_json", "wrong_type", "unknown_value"] {
            assert!(
                text.contains(&format!(
                    "timproxy_useragent_invalid_total{{reason=\"{reason}\"}} 1"
                )),
                "{reason}: {text}"
            );
        }
    }

    #[test]
    fn a_wellformed_useragent_fills_the_report_without_a_warning() {
        let metrics = Metrics::new();
        let (observer, mut rx) = observer(metrics.clone());
        let mut obs = request("/_matrix/client/v3/login", http::Method::GET);
        obs.useragent = Some(HeaderValue::from_static(
            r#"{"Auspraegung":"Org-Admin-Client","Plattform":"web","OS":"Linux","OS-Version":"6.1","Produkttypversion":"1.1","Produktversion":"3.4","client_id":"cid"}"#,
        ));
        observer.observe(&obs);
        let message = reported(&mut rx).expect("no report").message;
        assert_eq!(
            [
                message.ua_a.as_str(),
                &message.ua_p,
                &message.ua_os,
                &message.ua_os_version,
                &message.ua_ptv,
                &message.ua_pv,
                &message.ua_cid
            ],
            [
                "Org-Admin-Client",
                "web",
                "Linux",
                "6.1",
                "1.1",
                "3.4",
                "cid"
            ]
        );
        assert!(!metrics.encode().contains("useragent_invalid_total{"));
    }

    #[test]
    fn federation_and_outbound_reports_ignore_a_useragent() {
        let metrics = Metrics::new();
        let (observer, mut rx) = observer(metrics.clone());
        let header = HeaderValue::from_static(r#"{"OS":"Linux"}"#);
        let mut inbound = request("/_matrix/federation/v1/event/{eventId}", http::Method::GET);
        inbound.is_federation = true;
        inbound.useragent = Some(header.clone());
        observer.observe(&inbound);
        let mut outbound = inbound.clone();
        outbound.direction = Direction::Outbound;
        observer.observe(&outbound);
        let first = reported(&mut rx).expect("inbound event fetch not reported");
        let second = reported(&mut rx).expect("outbound event fetch not reported");
        assert_eq!(
            first.operation,
            super::super::Operation::MpExchangeEventOutsideOrganisationReceiver
        );
        assert_eq!(
            second.operation,
            super::super::Operation::MpExchangeEventOutsideOrganisationSender
        );
        assert_eq!(first.message.ua_os, "n/a");
        assert_eq!(second.message.ua_os, "n/a");
    }

    #[test]
    fn requests_the_proxy_answered_itself_are_not_reported() {
        let (observer, mut rx) = observer(Metrics::new());
        let mut obs = request("/_matrix/client/v3/createRoom", http::Method::POST);
        obs.forwarded = false;
        obs.status = 403;
        observer.observe(&obs);
        assert!(reported(&mut rx).is_none());
        obs.forwarded = true;
        observer.observe(&obs);
        assert!(reported(&mut rx).is_some());
    }

    #[test]
    fn unreported_routes_produce_nothing() {
        let (observer, mut rx) = observer(Metrics::new());
        observer.observe(&request("/_matrix/client/v3/sync", http::Method::GET));
        assert!(reported(&mut rx).is_none());
    }
}
