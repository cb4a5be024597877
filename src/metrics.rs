//! Prometheus metrics shared by all listeners and background jobs.
//!
//! Label values are bounded sets (listener names, endpoint templates, rule ids, status
//! codes) — never raw paths, user ids or tokens — so the series count stays bounded.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: &'static str,
    pub endpoint: String,
    pub status: u16,
}

/// A rule outcome: which listener, which rule, and whether it took effect (`enforce`) or was
/// only reported (`shadow`, see `policy.shadow`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectionLabels {
    pub listener: &'static str,
    pub rule: &'static str,
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// Why an input was not taken as sent (a bounded set per metric).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// All metrics of one process.
pub struct Metrics {
    registry: Registry,
    /// Requests by listener, endpoint template and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Rejections by listener, TIM rule id and mode.
    pub rejections: Family<RejectionLabels, Counter>,
    /// Requests refused for their HTTP/1 head or framing, by listener and reason (also counted
    /// in `rejections` under rule `http-parse`).
    pub malformed_requests: Family<ListenerReasonLabels, Counter>,
    /// Request rewrites (createRoom `m.federate`, room version) by listener, rule and mode.
    pub rewrites: Family<RejectionLabels, Counter>,
    /// Upstream latency (time to response head) by listener.
    pub upstream_seconds: Family<ListenerLabels, Histogram>,
    /// Leaf certificates currently cached.
    pub cert_cache_size: Gauge,
    /// Leaf certificates minted.
    pub cert_mints: Counter,
    /// Federation list version, age and size.
    pub federation_list_version: Gauge,
    pub federation_list_age_seconds: Gauge,
    pub federation_list_domains: Gauge,
    /// Federation list fetches by outcome (updated, not_modified, rejected, error).
    pub federation_fetches: Family<OutcomeLabels, Counter>,
    /// OCSP checks of the federation-list signer by outcome (good, revoked, unknown, error;
    /// `cached` when a current answer was reused).
    pub federation_ocsp: Family<OutcomeLabels, Counter>,
    /// Raw-data outbox: undelivered reports, and reports by outcome.
    pub outbox_depth: Gauge,
    pub outbox_reports: Family<OutcomeLabels, Counter>,
    /// Malformed `useragent` request headers by reason (the report goes out with `n/a`).
    pub useragent_invalid: Family<ReasonLabels, Counter>,
    /// whoami cache lookups by outcome (hit, miss).
    pub whoami_cache: Family<OutcomeLabels, Counter>,
    /// Orphaned-room cleanup decisions by outcome.
    pub cleanup_rooms: Family<OutcomeLabels, Counter>,
    /// Open client connections by listener.
    pub open_connections: Family<ListenerLabels, Gauge>,
    /// Times a listener had all `max_connections` slots taken and new connections had to
    /// wait in the accept backlog.
    pub connection_limit_reached: Family<ListenerLabels, Counter>,
    /// Configuration reloads by outcome (applied, unchanged, rejected).
    pub config_reloads: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("timproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests by listener, endpoint template and status",
            requests.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rejections",
            "Requests rejected by a TIM rule (mode=shadow: would have been, forwarded unchanged)",
            rejections.clone(),
        );
        let rewrites = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rewrites",
            "Requests rewritten by a TIM rule (mode=shadow: would have been, forwarded unchanged)",
            rewrites.clone(),
        );
        let upstream_seconds = Family::<ListenerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "upstream_seconds",
            "Upstream time to response head",
            upstream_seconds.clone(),
        );
        let cert_cache_size = Gauge::default();
        registry.register(
            "cert_cache_size",
            "Leaf certificates cached",
            cert_cache_size.clone(),
        );
        let cert_mints = Counter::default();
        registry.register("cert_mints", "Leaf certificates minted", cert_mints.clone());
        let federation_list_version = Gauge::default();
        registry.register(
            "federation_list_version",
            "Version of the loaded federation list",
            federation_list_version.clone(),
        );
        let federation_list_age_seconds = Gauge::default();
        registry.register(
            "federation_list_age_seconds",
            "Age of the loaded federation list",
            federation_list_age_seconds.clone(),
        );
        let federation_list_domains = Gauge::default();
        registry.register(
            "federation_list_domains",
            "Domains in the loaded federation list",
            federation_list_domains.clone(),
        );
        let federation_fetches = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "federation_fetches",
            "Federation list fetches by outcome",
            federation_fetches.clone(),
        );
        let federation_ocsp = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "federation_ocsp_checks",
            "OCSP checks of the federation-list signer by outcome",
            federation_ocsp.clone(),
        );
        let outbox_depth = Gauge::default();
        registry.register(
            "outbox_depth",
            "Undelivered raw-data reports",
            outbox_depth.clone(),
        );
        let outbox_reports = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "outbox_reports",
            "Raw-data reports by outcome",
            outbox_reports.clone(),
        );
        let useragent_invalid = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "useragent_invalid",
            "Malformed useragent request headers of reported operations, by reason",
            useragent_invalid.clone(),
        );
        let whoami_cache = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "whoami_cache",
            "Access-token cache lookups by outcome",
            whoami_cache.clone(),
        );
        let cleanup_rooms = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "cleanup_rooms",
            "Orphaned-room cleanup decisions",
            cleanup_rooms.clone(),
        );
        let malformed_requests = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "malformed_requests",
            "Requests refused for their HTTP/1 head or framing, by reason",
            malformed_requests.clone(),
        );
        let open_connections = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "open_connections",
            "Open client connections",
            open_connections.clone(),
        );
        let connection_limit_reached = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "connection_limit_reached",
            "Times all connection slots of a listener were taken",
            connection_limit_reached.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Configuration reloads by outcome",
            config_reloads.clone(),
        );
        Arc::new(Self {
            registry,
            requests,
            rejections,
            malformed_requests,
            rewrites,
            upstream_seconds,
            cert_cache_size,
            cert_mints,
            federation_list_version,
            federation_list_age_seconds,
            federation_list_domains,
            federation_fetches,
            federation_ocsp,
            outbox_depth,
            outbox_reports,
            useragent_invalid,
            whoami_cache,
            cleanup_rooms,
            open_connections,
            connection_limit_reached,
            config_reloads,
        })
    }

    /// Count an enforced rejection by rule.
    pub fn reject(&self, listener: &'static str, rule: &'static str) {
        self.reject_in_mode(listener, rule, "enforce");
    }

    /// Count a rejection by rule, enforced (`"enforce"`) or shadowed (`"shadow"`).
    pub fn reject_in_mode(&self, listener: &'static str, rule: &'static str, mode: &'static str) {
        self.rejections
            .get_or_create(&RejectionLabels {
                listener,
                rule,
                mode,
            })
            .inc();
    }

    /// Count a rewrite by rule, applied (`"enforce"`) or shadowed (`"shadow"`).
    pub fn rewrite(&self, listener: &'static str, rule: &'static str, mode: &'static str) {
        self.rewrites
            .get_or_create(&RejectionLabels {
                listener,
                rule,
                mode,
            })
            .inc();
    }

    /// Count a finished request.
    pub fn request(&self, listener: &'static str, endpoint: &str, status: u16) {
        self.request_counter(listener, endpoint, status).inc();
    }

    /// The counter [`Metrics::request`] increments, for callers that keep it.
    pub fn request_counter(&self, listener: &'static str, endpoint: &str, status: u16) -> Counter {
        self.requests
            .get_or_create(&RequestLabels {
                listener,
                endpoint: endpoint.to_owned(),
                status,
            })
            .clone()
    }

    pub fn outcome(family: &Family<OutcomeLabels, Counter>, outcome: &'static str) {
        family.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Publish the federation list's version, size and age (-1 = no list loaded).
    pub fn observe_federation_list(&self, state: &crate::federation::list::ListState) {
        self.federation_list_version.set(state.version.unwrap_or(0));
        self.federation_list_domains
            .set(i64::try_from(state.domains).unwrap_or(i64::MAX));
        self.federation_list_age_seconds.set(
            state
                .age_seconds
                .and_then(|s| i64::try_from(s).ok())
                .unwrap_or(-1),
        );
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_is_exposed_with_rule_label() {
        let m = Metrics::new();
        m.reject("inbound", "A_25368-01");
        m.reject_in_mode("inbound", "A_28271", "shadow");
        m.rewrite("inbound", "A_26515-01", "enforce");
        let text = m.encode();
        assert!(
            text.contains(
                r#"timproxy_rejections_total{listener="inbound",rule="A_28271",mode="shadow"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"timproxy_rewrites_total{listener="inbound",rule="A_26515-01",mode="enforce"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"timproxy_rejections_total{listener="inbound",rule="A_25368-01",mode="enforce"} 1"#
            ),
            "{text}"
        );
    }
}
