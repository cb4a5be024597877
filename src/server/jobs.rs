//! The background jobs of `serve`: federation list refresh, raw-data writer and sender,
//! orphaned-room cleanup. A reload restarts a job only when its settings changed.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::cleanup;
use crate::config::Config;
use crate::federation::refresh::Refresher;
use crate::inbound::RequestObserver;
use crate::metrics::Metrics;
use crate::rawdata::{self, Reporter};
use crate::shutdown::{Shutdown, ShutdownTrigger};
use crate::store::Store;

/// How long each background job may take to stop at shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A job that can be stopped on its own (replaced by a reload) or with everything else.
struct Job {
    stop: ShutdownTrigger,
    handle: JoinHandle<()>,
}

/// The raw-data pipeline: the request path's reporter feeds the writer (which ends by itself
/// once every reporter is gone, after writing what it holds: no report is lost to a reload),
/// and the sender delivers from the outbox.
struct RawData {
    reporter: Reporter,
    batch_size: u32,
    sender: Job,
}

pub(super) struct Jobs {
    shutdown: Shutdown,
    store: Store,
    metrics: Arc<Metrics>,
    refresher: Job,
    raw_data: Option<RawData>,
    cleanup: Job,
    /// Writers and replaced jobs, still finishing; awaited at shutdown.
    ending: Vec<JoinHandle<()>>,
}

impl Jobs {
    /// Start every job for `config`. Returns the raw-data observer for the inbound listener
    /// when raw data is enabled.
    pub fn start(
        config: &Arc<Config>,
        refresher: &Arc<Refresher>,
        store: Store,
        metrics: Arc<Metrics>,
        shutdown: Shutdown,
    ) -> (Jobs, Option<Arc<dyn RequestObserver>>) {
        let refresher = start_refresher(refresher, &shutdown);
        let cleanup = start_cleanup(config, &store, &metrics, &shutdown);
        let mut jobs = Jobs {
            shutdown,
            store,
            metrics,
            refresher,
            raw_data: None,
            cleanup,
            ending: Vec::new(),
        };
        let observer = jobs.reconcile_raw_data(config);
        (jobs, observer)
    }

    /// Bring the jobs in line with `new` (the configuration replacing `old`): a new refresher
    /// replaces the running one, cleanup restarts when its or the homeserver's settings
    /// changed, the raw-data sender when raw-data settings did. Returns the raw-data observer
    /// for the new inbound state (`None`: raw data is off).
    pub fn reconcile(
        &mut self,
        old: &Config,
        new: &Arc<Config>,
        refresher: Option<&Arc<Refresher>>,
    ) -> Option<Arc<dyn RequestObserver>> {
        if let Some(refresher) = refresher {
            let replaced = std::mem::replace(
                &mut self.refresher,
                start_refresher(refresher, &self.shutdown),
            );
            self.retire(replaced);
        }
        if old.cleanup != new.cleanup || old.homeserver != new.homeserver {
            let replaced = std::mem::replace(
                &mut self.cleanup,
                start_cleanup(new, &self.store, &self.metrics, &self.shutdown),
            );
            self.retire(replaced);
        }
        if old.raw_data != new.raw_data
            && let Some(running) = self.raw_data.take()
        {
            self.retire(running.sender);
            if new.raw_data.enabled && running.batch_size == new.raw_data.batch_size {
                self.raw_data = Some(RawData {
                    sender: self.start_sender(new),
                    ..running
                });
            }
        }
        self.reconcile_raw_data(new)
    }

    /// Start what raw data needs and is missing; the observer for `config`.
    fn reconcile_raw_data(&mut self, config: &Arc<Config>) -> Option<Arc<dyn RequestObserver>> {
        if !config.raw_data.enabled {
            return None;
        }
        if self.raw_data.is_none() {
            let (reporter, writer) = Reporter::spawn(
                self.store.clone(),
                &config.raw_data,
                self.metrics.clone(),
                self.shutdown.clone(),
            );
            self.ending.push(writer);
            self.raw_data = Some(RawData {
                reporter,
                batch_size: config.raw_data.batch_size,
                sender: self.start_sender(config),
            });
        }
        let reporter = self.raw_data.as_ref()?.reporter.clone();
        Some(Arc::new(rawdata::Observer::new(config.clone(), reporter)))
    }

    fn start_sender(&self, config: &Config) -> Job {
        let (stop, signal) = self.shutdown.child();
        let handle = rawdata::spawn_sender(
            self.store.clone(),
            config.raw_data.clone(),
            self.metrics.clone(),
            signal,
        );
        Job { stop, handle }
    }

    fn retire(&mut self, job: Job) {
        job.stop.trigger();
        self.ending.retain(|h| !h.is_finished());
        self.ending.push(job.handle);
    }

    /// Wait (bounded, per job) for every job to end after the shutdown signal.
    pub async fn stopped(&mut self) {
        let handles = [&mut self.refresher.handle, &mut self.cleanup.handle]
            .into_iter()
            .chain(self.raw_data.as_mut().map(|r| &mut r.sender.handle))
            .chain(self.ending.iter_mut());
        for handle in handles {
            let _ = tokio::time::timeout(STOP_TIMEOUT, handle).await;
        }
    }
}

fn start_refresher(refresher: &Arc<Refresher>, shutdown: &Shutdown) -> Job {
    let (stop, signal) = shutdown.child();
    Job {
        stop,
        handle: refresher.spawn(signal),
    }
}

fn start_cleanup(
    config: &Arc<Config>,
    store: &Store,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Job {
    let (stop, signal) = shutdown.child();
    Job {
        stop,
        handle: cleanup::spawn(config.clone(), store.clone(), metrics.clone(), signal),
    }
}
