//! The signals `serve` reacts to.

use super::ListenerTasks;

/// Returns when SIGINT or SIGTERM arrives (`true`), or when a listener task ends on its own
/// (`false`: a failure, whatever the task reported).
pub(super) async fn wait_for_shutdown(listeners: &mut ListenerTasks) -> bool {
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
        Some(ended) = listeners.join_next() => {
            match ended {
                Ok((name, Ok(()))) => tracing::error!(listener = name, "listener stopped unexpectedly"),
                Ok((name, Err(e))) => tracing::error!(listener = name, error = %e, "listener failed"),
                Err(e) => tracing::error!(error = %e, "listener task panicked"),
            }
            return false;
        }
    }
    true
}
