//! `timproxy spec-check PATH...`: validate files for CI. Parses arguments, runs
//! [`crate::spec_check::Checker`] over every path and prints the diagnostics; the exit code
//! is the report's (0 clean or warnings only, 1 errors, 2 unreadable input or bad usage).

use std::io::Write as _;
use std::path::PathBuf;

use clap::ValueEnum;

use super::{CliError, CmdResult};
use crate::cli::{GlobalOpts, OutputFormat};
use crate::config::Config;
use crate::policy::permission_config::ConfigKind;
use crate::spec_check::{Checker, Kind, Options, Report};

/// Schema of bare permission-config content (an event names its own type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PermissionType {
    /// de.gematik.tim.account.permissionconfig.pro.v1
    Pro,
    /// de.gematik.tim.account.permissionconfig.epa.v1
    Epa,
    /// de.gematik.tim.account.permissionconfig.v1 (TI-M Basis)
    Legacy,
}

impl From<PermissionType> for ConfigKind {
    fn from(t: PermissionType) -> Self {
        match t {
            PermissionType::Pro => ConfigKind::Pro,
            PermissionType::Epa => ConfigKind::Epa,
            PermissionType::Legacy => ConfigKind::Legacy,
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_long_help = long_help())]
pub struct SpecCheckArgs {
    /// Files or directories to check
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Treat every file as this kind instead of detecting it
    #[arg(long, value_enum, value_name = "KIND")]
    pub kind: Option<Kind>,
    /// Output format (json: one document with all diagnostics and a summary)
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Check endpoints against the Matrix v1.11 table only, not the TIM endpoint blocks
    #[arg(long)]
    pub matrix_only: bool,
    /// Also allow this endpoint, like inbound.extra_endpoints (repeatable; --config adds the
    /// configured ones)
    #[arg(long = "extra-endpoint", value_name = "METHOD /PATH")]
    pub extra_endpoints: Vec<String>,
    /// Schema for bare permission-config content [default: legacy if it has only
    /// domainExceptions, else pro]
    #[arg(long, value_enum, value_name = "TYPE")]
    pub permission_type: Option<PermissionType>,
}

/// `--help` text: what the subcommand does in detail, then the shared exit-code table (the
/// one-line about comes from the subcommand's entry in `cli.rs`).
fn long_help() -> String {
    format!(
        "Kinds are detected from content: an OpenAPI 3 / Swagger 2 document or a list of \
`METHOD /path` lines (every operation checked against the endpoint allow-list and the TIM \
endpoint blocks), a permission config (content or account-data event), a timproxy config \
file, a federation list (registration-service JSON or VZD JWS), or the reference Messenger \
Proxy's application.yml. Directories are searched recursively for .json, .yaml, .yml, .jws, \
.txt, .tsv and .endpoints files; files found there whose kind cannot be told are skipped.

A reference application.yml is translated: its `${{ENV:-default}}` substitutions are resolved \
from the environment as the reference would, the equivalent timproxy.yaml is printed on stdout \
(each key names the setting it came from) and checked like `serve` loads it, and every setting \
without an equivalent gets a warning on stderr. \
`timproxy spec-check application.yml > timproxy.yaml` writes the starting point of a migration.

Diagnostics: `path:line:col: error|warning: message [rule]` (on stderr when a translation is \
printed). Exit 0 when clean or with warnings only, 1 when any error was found, 2 when a file \
could not be read or on bad usage.

{}",
        crate::cli::EXIT_CODES_HELP
    )
}

pub async fn run(args: SpecCheckArgs, global: &GlobalOpts) -> CmdResult {
    let mut extra_endpoints = args.extra_endpoints;
    // Only an explicitly named config contributes: an implicit ./timproxy.yaml in the
    // directory being checked must not change the verdict on unrelated files.
    if let Some(path) = &global.config {
        let (config, _) = Config::load(Some(path)).map_err(|e| CliError::usage(e.to_string()))?;
        if config.sso_endpoints_enabled() {
            extra_endpoints.extend(crate::inbound::sso::entries().map(str::to_owned));
        }
        extra_endpoints.extend(config.inbound.extra_endpoints);
    }
    let options = Options {
        kind: args.kind,
        matrix_only: args.matrix_only,
        extra_endpoints,
        permission_type: args.permission_type.map(ConfigKind::from),
    };
    let checker = Checker::new(options).map_err(|e| CliError::usage(e.to_string()))?;
    let paths = args.paths;
    let report = tokio::task::spawn_blocking(move || Report {
        files: paths.iter().flat_map(|p| checker.check_path(p)).collect(),
    })
    .await
    .map_err(|e| CliError::io(format!("spec-check worker failed: {e}")))?;
    let mut stdout = std::io::stdout().lock();
    let written = match (args.format, report.render_outputs()) {
        // A translation is the result, as a compiler's output: it goes to stdout (so it can
        // be redirected into timproxy.yaml) and the findings to stderr.
        (OutputFormat::Text, Some(outputs)) => {
            eprint!("{}", report.render_text());
            stdout.write_all(outputs.as_bytes())
        }
        (OutputFormat::Text, None) => {
            let text = report.render_text();
            stdout.write_all(text.as_bytes())
        }
        (OutputFormat::Json, _) => writeln!(stdout, "{}", report.render_json()),
    };
    written
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::io(format!("cannot write the report: {e}")))?;
    if args.format == OutputFormat::Text {
        eprintln!("{}", report.summary_line());
    }
    Ok(report.exit_code())
}
