//! The whole proxy in one process: what `timproxy serve` runs, as a library so the command
//! stays thin and tests start exactly the same assembly.
//!
//! Start order matters: store (and migrations) first, then the federation list from the store
//! (so a restart serves the last good list before the first fetch), then the listeners, then
//! background jobs. On SIGINT/SIGTERM every listener stops accepting and drains in-flight
//! requests for a bounded time.

mod ca;
mod rawdata_hook;
mod readiness;
mod signals;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::admin::{self, AdminState, HomeserverComponent};
use crate::cleanup;
use crate::config::Config;
use crate::federation::refresh::Refresher;
use crate::federation::{FederationHandle, SnapshotStore};
use crate::inbound::{self, InboundState};
use crate::info_api::{self, InfoApiState};
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundState};
use crate::rawdata::{self, Reporter};
use crate::shutdown::{self, ShutdownTrigger};
use crate::store::{Store, StoreError, redact_url};
use crate::tls;

use rawdata_hook::RawDataObserver;
use readiness::{OutboxComponent, StoreComponent};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long each background job may take to stop.
const JOB_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How `serve` was asked to start, besides the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The file the configuration came from (`None`: built-in defaults).
    pub config_path: Option<PathBuf>,
    /// Do not apply pending migrations even if `database.migrate_on_start` is set.
    pub skip_migrations: bool,
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration cannot be used as it is (a usage error).
    #[error("{0}")]
    Config(String),
    /// The database was migrated by a newer timproxy.
    #[error(transparent)]
    NewerDatabase(StoreError),
    /// A file, socket or the database could not be used.
    #[error("{0}")]
    Io(String),
}

/// How the server ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every listener drained after a shutdown request.
    Clean,
    /// A listener failed (or stopped on its own), or a drain went wrong.
    ListenerFailed,
}

