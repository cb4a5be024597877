//! Helpers for tests that run the real `timproxy` binary.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `timproxy serve` child, killed on drop.
pub struct Served {
    pub child: Child,
    /// Fields of the JSON "timproxy started" log line (listener addresses, …).
    pub started: serde_json::Value,
    #[allow(dead_code)]
    pub stderr_lines: mpsc::Receiver<String>,
}

impl Served {
    /// Start `timproxy --config <config> serve` in `dir` and wait (bounded) for the startup line.
    pub fn start(dir: &Path, config: &Path, extra_env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_timproxy"));
        cmd.current_dir(dir)
            .arg("--log-format")
            .arg("json")
            .arg("--config")
            .arg(config)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        #[allow(clippy::zombie_processes)] // waited for in `Drop` / `terminate`
        let mut child = cmd.spawn().expect("spawn timproxy");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                        && v["fields"]["message"] == "timproxy started"
                    {
                        return Served {
                            child,
                            started: v["fields"].clone(),
                            stderr_lines: rx,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "timproxy did not start within 30 s; stderr:\n{}",
                        seen.join("\n")
                    );
                }
            }
        }
    }

    pub fn addr(&self, listener: &str) -> String {
        self.started[listener]
            .as_str()
            .unwrap_or_else(|| panic!("no `{listener}` in startup line {}", self.started))
            .to_owned()
    }

    /// SIGTERM and wait (bounded) for the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `timproxy ARGS` to completion (bounded) and return (exit code, stdout, stderr).
pub fn run_cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_timproxy"))
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn timproxy");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("timproxy {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of the counter `timproxy_{family}_total{listener,rule,mode}` in a metrics text
/// (0 when it was never incremented).
pub fn rule_count(metrics: &str, family: &str, listener: &str, rule: &str, mode: &str) -> u64 {
    let prefix = format!(
        "timproxy_{family}_total{{listener=\"{listener}\",rule=\"{rule}\",mode=\"{mode}\"}} "
    );
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// A config with every listener on 127.0.0.1:0 and SQLite in `dir`.
pub fn loopback_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let text = format!(
        "inbound:\n  listen: 127.0.0.1:0\noutbound:\n  listen: 127.0.0.1:0\nadmin:\n  listen: 127.0.0.1:0\ninfo_api:\n  listen: 127.0.0.1:0\ndatabase:\n  url: sqlite://{}/tp.db\n{extra}",
        dir.display()
    );
    let path = dir.join("timproxy.yaml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A TCP relay in front of a real server that can play an outage: [`FaultyRelay::cut`] drops
/// every relayed connection and turns new ones away, as a server restart looks to a client;
/// [`FaultyRelay::restore`] relays again.
pub struct FaultyRelay {
    pub addr: std::net::SocketAddr,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections refused while cut.
    refused: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pipes: std::sync::Arc<std::sync::Mutex<tokio::task::JoinSet<()>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultyRelay {
    pub async fn start(target: std::net::SocketAddr) -> FaultyRelay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let pipes = std::sync::Arc::new(std::sync::Mutex::new(tokio::task::JoinSet::new()));
        let (flag, count, set) = (down.clone(), refused.clone(), pipes.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if flag.load(Ordering::SeqCst) {
                    count.fetch_add(1, Ordering::SeqCst);
                    drop(client);
                    continue;
                }
                set.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        FaultyRelay {
            addr,
            down,
            refused,
            pipes,
            accept,
        }
    }

    /// Drop every open connection and refuse new ones until [`FaultyRelay::restore`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        self.pipes.lock().unwrap().abort_all();
    }

    /// How many connections were refused while cut.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for FaultyRelay {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut pipes) = self.pipes.lock() {
            pipes.abort_all();
        }
    }
}

/// An inbound listener on 127.0.0.1 served in this process with `config`, the federation list
/// `hs1.test`, `hs2.test` and metrics of its own; for tests that talk to it over raw sockets.
pub struct InboundUnderTest {
    pub addr: std::net::SocketAddr,
    pub metrics: std::sync::Arc<timproxy::metrics::Metrics>,
    pub trigger: timproxy::shutdown::ShutdownTrigger,
    pub server: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start_inbound(config: timproxy::config::Config) -> InboundUnderTest {
    use timproxy::federation::{DomainEntry, FederationHandle, FederationList, ListSource};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let entry = |domain: &str| DomainEntry {
        domain: domain.into(),
        is_insurance: false,
        telematik_id: None,
        ik: vec![],
    };
    let list = FederationList::new(
        1,
        time::OffsetDateTime::now_utc(),
        false,
        ListSource::File,
        vec![entry("hs1.test"), entry("hs2.test")],
    );
    let federation = FederationHandle::with_list(Duration::from_secs(3600), list);
    let metrics = timproxy::metrics::Metrics::new();
    let state = timproxy::inbound::InboundState::new(&config, federation, metrics.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (trigger, signal) = timproxy::shutdown::channel();
    let server = tokio::spawn(timproxy::inbound::serve(
        listener,
        std::sync::Arc::new(state),
        signal,
    ));
    InboundUnderTest {
        addr,
        metrics,
        trigger,
        server,
    }
}
