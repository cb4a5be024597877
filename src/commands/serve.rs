//! `timproxy serve`: the whole proxy stack in one process.
//!
//! Start order matters: store (and migrations) first, then the federation list from the store
//! (so a restart serves the last good list before the first fetch), then the listeners, then
//! background jobs. On SIGINT/SIGTERM every listener stops accepting and drains in-flight
//! requests for a bounded time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use futures_util::future::BoxFuture;

use crate::admin::{self, AdminState, Component, ComponentStatus, HomeserverComponent};
use crate::cleanup;
use crate::cli::GlobalOpts;
use crate::config::{CaConfig, Config};
use crate::federation::refresh::Refresher;
use crate::federation::{FederationHandle, SnapshotStore};
use crate::inbound::{self, InboundState, ObservedRequest, RequestObserver};
use crate::info_api::{self, InfoApiState};
use crate::metrics::Metrics;
use crate::outbound::{self, OutboundState};
use crate::rawdata::{self, Direction, Invitee, Measurement, RawDataReport, Reporter};
use crate::shutdown;
use crate::store::{Store, StoreError};
use crate::tls::{self, CaOptions, CertificateAuthority};

use super::{CliError, CmdResult, exit, load_config};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Do not apply pending database migrations on start
    #[arg(long)]
    pub no_migrate: bool,
}

