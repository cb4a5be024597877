//! The command line: one `Cli` with global options and one variant per subcommand.
//!
//! Man pages and shell completions are generated from this definition
//! (`cargo run -- generate`), never written by hand.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::commands;

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  check failed, unhealthy, or violations found
  2  usage or configuration error
  3  I/O or network error";

#[derive(Debug, Parser)]
#[command(
    name = "timproxy",
    version,
    about = "TI-Messenger Messenger Proxy: Matrix v1.11 inbound proxy with TIM rules, intercepting federation forward proxy, federation list, health and metrics",
    after_help = EXIT_CODES_HELP,
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GlobalOpts {
    /// Configuration file [default: ./timproxy.yaml if it exists, else built-in defaults]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive
    /// [default: admin.log_level_default from the config, else info]
    #[arg(long, global = true, value_name = "LEVEL", env = "TIMPROXY_LOG")]
    pub log_level: Option<String>,
    /// Log line format
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Output format of inspecting subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum OutputFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy: inbound, outbound, admin and information listeners plus background jobs
    #[command(after_help = EXIT_CODES_HELP)]
    Serve(commands::serve::ServeArgs),
    /// Create the interception CA, or a leaf certificate signed by it
    #[command(after_help = EXIT_CODES_HELP)]
    GenCa(commands::gen_ca::GenCaArgs),
    /// Fetch, verify and store the federation list once
    #[command(after_help = EXIT_CODES_HELP)]
    FetchFederation(commands::fetch_federation::FetchFederationArgs),
    /// Probe a running instance's admin listener (for container HEALTHCHECKs)
    #[command(after_help = EXIT_CODES_HELP)]
    CheckHealth(commands::check_health::CheckHealthArgs),
    /// Make a running instance re-read its configuration (through its admin listener) and report the outcome
    #[command(after_help = EXIT_CODES_HELP)]
    Reload(commands::reload::ReloadArgs),
    /// Apply or list database migrations (SQLite or PostgreSQL)
    #[command(after_help = EXIT_CODES_HELP)]
    Migrate(commands::migrate::MigrateArgs),
    /// Validate artefacts (config, permission configs, federation lists, endpoint lists) against Matrix v1.11 and TIM rules
    #[command(after_help = EXIT_CODES_HELP)]
    SpecCheck(commands::spec_check::SpecCheckArgs),
    /// Regenerate man pages and shell completions (maintainers)
    #[command(hide = true)]
    Generate(commands::generate::GenerateArgs),
}
