//! The whole proxy in one process: what `timproxy serve` runs, as a library so the command
//! stays thin and tests start exactly the same assembly.
//!
//! Start order matters: store (and migrations) first, then the federation list from the store
//! (so a restart serves the last good list before the first fetch), then the listeners, then
//! background jobs. On SIGINT/SIGTERM every listener stops accepting and drains in-flight
//! requests for a bounded time. On SIGHUP (or `POST /config/reload` on the admin listener) the
//! configuration is re-read and swapped in without dropping a connection ([`Server::reload`]).

mod assembly;
mod ca;
mod jobs;
mod listeners;
mod readiness;
pub mod reload;
mod signals;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use futures_util::future::BoxFuture;

use crate::admin::AdminState;
use crate::admin::operator::Operations;
use crate::config::{Config, ConfigError};
use crate::federation::refresh::Refresher;
use crate::federation::{FederationHandle, SnapshotStore};
use crate::inbound::InboundState;
use crate::info_api::InfoApiState;
use crate::live::Live;
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::outbound::OutboundState;
use crate::shutdown::{self, ShutdownTrigger};
use crate::store::{Store, StoreError, redact_url};
use crate::tls::CertificateAuthority;

use assembly::{Assembly, Shared};
use jobs::Jobs;
use listeners::ListenerTasks;
use reload::{ConfigStatus, Outcome, ReloadReport};

/// How `serve` was asked to start, besides the configuration itself.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// The file the configuration came from (`None`: built-in defaults). A reload reads it
    /// again.
    pub config_path: Option<PathBuf>,
    /// Do not apply pending migrations even if `database.migrate_on_start` is set.
    pub skip_migrations: bool,
    /// The process's log filter, for `admin.log_level_default` and the admin listener's
    /// log-level endpoints (`None`: the log filter is not changeable).
    pub log: Option<Arc<LogControl>>,
}

impl std::fmt::Debug for StartOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartOptions")
            .field("config_path", &self.config_path)
            .field("skip_migrations", &self.skip_migrations)
            .field("log", &self.log.is_some())
            .finish()
    }
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

/// A started server: listeners bound and serving, background jobs running.
pub struct Server {
    addrs: Vec<(&'static str, SocketAddr)>,
    signals: signals::Signals,
    trigger: ShutdownTrigger,
    listeners: ListenerTasks,
    runtime: Arc<Runtime>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addrs", &self.addrs)
            .finish()
    }
}

/// What a reload changes, and the lock that serialises reloads.
struct Runtime {
    path: Option<PathBuf>,
    shared: Shared,
    inbound: Live<InboundState>,
    outbound: Live<OutboundState>,
    info_api: Option<Live<InfoApiState>>,
    admin: Live<AdminState>,
    status: Mutex<ConfigStatus>,
    /// The active assembly and the jobs running for it; held for a whole reload.
    current: tokio::sync::Mutex<Current>,
}

struct Current {
    assembly: Assembly,
    jobs: Jobs,
}

/// The admin listener's way back to the runtime (a weak reference: the runtime owns the admin
/// state, not the other way round).
#[derive(Default)]
struct RuntimeOperations(OnceLock<Weak<Runtime>>);

impl Operations for RuntimeOperations {
    fn config_status(&self) -> ConfigStatus {
        match self.0.get().and_then(Weak::upgrade) {
            Some(runtime) => runtime.status(),
            None => ConfigStatus::default(),
        }
    }

    fn reload(&self) -> BoxFuture<'_, ReloadReport> {
        Box::pin(async move {
            match self.0.get().and_then(Weak::upgrade) {
                Some(runtime) => runtime.reload().await,
                None => ReloadReport::rejected(String::new(), "the server is stopping".to_owned()),
            }
        })
    }
}

