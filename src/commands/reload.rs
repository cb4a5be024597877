//! `timproxy reload`: ask a running instance to re-read its configuration, and say what
//! happened.
//!
//! It asks the admin listener (`POST /config/reload`) rather than sending SIGHUP: that works
//! from another container or through `kubectl exec` without a pid file, and the answer says
//! whether the new configuration is active or was refused (with file:line:column), so a deploy
//! script can stop on a bad file. The operator token comes from `--token-file`, else from the
//! configuration (`admin.token`, `admin.token_file`, `TIMPROXY_ADMIN__TOKEN`).
//!
//! Exit 0 applied or unchanged, 1 refused (the old configuration keeps running), 2 not allowed
//! or bad arguments, 3 unreachable.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::StatusCode;

use crate::cli::{GlobalOpts, OutputFormat};

use super::{CliError, CmdResult, admin_base_url, admin_url, call_admin, exit, load_config};

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// Admin base URL [default: http://<admin.listen from the config>]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// File holding the operator token [default: admin.token / admin.token_file from the config]
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Give up after this long (e.g. 10s)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub async fn run(args: ReloadArgs, global: &GlobalOpts) -> CmdResult {
    // The file may be the broken one being reloaded: with --url it is only a token source,
    // and the server reports what is wrong with it.
    let (base, config) = match (&args.url, load_config(global)) {
        (Some(url), loaded) => (
            url.trim_end_matches('/').to_owned(),
            loaded.ok().map(|(config, _)| config),
        ),
        (None, Ok((config, _))) => (admin_base_url(&config), Some(config)),
        (None, Err(e)) => return Err(e.with_hint("pass --url to reach the admin listener")),
    };
    let url = admin_url(&base, "/config/reload")?;
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("--token-file {}: {e}", path.display())))?;
            Some(text.trim().to_owned())
        }
        None => match &config {
            Some(config) => config
                .admin
                .operator_token()
                .map_err(|e| CliError::usage(format!("admin.token_file: {e}")))?,
            None => None,
        },
    };
    let (status, body) = call_admin(args.timeout, &url, |client| {
        let request = client.post(&url);
        match &token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    })
    .await?;
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        return Err(CliError::usage(format!("{url}: {}", text("error")))
            .with_hint("give the operator token with --token-file or admin.token_file"));
    }
    if !matches!(status, StatusCode::OK | StatusCode::UNPROCESSABLE_ENTITY) {
        return Err(CliError::io(format!(
            "{url} answered {status}: {}",
            text("error")
        )));
    }
    if args.format == OutputFormat::Json {
        println!("{body}");
    }
    let outcome = text("outcome");
    if outcome == "rejected" {
        return Err(
            CliError::failed(format!("reload refused: {}", text("error")))
                .with_hint("the previous configuration keeps running"),
        );
    }
    if args.format == OutputFormat::Text {
        let list = |key: &str| -> Vec<String> {
            body[key]
                .as_array()
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        println!("reload: {outcome} (configuration {})", text("hash"));
        let changed = list("changed");
        if !changed.is_empty() {
            println!("  changed: {}", changed.join(", "));
        }
        let waiting = list("restart_required");
        if !waiting.is_empty() {
            println!("  waits for a restart: {}", waiting.join(", "));
        }
    }
    Ok(exit::OK)
}
