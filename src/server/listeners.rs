//! The four listeners of `serve`: bound together at start, served from the runtime's [`Live`]
//! states, drained together at shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::shutdown::Shutdown;
use crate::{admin, inbound, info_api, outbound};

use super::{Runtime, StartError, Stopped};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);

/// The running listener tasks, each ending with its name and how it ended.
pub(super) type ListenerTasks = JoinSet<(&'static str, std::io::Result<()>)>;

/// Bound sockets, not yet serving.
pub(super) struct Bound {
    inbound: TcpListener,
    outbound: TcpListener,
    admin: TcpListener,
    info_api: Option<TcpListener>,
}

impl Bound {
    /// Bind every configured listener (the information API only when enabled).
    pub async fn bind(config: &Config) -> Result<Bound, StartError> {
        Ok(Bound {
            inbound: bind("inbound.listen", config.inbound.listen).await?,
            outbound: bind("outbound.listen", config.outbound.listen).await?,
            admin: bind("admin.listen", config.admin.listen).await?,
            info_api: if config.info_api.enabled {
                Some(bind("info_api.listen", config.info_api.listen).await?)
            } else {
                None
            },
        })
    }

    /// The bound addresses by listener name (port 0 in the configuration resolved).
    pub fn addrs(&self) -> Result<Vec<(&'static str, SocketAddr)>, StartError> {
        let mut addrs = vec![
            ("inbound", local_addr(&self.inbound)?),
            ("outbound", local_addr(&self.outbound)?),
            ("admin", local_addr(&self.admin)?),
        ];
        if let Some(listener) = &self.info_api {
            addrs.push(("info_api", local_addr(listener)?));
        }
        Ok(addrs)
    }

    /// Serve each listener from the runtime's current state until `shutdown`.
    pub fn serve(self, runtime: &Runtime, shutdown: &Shutdown) -> ListenerTasks {
        let mut tasks = ListenerTasks::new();
        let (state, signal) = (runtime.inbound.clone(), shutdown.clone());
        tasks.spawn(async move { ("inbound", inbound::serve(self.inbound, state, signal).await) });
        let (state, signal) = (runtime.outbound.clone(), shutdown.clone());
        tasks.spawn(async move {
            (
                "outbound",
                outbound::serve(self.outbound, state, signal).await,
            )
        });
        let (state, signal) = (runtime.admin.clone(), shutdown.clone());
        tasks.spawn(async move { ("admin", admin::serve(self.admin, state, signal).await) });
        if let (Some(listener), Some(state)) = (self.info_api, runtime.info_api.clone()) {
            let signal = shutdown.clone();
            tasks
                .spawn(async move { ("info_api", info_api::serve(listener, state, signal).await) });
        }
        tasks
    }
}

/// Accept queue length asked of the kernel (it caps it at `net.core.somaxconn`). Tens of
/// thousands of clients reconnect at once after a restart; a short queue drops their SYNs and
/// they retry only after a second or more (nginx asks for the same on Linux).
const BACKLOG: u32 = 4096;

async fn bind(key: &str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    let listen = || -> std::io::Result<TcpListener> {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As std and tokio's own bind do: a restart may reuse the address at once.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|e| StartError::Io(format!("{key}: cannot listen on {addr}: {e}")))
}

fn local_addr(listener: &TcpListener) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|e| StartError::Io(format!("cannot read listener address: {e}")))
}

/// Wait (bounded) for every listener to finish draining after the shutdown signal.
pub(super) async fn drain(mut listeners: ListenerTasks) -> Stopped {
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