impl Server {
    /// Bring everything up. Returns once every listener is bound and serving.
    pub async fn start(config: Config, options: StartOptions) -> Result<Server, StartError> {
        // reqwest (health checks, whoami, control-plane calls) needs a process-wide rustls
        // provider; `main` installs ring, this covers embedders and tests (installing twice is
        // a harmless error).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let signals = signals::Signals::install();
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let (trigger, shutdown) = shutdown::channel();
        if let Some(log) = &options.log
            && let Err(e) = log.set_default(&config.admin.log_level_default)
        {
            return Err(StartError::Config(format!("admin.log_level_default: {e}")));
        }

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
        let refresher =
            new_refresher(&config, &federation, &store, &metrics).map_err(StartError::Config)?;
        match refresher.load_persisted().await {
            Ok(Some(version)) => tracing::info!(version, "federation list loaded from the store"),
            Ok(None) => tracing::info!("no federation list in the store yet"),
            Err(e) => tracing::warn!(error = %e, "stored federation list not usable"),
        }

        // 3. The interception CA: configured files, or a dev CA on the embedded defaults.
        let ca = ca::load_or_create(&config)?;

        // 4. Listeners: bind all before serving any, so a port clash fails the start cleanly.
        let bound = listeners::Bound::bind(&config).await?;
        let addrs = bound.addrs()?;

        // 5. The listeners' states, and the runtime a reload works on.
        let operations = Arc::new(RuntimeOperations::default());
        let shared = Shared {
            metrics: metrics.clone(),
            store: store.clone(),
            federation: federation.clone(),
            log: options.log.clone(),
            operations: operations.clone(),
        };
        let assembly =
            Assembly::build(config.clone(), ca, None, &shared).map_err(StartError::Config)?;
        let (jobs, observer) = Jobs::start(
            &config,
            &refresher,
            store.clone(),
            metrics.clone(),
            shutdown.clone(),
        );
        assembly.outbound.replace_observer(observer.clone());
        assembly.inbound.replace_observer(observer);
        let ca_fingerprint = assembly.authority.ca_fingerprint().to_owned();
        let runtime = Arc::new(Runtime {
            path: options.config_path.clone(),
            shared,
            inbound: Live::new(assembly.inbound.clone()),
            outbound: Live::new(assembly.outbound.clone()),
            info_api: assembly.info_api.clone().map(Live::new),
            admin: Live::new(assembly.admin.clone()),
            status: Mutex::new(ConfigStatus::started(&config, options.config_path.clone())),
            current: tokio::sync::Mutex::new(Current { assembly, jobs }),
        });
        let _ = operations.0.set(Arc::downgrade(&runtime));

        // 6. Serve.
        let listeners = bound.serve(&runtime, &shutdown);

        let server = Server {
            addrs,
            signals,
            trigger,
            listeners,
            runtime,
        };
        tracing::info!(
            config = %options.config_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<defaults>".into()),
            config_hash = %server.config_status().hash,
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
        if !config.policy.shadow.is_empty() {
            let rules: Vec<&str> = config.policy.shadow.iter().map(|r| r.as_str()).collect();
            tracing::warn!(
                rules = %rules.join(", "),
                "shadow mode (policy.shadow): these rules are evaluated, logged and counted, not enforced"
            );
        }
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

    /// The active configuration: hash, load time, keys waiting for a restart, last reload.
    pub fn config_status(&self) -> ConfigStatus {
        self.runtime.status()
    }

    /// Re-read the configuration file and the environment, validate everything, and swap the
    /// result in (see [`reload`]). An invalid configuration changes nothing.
    pub async fn reload(&self) -> ReloadReport {
        self.runtime.reload().await
    }

    /// Serve until SIGINT/SIGTERM arrives or a listener ends on its own, then stop. SIGHUP
    /// reloads the configuration.
    pub async fn run(mut self) -> Stopped {
        let requested = self
            .signals
            .serve_until_shutdown(&mut self.listeners, &self.runtime)
            .await;
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
        let stopped = listeners::drain(self.listeners).await;
        self.runtime.current.lock().await.jobs.stopped().await;
        self.runtime.shared.store.close().await;
        tracing::info!("timproxy stopped");
        stopped
    }
}

impl Runtime {
    fn status(&self) -> ConfigStatus {
        self.status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// One reload at a time: read, validate, build, swap; then count, log and publish it.
    async fn reload(&self) -> ReloadReport {
        let mut current = self.current.lock().await;
        let hash = self.status().hash;
        let report = match self.prepare(&current).await {
            Err(error) => ReloadReport::rejected(hash, error),
            Ok(next) => self.commit(&mut current, next),
        };
        drop(current);
        Metrics::outcome(&self.shared.metrics.config_reloads, report.outcome.label());
        match report.outcome {
            Outcome::Rejected => tracing::error!(
                error = report.error.as_deref().unwrap_or_default(),
                "configuration reload refused; the previous configuration keeps running"
            ),
            Outcome::Applied => tracing::info!(
                config_hash = %report.hash,
                changed = ?report.changed,
                "configuration reloaded"
            ),
            Outcome::Unchanged => tracing::info!(
                config_hash = %report.hash,
                "configuration reloaded; nothing changed"
            ),
        }
        if !report.restart_required.is_empty() {
            tracing::warn!(
                keys = ?report.restart_required,
                "changed configuration keys take effect only after a restart"
            );
        }
        let mut status = self
            .status
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *status = status.after(&report);
        report
    }

    /// Everything that can fail, with nothing running touched: the configuration read and
    /// validated, the CA loaded, every listener's state built, a new federation refresher if
    /// its settings changed (last: building one installs its refresh-on-miss hook).
    async fn prepare(&self, current: &Current) -> Result<Prepared, String> {
        let running = &current.assembly.config;
        let mut config = load_again(self.path.as_deref()).map_err(|e| e.to_string())?;
        let restart_required = reload::keep_restart_only(running, &mut config);
        let mut changed = reload::changed_keys(running, &config);
        let config = Arc::new(config);
        let ca =
            CertificateAuthority::load(&config.outbound.ca.cert_file, &config.outbound.ca.key_file)
                .map_err(|e| format!("outbound.ca: {e}"))?;
        let assembly = Assembly::build(config.clone(), ca, Some(&current.assembly), &self.shared)?;
        // Files behind unchanged keys may have new contents (a CA or trust store replaced in
        // place): say so, it is a change.
        if assembly.authority.ca_fingerprint() != current.assembly.authority.ca_fingerprint() {
            changed.push("outbound.ca (certificate file contents)".to_owned());
        }
        if assembly.upstream != current.assembly.upstream
            && !changed
                .iter()
                .any(|k| k.starts_with("federation.trusted_ca_files"))
        {
            changed.push("federation.trusted_ca_files (file contents)".to_owned());
        }
        let refresher = if running.federation != config.federation
            || running.registration_service != config.registration_service
        {
            Some(new_refresher(
                &config,
                &self.shared.federation,
                &self.shared.store,
                &self.shared.metrics,
            )?)
        } else {
            None
        };
        Ok(Prepared {
            assembly,
            refresher,
            changed,
            restart_required,
        })
    }

    /// Swap the prepared assembly in; nothing here fails. Requests already running keep the
    /// states they loaded; the next request on every listener sees the new ones.
    fn commit(&self, current: &mut Current, next: Prepared) -> ReloadReport {
        let Prepared {
            assembly,
            refresher,
            changed,
            restart_required,
        } = next;
        let config = assembly.config.clone();
        let old = current.assembly.config.clone();
        let federation = &self.shared.federation;
        federation.set_max_age(config.federation.max_age);
        if refresher.is_some() && !config.federation.refresh_on_miss {
            federation.clear_refresher();
        }
        let observer = current.jobs.reconcile(&old, &config, refresher.as_ref());
        assembly.outbound.replace_observer(observer.clone());
        assembly.inbound.replace_observer(observer);
        if let Some(log) = &self.shared.log
            && let Err(e) = log.set_default(&config.admin.log_level_default)
        {
            // Validated with the configuration; reaching this is a bug, not a bad file.
            tracing::error!(error = %e, "admin.log_level_default not applied");
        }
        self.inbound.store(assembly.inbound.clone());
        self.outbound.store(assembly.outbound.clone());
        if let (Some(live), Some(state)) = (&self.info_api, &assembly.info_api) {
            live.store(state.clone());
        }
        self.admin.store(assembly.admin.clone());
        if !Arc::ptr_eq(&assembly.authority, &current.assembly.authority) {
            let replaced = current.assembly.authority.clone();
            tokio::spawn(async move { replaced.flush().await });
        }
        current.assembly = assembly;
        let outcome = if changed.is_empty() {
            Outcome::Unchanged
        } else {
            Outcome::Applied
        };
        let mut report = ReloadReport::new(outcome, reload::config_hash(&config));
        report.changed = changed;
        report.restart_required = restart_required;
        report
    }
}

/// A reload's result before it is swapped in.
struct Prepared {
    assembly: Assembly,
    refresher: Option<Arc<Refresher>>,
    changed: Vec<String>,
    restart_required: Vec<String>,
}

/// The configuration as `serve` would read it now: the same file (or the built-in defaults
/// when it started without one), and the environment.
fn load_again(path: Option<&Path>) -> Result<Config, ConfigError> {
    match path {
        Some(path) => Config::load(Some(path)).map(|(config, _)| config),
        None => {
            let env: Vec<(String, String)> = std::env::vars().collect();
            let config = Config::from_yaml_with_env("", "<defaults>", &env)?;
            config.validate("<defaults>")?;
            Ok(config)
        }
    }
}

/// The federation list refresher for `config`, persisting to the store.
fn new_refresher(
    config: &Config,
    federation: &FederationHandle,
    store: &Store,
    metrics: &Arc<Metrics>,
) -> Result<Arc<Refresher>, String> {
    Refresher::new(
        config,
        federation.clone(),
        Some(Arc::new(store.clone()) as Arc<dyn SnapshotStore>),
        metrics.clone(),
    )
    .map_err(|e| e.to_string())
}
