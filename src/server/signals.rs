//! The signals `serve` reacts to: SIGINT and SIGTERM stop it, SIGHUP reloads the
//! configuration.

use super::{ListenerTasks, Runtime};

/// The signal handlers, installed when the server starts: from then on SIGHUP no longer ends
/// the process (its default action) but waits for [`Signals::serve_until_shutdown`].
pub(super) struct Signals {
    term: Signal,
    hup: Signal,
}

impl Signals {
    pub(super) fn install() -> Self {
        Self {
            term: Signal::new(Kind::Terminate),
            hup: Signal::new(Kind::Hangup),
        }
    }

    /// Serve until SIGINT or SIGTERM arrives (`true`), or until a listener task ends on its
    /// own (`false`: a failure, whatever the task reported). Each SIGHUP reloads the
    /// configuration; a reload in progress delays the reaction to a stop signal until it is
    /// done.
    pub(super) async fn serve_until_shutdown(
        &mut self,
        listeners: &mut ListenerTasks,
        runtime: &Runtime,
    ) -> bool {
        let Self { term, hup } = self;
        let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
        loop {
            tokio::select! {
                _ = &mut ctrl_c => {
                    tracing::info!("SIGINT received, shutting down");
                    return true;
                }
                () = term.recv() => {
                    tracing::info!("SIGTERM received, shutting down");
                    return true;
                }
                () = hup.recv() => {
                    tracing::info!("SIGHUP received, reloading the configuration");
                    runtime.reload().await;
                }
                Some(ended) = listeners.join_next() => {
                    match ended {
                        Ok((name, Ok(()))) => tracing::error!(listener = name, "listener stopped unexpectedly"),
                        Ok((name, Err(e))) => tracing::error!(listener = name, error = %e, "listener failed"),
                        Err(e) => tracing::error!(error = %e, "listener task panicked"),
                    }
                    return false;
                }
            }
        }
    }
}

enum Kind {
    Terminate,
    Hangup,
}

/// A Unix signal stream; on other platforms (or if it cannot be installed) it never fires.
struct Signal {
    #[cfg(unix)]
    inner: Option<tokio::signal::unix::Signal>,
}

impl Signal {
    fn new(kind: Kind) -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let kind = match kind {
                Kind::Terminate => SignalKind::terminate(),
                Kind::Hangup => SignalKind::hangup(),
            };
            Self {
                inner: signal(kind).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = kind;
            Self {}
        }
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.inner
            && signal.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}
