//! `timproxy`: parse arguments, set up logging, dispatch, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: a proxy allocates and frees small buffers and
/// header maps on every request, and glibc malloc showed up as ~6 % of the inbound profile.
/// The `system-allocator` feature leaves it out, for heap profilers that see only the system
/// allocator (valgrind's dhat and massif; see BENCHMARKS.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use timproxy::cli::{Cli, Command};
use timproxy::commands::{self, CliError};
use timproxy::logging;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // An empty `TIMPROXY_LOG=` means "not set", not "log nothing".
    let log_level = cli
        .global
        .log_level
        .as_deref()
        .filter(|l| !l.trim().is_empty());
    if let Err(e) = logging::init(log_level, cli.global.log_format) {
        return report(CliError::usage(format!("--log-level / TIMPROXY_LOG: {e}")));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match runtime_builder().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return report(CliError::io(format!("cannot start the async runtime: {e}"))),
    };
    let global = cli.global.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => commands::serve::run(args, &global).await,
            Command::GenCa(args) => commands::gen_ca::run(args, &global).await,
            Command::FetchFederation(args) => commands::fetch_federation::run(args, &global).await,
            Command::CheckHealth(args) => commands::check_health::run(args, &global).await,
            Command::Reload(args) => commands::reload::run(args, &global).await,
            Command::Migrate(args) => commands::migrate::run(args, &global).await,
            Command::SpecCheck(args) => commands::spec_check::run(args, &global).await,
            Command::Generate(args) => commands::generate::run(args, &global).await,
        }
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => report(err),
    }
}

/// The work-stealing runtime with one worker thread per CPU the process may use (cgroup
/// quotas and affinity count), and never fewer than two.
///
/// Why two even on one CPU: a lone thread goes idle between events, and when it then sends
/// to a homeserver on the same host, the kernel's wake-up placement (a synchronous wake-up
/// from a CPU running only the sender) moves the homeserver onto the proxy's CPU, where the
/// two compete while the other CPU idles. With a second worker the CPU is seldom left to the
/// sender alone, as with nginx's two workers. Measured on a 2-CPU VM with the proxy pinned to
/// one CPU (`benches/compare/inbound.sh`): a current-thread runtime reached 0.67–0.77× nginx's
/// requests per second, two workers 0.91–1.02× at about 3 % more CPU per request
/// (BENCHMARKS.md, 2026-12-06 fourth session). `TOKIO_WORKER_THREADS` overrides the count.
fn runtime_builder() -> tokio::runtime::Builder {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        builder.worker_threads(cpus.max(2));
    }
    builder
}

fn report(err: CliError) -> ExitCode {
    eprintln!("error: {}", err.message);
    if let Some(hint) = &err.hint {
        eprintln!("hint: {hint}");
    }
    ExitCode::from(err.code)
}
