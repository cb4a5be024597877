//! The accept loop both proxy listeners share: accept connections until shutdown, each in a
//! task of its own counted in the open-connections gauge, then stop accepting, tell the open
//! connections to drain, and wait a bounded time for them before closing the rest.
//!
//! What differs between the listeners is a parameter: the name, the connection limit (only
//! the inbound listener has one, `inbound.max_connections`), how long draining may take, and
//! how a connection is served.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::metrics::{ListenerLabels, Metrics};
use crate::shutdown::Shutdown;

/// At most one "connection limit reached" log line per this interval.
const LIMIT_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long to wait after a failed accept (out of file descriptors and similar) before the
/// next: the listener stays up without spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// One listener's specifics.
pub(crate) struct Listener<'m> {
    /// Its name in metrics and logs.
    pub name: &'static str,
    pub metrics: &'m Metrics,
    /// At most this many connections at a time; `None`: no limit.
    pub max_connections: Option<usize>,
}

/// Accept connections on `listener` until `shutdown` fires; `serve` makes each connection's
/// task from the stream, the peer address and the drain signal, which fires once the listener
/// stops accepting. Then wait for the open connections for at most `drain_timeout()` (asked
/// at shutdown, so a reloaded value counts) and close the rest.
pub(crate) async fn serve_connections<S, F>(
    listener: TcpListener,
    spec: Listener<'_>,
    mut shutdown: Shutdown,
    drain_timeout: impl FnOnce() -> Duration,
    mut serve: S,
) where
    S: FnMut(TcpStream, SocketAddr, Shutdown) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let labels = ListenerLabels {
        listener: spec.name,
    };
    let gauge = spec.metrics.open_connections.get_or_create(&labels).clone();
    let mut limit = spec.max_connections.map(|max| Limit {
        max: max.max(1),
        slots: Arc::new(Semaphore::new(max.max(1))),
        reached: spec
            .metrics
            .connection_limit_reached
            .get_or_create(&labels)
            .clone(),
        logged: None,
    });
    let (drain_trigger, drain) = crate::shutdown::channel();
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let slot = match &mut limit {
            None => None,
            Some(limit) => match limit.acquire(spec.name, &mut shutdown).await {
                Some(slot) => Some(slot),
                None => break,
            },
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(listener = spec.name, %error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let held = Held {
            _open: Open::count(gauge.clone()),
            _slot: slot,
        };
        connections.spawn(task(serve(stream, remote, drain.clone()), held));
    }
    drop(listener);
    drain_trigger.trigger();
    let drained = tokio::time::timeout(drain_timeout(), async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = spec.name,
            open = connections.len(),
            "drain timeout reached; closing the remaining connections"
        );
        connections.abort_all();
    }
}

/// A connection's task: the connection, holding its place in the gauge and under the limit
/// until it ends. (Not an `async fn`: one awaiting its argument kept the connection's future
/// twice in its own, and every open connection paid for the copy.)
fn task<F: Future<Output = ()>>(connection: F, held: Held) -> impl Future<Output = ()> {
    connection.map(move |()| drop(held))
}

/// The size of the task future of a connection whose future is `F`: what every open
/// connection costs beyond its socket and what it allocates itself.
#[cfg(test)]
pub(crate) fn task_size<F: Future<Output = ()>>() -> usize {
    fn returned<A, B, R>(_: impl FnOnce(A, B) -> R) -> usize {
        std::mem::size_of::<R>()
    }
    returned(task::<F>)
}

/// What an open connection holds: its count in the gauge and its slot under the limit.
struct Held {
    _open: Open,
    _slot: Option<OwnedSemaphorePermit>,
}

/// A connection limit: a slot per open connection.
struct Limit {
    max: usize,
    slots: Arc<Semaphore>,
    /// `timproxy_connection_limit_reached_total` of the listener.
    reached: Counter,
    /// When reaching the limit was last logged.
    logged: Option<Instant>,
}

impl Limit {
    /// A free slot, waiting for one if need be; `None` when `shutdown` fired meanwhile.
    async fn acquire(
        &mut self,
        listener: &'static str,
        shutdown: &mut Shutdown,
    ) -> Option<OwnedSemaphorePermit> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => return Some(slot),
            Err(tokio::sync::TryAcquireError::Closed) => return None,
            Err(tokio::sync::TryAcquireError::NoPermits) => {}
        }
        // Every slot is taken: new connections now wait unanswered in the kernel's accept
        // backlog. Operators must see that, but a saturated listener must not flood the log
        // either — one line per minute, the counter has every time.
        self.reached.inc();
        if self
            .logged
            .is_none_or(|at| at.elapsed() >= LIMIT_LOG_INTERVAL)
        {
            self.logged = Some(Instant::now());
            tracing::warn!(
                max_connections = self.max,
                "{listener} connection limit reached ({listener}.max_connections); new connections wait until one closes"
            );
        }
        tokio::select! {
            slot = self.slots.clone().acquire_owned() => slot.ok(),
            () = shutdown.wait() => None,
        }
    }
}

/// Counts one open connection in the listener's gauge until dropped, however the connection
/// ends.
struct Open(Gauge);

impl Open {
    fn count(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}
