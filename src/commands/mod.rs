//! One file per subcommand: parse arguments → call the library → map the outcome to an exit
//! code. Errors print one line `error: …` (plus an optional `hint: …`).

pub mod check_health;
pub mod fetch_federation;
pub mod gen_ca;
pub mod generate;
pub mod migrate;
pub mod reload;
pub mod serve;
pub mod spec_check;

use std::path::PathBuf;

use crate::cli::GlobalOpts;
use crate::config::Config;

/// Stable exit codes (DESIGN.md §4).
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const IO: u8 = 3;
}

/// A failed command: what to print and which exit code to use.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
            hint: None,
        }
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self {
            code: exit::IO,
            message: message.into(),
            hint: None,
        }
    }
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: exit::FAILED,
            message: message.into(),
            hint: None,
        }
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

pub type CmdResult = Result<u8, CliError>;

/// `http://host:port` of the configured admin listener (loopback when it binds every address).
pub fn admin_base_url(config: &Config) -> String {
    let addr = config.admin.listen;
    let host = if addr.ip().is_unspecified() {
        "127.0.0.1".to_owned()
    } else if addr.is_ipv6() {
        format!("[{}]", addr.ip())
    } else {
        addr.ip().to_string()
    };
    format!("http://{host}:{}", addr.port())
}

/// `base` + `path` as a URL, or a usage error naming `--url` (the only way a bad base gets in).
pub fn admin_url(base: &str, path: &str) -> Result<String, CliError> {
    let url = format!("{base}{path}");
    match url::Url::parse(&url) {
        Ok(_) => Ok(url),
        Err(e) => Err(CliError::usage(format!(
            "--url `{base}` is not a valid URL: {e}"
        ))),
    }
}

/// Send one request to a running instance's admin listener (never through a proxy: the admin
/// listener is local) and read its JSON answer; an answer that is not JSON reads as `{}`, so
/// the caller judges by the status. Unreachable is an I/O error (exit 3).
pub async fn call_admin(
    timeout: std::time::Duration,
    url: &str,
    build: impl FnOnce(&reqwest::Client) -> reqwest::RequestBuilder,
) -> Result<(http::StatusCode, serde_json::Value), CliError> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| CliError::io(format!("cannot build HTTP client: {e}")))?;
    let response = build(&client).send().await.map_err(|e| {
        CliError::io(format!(
            "{url} unreachable: {}",
            crate::admin::error_chain(&e)
        ))
    })?;
    let status = response.status();
    let body = response
        .json()
        .await
        .unwrap_or_else(|_| serde_json::json!({}));
    Ok((status, body))
}

/// Load the configuration named by the global options; config errors are usage errors (2).
pub fn load_config(global: &GlobalOpts) -> Result<(Config, Option<PathBuf>), CliError> {
    Config::load(global.config.as_deref()).map_err(|e| CliError::usage(e.to_string()))
}
