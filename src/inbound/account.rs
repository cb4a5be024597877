//! Phase 6, account: what is left of a request once it is answered: the request counter of
//! its endpoint and status, and, when raw-data reports are on, one [`ObservedRequest`] for
//! the [`RequestObserver`].
//!
//! Counting runs for every request, so its counter is found by the template's address rather
//! than by hashing label strings ([`RequestCounters`]); the raw-data facts are taken only when
//! an observer is installed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request};
use prometheus_client::metrics::counter::Counter;

use super::answer::Answer;
use super::classify::Addressed;
use super::forward::Body;
use super::{InboundState, LISTENER};
use crate::framing::length_field;
use crate::metrics::Metrics;
use crate::rawdata::useragent::HEADER as USERAGENT_HEADER;

/// One finished request, for raw-data (performance) reports.
#[derive(Debug, Clone)]
pub struct ObservedRequest {
    pub endpoint_template: String,
    pub method: Method,
    pub status: u16,
    pub started: time::OffsetDateTime,
    /// Until the response head was ready (bodies stream afterwards).
    pub duration: Duration,
    pub size_in: Option<u64>,
    pub size_out: Option<u64>,
    /// The raw `useragent` header (the clients' JSON description of themselves; not
    /// `User-Agent`), parsed only when the request is reported.
    pub useragent: Option<HeaderValue>,
    /// Server names of inviter and invitee for invites and createRoom with an invitee.
    pub inviter_server: Option<String>,
    pub invitee_server: Option<String>,
    pub is_federation: bool,
    /// Which listener saw the request.
    pub direction: crate::rawdata::Direction,
    /// Whether the status is the upstream's answer (the request passed the rules and was
    /// relayed), not one the proxy gave itself (a rejection, a local answer, an unreachable
    /// upstream).
    pub forwarded: bool,
}

/// Receives every finished request (the raw-data reporter implements it). The inbound and the
/// outbound listener both call it.
pub trait RequestObserver: Send + Sync {
    fn observe(&self, obs: &ObservedRequest);
}

/// What rule evaluation learned about a request, for observers.
#[derive(Debug, Default, Clone)]
pub(crate) struct RequestNotes {
    pub inviter_server: Option<String>,
    pub invitee_server: Option<String>,
}

/// What raw-data reports need from the request, taken before it is consumed.
pub(super) struct RequestFacts {
    observer: Arc<dyn RequestObserver>,
    started: time::OffsetDateTime,
    clock: Instant,
    method: Method,
    size_in: Option<u64>,
    useragent: Option<HeaderValue>,
}

impl RequestFacts {
    /// Only a raw-data observer needs timestamps and header copies; without one the request
    /// path skips them.
    pub(super) fn take(state: &InboundState, req: &Request<Body>) -> Option<Self> {
        let observer = state.observer()?;
        Some(RequestFacts {
            observer,
            started: time::OffsetDateTime::now_utc(),
            clock: Instant::now(),
            method: req.method().clone(),
            size_in: length_field(req.headers()),
            useragent: req.headers().get(USERAGENT_HEADER).cloned(),
        })
    }
}

/// Phase 6: count the request by endpoint and status, and tell the raw-data observer.
pub(super) fn account(
    state: &InboundState,
    endpoint: Addressed<'_>,
    facts: Option<RequestFacts>,
    notes: RequestNotes,
    forwarded: bool,
    answer: &Answer,
) {
    let status = answer.status().as_u16();
    state
        .request_counters
        .count(&state.metrics, endpoint.template, status);
    if let Some(facts) = facts {
        let size_out = answer.content_length();
        facts.observer.observe(&ObservedRequest {
            endpoint_template: endpoint.template.to_owned(),
            method: facts.method,
            status,
            started: facts.started,
            duration: facts.clock.elapsed(),
            size_in: facts.size_in,
            size_out,
            useragent: facts.useragent,
            inviter_server: notes.inviter_server,
            invitee_server: notes.invitee_server,
            is_federation: endpoint.is_federation,
            direction: crate::rawdata::Direction::Inbound,
            forwarded,
        });
    }
}

/// `timproxy_requests_total` counters of this listener by endpoint template and status.
///
/// Templates are borrowed from the endpoint table or are constants, so they live as long as the
/// listener and their address identifies them: finding a counter hashes two numbers, where the
/// metric family hashed and copied the template on every request.
#[derive(Debug, Default)]
pub(super) struct RequestCounters {
    by_template: RwLock<HashMap<(usize, usize, u16), Counter, BuildAddressHasher>>,
}

/// Hashes the integer keys of [`RequestCounters`] with one multiply each; they are addresses
/// chosen by the allocator, not by clients, so a keyed hash buys nothing there.
#[derive(Debug, Default, Clone, Copy)]
struct BuildAddressHasher;

impl std::hash::BuildHasher for BuildAddressHasher {
    type Hasher = AddressHasher;
    fn build_hasher(&self) -> AddressHasher {
        AddressHasher(0)
    }
}

#[derive(Debug)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u16(&mut self, n: u16) {
        self.write_u64(u64::from(n));
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl RequestCounters {
    /// Count one request; the counter is created (and registered) on first use.
    fn count(&self, metrics: &Metrics, template: &str, status: u16) {
        let key = (template.as_ptr() as usize, template.len(), status);
        if let Ok(known) = self.by_template.read()
            && let Some(counter) = known.get(&key)
        {
            counter.inc();
            return;
        }
        let counter = metrics.request_counter(LISTENER, template, status);
        counter.inc();
        if let Ok(mut known) = self.by_template.write() {
            known.insert(key, counter);
        }
    }
}