type ListenerTasks = JoinSet<(&'static str, std::io::Result<()>)>;

/// A started server: listeners bound and serving, background jobs running.
pub struct Server {
    addrs: Vec<(&'static str, SocketAddr)>,
    trigger: ShutdownTrigger,
    listeners: ListenerTasks,
    jobs: Vec<JoinHandle<()>>,
    store: Store,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .finish()
    }
}

impl Server {
    /// Bring everything up. Returns once every listener is bound and serving.
    pub async fn start(config: Config, options: StartOptions) -> Result<Server, StartError> {
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let (trigger, shutdown) = shutdown::channel();

        // 1. Store first: everything durable (federation snapshots, outbox) lives there.
        let store = Store::connect(&config.database)
            .await
            .map_err(|e| StartError::Io(e.to_string()))?;
        if config.database.migrate_on_start && !options.skip_migrations {
            store.migrate().await.map_err(|e| match e {
                e @ StoreError::UnknownMigrations { .. } => StartError::NewerDatabase(e),
                other => StartError::Io(other.to_string()),
            })?;
        }

        // 2. Federation list: the last good snapshot from the store, then the refresher.
        let federation = FederationHandle::new(config.federation.max_age);
        let refresher = Refresher::new(
            &config,
            federation.clone(),
            Some(Arc::new(store.clone()) as Arc<dyn SnapshotStore>),
            metrics.clone(),
        )
        .map_err(|e| StartError::Config(e.to_string()))?;
        match refresher.load_persisted().await {
            Ok(Some(version)) => tracing::info!(version, "federation list loaded from the store"),
            Ok(None) => tracing::info!("no federation list in the store yet"),
            Err(e) => tracing::warn!(error = %e, "stored federation list not usable"),
        }

        // 3. The interception CA: configured files, or a dev CA on the embedded defaults.
        let ca = ca::load_or_create(&config)?;
        let ca_fingerprint = ca.fingerprint().to_owned();

        // 4. Listeners: bind all before serving any, so a port clash fails the start cleanly.
        let inbound_listener = bind("inbound.listen", config.inbound.listen).await?;
        let outbound_listener = bind("outbound.listen", config.outbound.listen).await?;
        let admin_listener = bind("admin.listen", config.admin.listen).await?;
        let info_listener = if config.info_api.enabled {
            Some(bind("info_api.listen", config.info_api.listen).await?)
        } else {
            None
        };
        let mut addrs = vec![
            ("inbound", local_addr(&inbound_listener)?),
            ("outbound", local_addr(&outbound_listener)?),
            ("admin", local_addr(&admin_listener)?),
        ];
        if let Some(listener) = &info_listener {
            addrs.push(("info_api", local_addr(listener)?));
        }

        let homeserver = HomeserverComponent::new(&config.homeserver)
            .map_err(|e| StartError::Io(format!("cannot build HTTP client: {e}")))?;
        let mut admin_state = AdminState::new(metrics.clone())
            .with_federation(federation.clone())
            .with_component(Arc::new(homeserver))
            .with_component(Arc::new(StoreComponent(store.clone())));
        if config.raw_data.enabled {
            admin_state = admin_state.with_component(Arc::new(OutboxComponent {
                store: store.clone(),
                max_backlog: config.raw_data.max_backlog,
            }));
        }
        let inbound_state = Arc::new(
            InboundState::new(&config, federation.clone(), metrics.clone())
                .map_err(|e| StartError::Config(e.to_string()))?,
        );
        let authority = Arc::new(tls::Authority::new(
            ca,
            &config.outbound.cert_cache,
            config.outbound.leaf_validity,
            metrics.clone(),
        ));
        let outbound_state =
            OutboundState::new(&config, federation.clone(), authority, metrics.clone())
                .map_err(|e| StartError::Config(e.to_string()))?;
        let info_state = match info_listener {
            Some(listener) => Some((
                listener,
                InfoApiState::new(&config, federation.clone(), metrics.clone())
                    .map_err(|e| StartError::Config(e.to_string()))?,
            )),
            None => None,
        };

        let mut listeners = ListenerTasks::new();
        {
            let (shutdown, state) = (shutdown.clone(), inbound_state.clone());
            listeners.spawn(async move {
                let served = inbound::serve(inbound_listener, state, shutdown).await;
                ("inbound", served)
            });
        }
        {
            let (shutdown, state) = (shutdown.clone(), Arc::new(outbound_state));
            listeners.spawn(async move {
                let served = outbound::serve(outbound_listener, state, shutdown).await;
                ("outbound", served)
            });
        }
        {
            let (shutdown, state) = (shutdown.clone(), Arc::new(admin_state));
            listeners.spawn(async move {
                let served = admin::serve(admin_listener, state, shutdown).await;
                ("admin", served)
            });
        }
        if let Some((listener, state)) = info_state {
            let shutdown = shutdown.clone();
            listeners.spawn(async move {
                let served = info_api::serve(listener, Arc::new(state), shutdown).await;
                ("info_api", served)
            });
        }

        // 5. Background jobs.
        let mut jobs = vec![refresher.spawn(shutdown.clone())];
        if config.raw_data.enabled {
            let (reporter, writer) = Reporter::spawn(
                store.clone(),
                &config.raw_data,
                metrics.clone(),
                shutdown.clone(),
            );
            inbound_state.set_observer(Arc::new(RawDataObserver {
                config: config.clone(),
                reporter,
            }));
            jobs.push(writer);
            jobs.push(rawdata::spawn_sender(
                store.clone(),
                config.raw_data.clone(),
                metrics.clone(),
                shutdown.clone(),
            ));
        }
        jobs.push(cleanup::spawn(
            config.clone(),
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));

        let server = Server {
            addrs,
            trigger,
            listeners,
            jobs,
            store,
        };
        tracing::info!(
            config = %options.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<defaults>".into()),
            inbound = %server.addr_text("inbound"),
            outbound = %server.addr_text("outbound"),
            admin = %server.addr_text("admin"),
            info_api = %server.addr_text("info_api"),
            database = %redact_url(&config.database.url),
            homeserver = %config.homeserver.url,
            federation_source = ?config.federation.source,
            ca_fingerprint = %ca_fingerprint,
            "timproxy started"
        );
        Ok(server)
    }

    /// The bound address of a listener (`inbound`, `outbound`, `admin`, `info_api`).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.addrs
            .iter()
            .find(|(name, _)| *name == listener)
            .map(|(_, addr)| *addr)
    }

    fn addr_text(&self, listener: &str) -> String {
        self.local_addr(listener)
            .map_or_else(|| "off".to_owned(), |a| a.to_string())
    }

    /// Serve until SIGINT/SIGTERM arrives or a listener ends on its own, then stop.
    pub async fn run(mut self) -> Stopped {
        let requested = signals::wait_for_shutdown(&mut self.listeners).await;
        let stopped = self.stop().await;
        if requested {
            stopped
        } else {
            Stopped::ListenerFailed
        }
    }

    /// Stop accepting, drain in-flight requests (bounded), stop the background jobs and close
    /// the store.
    pub async fn stop(self) -> Stopped {
        self.trigger.trigger();
        let stopped = drain(self.listeners).await;
        for job in self.jobs {
            let _ = tokio::time::timeout(JOB_STOP_TIMEOUT, job).await;
        }
        self.store.close().await;
        tracing::info!("timproxy stopped");
        stopped
    }
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Io(format!("{key}: cannot listen on {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|e| StartError::Io(format!("cannot read listener address: {e}")))
}

async fn drain(mut listeners: ListenerTasks) -> Stopped {
    let mut failed = false;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = listeners.join_next().await {
            match ended {
                Ok((_, Ok(()))) => {}
                Ok((name, Err(e))) => {
                    failed = true;
                    tracing::error!(listener = name, error = %e, "listener failed");
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(error = %e, "task failed");
                }
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "drain timeout reached; closing remaining connections");
        listeners.abort_all();
    }
    if failed {
        Stopped::ListenerFailed
    } else {
        Stopped::Clean
    }
}
