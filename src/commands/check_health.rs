//! `timproxy check-health`: probe a running instance's admin listener.
//!
//! Made for container HEALTHCHECKs and scripts: exit 0 healthy, 1 unhealthy, 3 unreachable.

use std::time::Duration;

use crate::cli::{GlobalOpts, OutputFormat};

use super::{CmdResult, admin_base_url, admin_url, call_admin, exit, load_config};

#[derive(Debug, clap::Args)]
pub struct CheckHealthArgs {
    /// Admin base URL [default: http://<admin.listen from the config>]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Give up after this long (e.g. 500ms, 3s)
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Check readiness (all components) instead of liveness
    #[arg(long)]
    pub ready: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub async fn run(args: CheckHealthArgs, global: &GlobalOpts) -> CmdResult {
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => admin_base_url(&load_config(global)?.0),
    };
    let path = if args.ready {
        "/health/ready"
    } else {
        "/health/live"
    };
    let url = admin_url(&base, path)?;
    let (status, body) = call_admin(args.timeout, &url, |client| client.get(&url)).await?;
    let healthy = status.is_success();
    match args.format {
        OutputFormat::Json => {
            let out = serde_json::json!({
                "url": url,
                "http_status": status.as_u16(),
                "healthy": healthy,
                "report": body,
            });
            println!("{out}");
        }
        OutputFormat::Text => {
            let what = if args.ready { "ready" } else { "live" };
            println!(
                "{}: {} (HTTP {})",
                what,
                if healthy { "yes" } else { "no" },
                status.as_u16()
            );
            if let Some(components) = body.get("components").and_then(|c| c.as_object()) {
                for (name, c) in components {
                    let ok = c.get("ready").and_then(|r| r.as_bool()).unwrap_or(false);
                    let reason = c.get("reason").and_then(|r| r.as_str()).unwrap_or("");
                    println!("  {name}: {} — {reason}", if ok { "ok" } else { "FAIL" });
                }
            }
        }
    }
    Ok(if healthy { exit::OK } else { exit::FAILED })
}
