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

use crate::admin::{self, AdminState, HomeserverComponent};
use crate::cli::GlobalOpts;
use crate::federation::FederationHandle;
use crate::metrics::Metrics;
use crate::shutdown;

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
    let federation = FederationHandle::new(config.federation.max_age);
    let _ = args.no_migrate;

    let admin_listener = bind("admin.listen", config.admin.listen).await?;
    let admin_addr = local_addr(&admin_listener)?;

    let homeserver = HomeserverComponent::new(&config.homeserver)
        .map_err(|e| CliError::io(format!("cannot build HTTP client: {e}")))?;
    let admin_state = Arc::new(
        AdminState::new(metrics.clone())
            .with_federation(federation.clone())
            .with_component(Arc::new(homeserver)),
    );

    let (trigger, shutdown) = shutdown::channel();
    let mut tasks: JoinSet<(&'static str, std::io::Result<()>)> = JoinSet::new();
    {
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            ("admin", admin::serve(admin_listener, admin_state, shutdown).await)
        });
    }

    tracing::info!(
        config = %path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "<defaults>".into()),
        admin = %admin_addr,
        database = %redact_url(&config.database.url),
        homeserver = %config.homeserver.url,
        "timproxy started"
    );

    wait_for_signal(&mut tasks).await;
    trigger.trigger();
    drain(tasks).await
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