pub async fn run(args: ServeArgs, global: &GlobalOpts) -> CmdResult {
    let (config, path) = load_config(global)?;
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let (trigger, shutdown) = shutdown::channel();

    // 1. Store first: everything durable (federation snapshots, outbox) lives there.
    let store = Store::connect(&config.database)
        .await
        .map_err(|e| CliError::io(e.to_string()))?;
    if config.database.migrate_on_start && !args.no_migrate {
        store.migrate().await.map_err(|e| match e {
            StoreError::UnknownMigrations { .. } => CliError::failed(e.to_string())
                .with_hint("upgrade timproxy, or point database.url at the right database"),
            other => CliError::io(other.to_string()),
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
    .map_err(|e| CliError::usage(e.to_string()))?;
    match refresher.load_persisted().await {
        Ok(Some(version)) => tracing::info!(version, "federation list loaded from the store"),
        Ok(None) => tracing::info!("no federation list in the store yet"),
        Err(e) => tracing::warn!(error = %e, "stored federation list not usable"),
    }

    // 3. The interception CA: configured files, or a dev CA on the embedded defaults.
    let ca = load_or_create_ca(&config)?;
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

    let homeserver = HomeserverComponent::new(&config.homeserver)
        .map_err(|e| CliError::io(format!("cannot build HTTP client: {e}")))?;
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

    let mut tasks: JoinSet<(&'static str, std::io::Result<()>)> = JoinSet::new();
    let mut summary = Vec::new();
    summary.push(("inbound", local_addr(&inbound_listener)?));
    summary.push(("outbound", local_addr(&outbound_listener)?));
    summary.push(("admin", local_addr(&admin_listener)?));

    let inbound_state = Arc::new(
        InboundState::new(&config, federation.clone(), metrics.clone())
            .map_err(|e| CliError::usage(e.to_string()))?,
    );
    {
        let shutdown = shutdown.clone();
        let state = inbound_state.clone();
        tasks.spawn(async move {
            (
                "inbound",
                inbound::serve(inbound_listener, state, shutdown).await,
            )
        });
    }
    let authority = Arc::new(tls::Authority::new(
        ca,
        &config.outbound.cert_cache,
        config.outbound.leaf_validity,
        metrics.clone(),
    ));
    let outbound_state =
        OutboundState::new(&config, federation.clone(), authority, metrics.clone())
            .map_err(|e| CliError::usage(e.to_string()))?;
    {
        let shutdown = shutdown.clone();
        let state = Arc::new(outbound_state);
        tasks.spawn(async move {
            (
                "outbound",
                outbound::serve(outbound_listener, state, shutdown).await,
            )
        });
    }
    {
        let shutdown = shutdown.clone();
        let state = Arc::new(admin_state);
        tasks.spawn(async move { ("admin", admin::serve(admin_listener, state, shutdown).await) });
    }
    if let Some(listener) = info_listener {
        summary.push(("info_api", local_addr(&listener)?));
        let state = InfoApiState::new(&config, federation.clone(), metrics.clone())
            .map_err(|e| CliError::usage(e.to_string()))?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            (
                "info_api",
                info_api::serve(listener, Arc::new(state), shutdown).await,
            )
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

    let mut fields = serde_json::Map::new();
    for (name, addr) in &summary {
        fields.insert((*name).to_owned(), addr.to_string().into());
    }
    tracing::info!(
        config = %path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<defaults>".into()),
        inbound = %addr_of(&summary, "inbound"),
        outbound = %addr_of(&summary, "outbound"),
        admin = %addr_of(&summary, "admin"),
        info_api = %addr_of(&summary, "info_api"),
        database = %redact_url(&config.database.url),
        homeserver = %config.homeserver.url,
        federation_source = ?config.federation.source,
        ca_fingerprint = %ca_fingerprint,
        "timproxy started"
    );

    wait_for_signal(&mut tasks).await;
    trigger.trigger();
    let code = drain(tasks).await;
    for job in jobs {
        let _ = tokio::time::timeout(Duration::from_secs(5), job).await;
    }
    store.close().await;
    code
}

/// The configured CA, or — only when both default paths are missing — a freshly generated dev
/// CA written there, so `timproxy serve` works on a fresh checkout. Explicitly configured paths
/// must exist: silently minting a new CA would break the homeserver's trust.
fn load_or_create_ca(config: &Config) -> Result<CertificateAuthority, CliError> {
    let paths = &config.outbound.ca;
    let usage_or_io = |e: tls::TlsError| {
        if e.is_usage() {
            CliError::usage(e.to_string())
        } else {
            CliError::io(e.to_string())
        }
    };
    let is_default = *paths == CaConfig::default();
    if is_default && !paths.cert_file.exists() && !paths.key_file.exists() {
        let generated = tls::ca::generate_ca(&CaOptions {
            common_name: "timproxy development CA".to_owned(),
            ..CaOptions::default()
        })
        .map_err(usage_or_io)?;
        if let Some(dir) = paths
            .cert_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| CliError::io(format!("{}: {e}", dir.display())))?;
        }
        tls::ca::write_ca(&paths.cert_file, &paths.key_file, &generated, false)
            .map_err(usage_or_io)?;
        tracing::warn!(
            cert = %paths.cert_file.display(),
            fingerprint = %generated.fingerprint,
            "generated a development interception CA; use `timproxy gen-ca` and outbound.ca for production"
        );
        return CertificateAuthority::from_generated(&generated).map_err(usage_or_io);
    }
    CertificateAuthority::load(&paths.cert_file, &paths.key_file).map_err(usage_or_io)
}

/// Turns finished inbound requests into raw-data reports (only the operations the spec lists).
struct RawDataObserver {
    config: Arc<Config>,
    reporter: Reporter,
}

impl RequestObserver for RawDataObserver {
    fn observe(&self, obs: &ObservedRequest) {
        let invitee = match &obs.invitee_server {
            None => Invitee::None,
            Some(server) if *server == self.config.homeserver.server_name => Invitee::Local,
            Some(_) => Invitee::Remote,
        };
        let Some(operation) = rawdata::operation_for(
            Direction::Inbound,
            &obs.method,
            &obs.endpoint_template,
            invitee,
        ) else {
            return;
        };
        let measurement = Measurement {
            operation,
            start: obs.started,
            duration: obs.duration,
            status: obs.status,
            useragent: if obs.is_federation {
                None
            } else {
                obs.user_agent.as_deref()
            },
            size_in: obs.size_in.unwrap_or(0),
            size_out: obs.size_out.unwrap_or(0),
        };
        self.reporter
            .report(RawDataReport::build(&self.config, &measurement));
    }
}

fn addr_of(summary: &[(&'static str, SocketAddr)], name: &str) -> String {
    summary
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| a.to_string())
        .unwrap_or_else(|| "off".to_owned())
}

/// Readiness: the database answers.
struct StoreComponent(Store);

impl Component for StoreComponent {
    fn name(&self) -> &'static str {
        "store"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            match self.0.ping().await {
                Ok(()) => ComponentStatus::ok(format!("{} reachable", self.0.kind())),
                Err(e) => ComponentStatus::failing(e.to_string()),
            }
        })
    }
}

/// Readiness: the raw-data outbox is not piling up (collector down for long).
struct OutboxComponent {
    store: Store,
    max_backlog: u64,
}

impl Component for OutboxComponent {
    fn name(&self) -> &'static str {
        "raw_data_outbox"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            match self.store.outbox_depth().await {
                Ok(depth) if depth <= self.max_backlog => {
                    ComponentStatus::ok(format!("{depth} undelivered"))
                }
                Ok(depth) => ComponentStatus::failing(format!(
                    "{depth} undelivered reports exceed raw_data.max_backlog {}",
                    self.max_backlog
                )),
                Err(e) => ComponentStatus::failing(e.to_string()),
            }
        })
    }
}

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, CliError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| CliError::io(format!("{key}: cannot listen on {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, CliError> {
    listener
        .local_addr()
        .map_err(|e| CliError::io(format!("cannot read listener address: {e}")))
}

/// Returns when a signal arrives or a listener task ends on its own (a failure).
async fn wait_for_signal(tasks: &mut JoinSet<(&'static str, std::io::Result<()>)>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
        Some(ended) = tasks.join_next() => match ended {
            Ok((name, Ok(()))) => tracing::error!(listener = name, "listener stopped unexpectedly"),
            Ok((name, Err(e))) => tracing::error!(listener = name, error = %e, "listener failed"),
            Err(e) => tracing::error!(error = %e, "listener task panicked"),
        },
    }
}

async fn drain(mut tasks: JoinSet<(&'static str, std::io::Result<()>)>) -> CmdResult {
    let mut failed = false;
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(ended) = tasks.join_next().await {
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
        tasks.abort_all();
    }
    tracing::info!("timproxy stopped");
    Ok(if failed { exit::IO } else { exit::OK })
}

/// Database URLs may carry a password; log them without it.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}
