//! `timproxy fetch-federation`: fetch the federation list once, verify it, optionally keep
//! it (`--out FILE` as registration-service JSON, or `--store` into the database), and print
//! a summary. Exit codes: 0 ok, 1 the list was rejected (signature, format), 2 usage or
//! configuration error, 3 the source (or the output) could not be read or written.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use time::OffsetDateTime;

use super::{CliError, CmdResult, exit, load_config};
use crate::cli::{GlobalOpts, OutputFormat};
use crate::federation::jws::{JwsVerifier, TrustAnchors};
use crate::federation::source::{
    Decoded, FetchResult, ListFetcher, PayloadFormat, SourceSpec, decode,
};
use crate::federation::{FederationError, SnapshotRecord, store_hook};

#[derive(Debug, clap::Args)]
pub struct FetchFederationArgs {
    /// Where to fetch from: an http(s) URL or a file (JSON or JWS, told apart by content)
    /// [default: federation.source of the configuration]
    #[arg(long, value_name = "URL|FILE")]
    pub source: Option<String>,
    /// PEM trust anchor for signed (JWS) lists; repeatable [default: federation.trust_anchors]
    #[arg(long = "trust-anchor", value_name = "FILE")]
    pub trust_anchors: Vec<PathBuf>,
    /// Save the verified list in the database (federation_snapshots), as `serve` would
    #[arg(long, conflicts_with = "out")]
    pub store: bool,
    /// Write the verified list to FILE as registration-service JSON
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Summary format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub async fn run(args: FetchFederationArgs, global: &GlobalOpts) -> CmdResult {
    let (config, _) = load_config(global)?;
    let spec = match &args.source {
        Some(arg) => SourceSpec::from_arg(arg),
        None => SourceSpec::from_config(&config),
    }
    .map_err(|e| CliError::usage(e.to_string()))?;
    let anchor_files = if args.trust_anchors.is_empty() {
        config.federation.trust_anchors.clone()
    } else {
        args.trust_anchors.clone()
    };
    let progress = Progress::new();

    // Download.
    progress.start(format!("downloading from {}", spec.describe()));
    let fetcher = ListFetcher::new(spec.clone(), config.registration_service.timeout)
        .map_err(|e| CliError::usage(e.to_string()))?;
    let download = match fetcher.fetch(None).await {
        Ok(FetchResult::Fetched(download)) => download,
        Ok(FetchResult::NotModified) => {
            progress.clear();
            return Err(CliError::io(format!(
                "{}: answered \"not modified\" without a list",
                spec.describe()
            )));
        }
        Err(e) => {
            progress.clear();
            return Err(CliError::io(e.to_string()));
        }
    };
    let now = OffsetDateTime::now_utc();
    progress.done(format!(
        "download: {} ({} bytes, {})",
        spec.describe(),
        download.raw.len(),
        match download.format {
            PayloadFormat::Json => "JSON",
            PayloadFormat::Jws => "JWS",
        }
    ));

    // Verify.
    progress.start("verifying".to_owned());
    let anchors = if download.format == PayloadFormat::Jws {
        TrustAnchors::from_pem_files(&anchor_files).map_err(|e| {
            progress.clear();
            CliError::usage(e.to_string())
        })?
    } else {
        TrustAnchors::default()
    };
    let verifier = JwsVerifier::new(anchors, config.federation.allow_es256);
    let decoded =
        decode(&download.raw, &verifier, spec.requires_signature(), now).map_err(|e| {
            progress.clear();
            cli_error(e).with_hint(
                "the previous list stays in use; check federation.trust_anchors and the source",
            )
        })?;
    let signature = SignatureSummary::of(&decoded);
    progress.done(format!("verify: {}", signature.text()));

    // Keep.
    let mut written = None;
    if let Some(out) = &args.out {
        progress.start(format!("writing {}", out.display()));
        tokio::fs::write(out, decoded.list.to_registration_json())
            .await
            .map_err(|e| {
                progress.clear();
                CliError::io(format!("{}: {e}", out.display()))
            })?;
        progress.done(format!("store: wrote {}", out.display()));
        written = Some(out.display().to_string());
    }
    if args.store {
        progress.start("storing in the database".to_owned());
        let record = SnapshotRecord {
            version: decoded.list.version,
            fetched_at: now,
            source: spec.kind().to_owned(),
            raw: download.raw.clone(),
            verified: decoded.signature.is_some(),
        };
        store_hook(&config, &record).await.map_err(|e| {
            progress.clear();
            CliError::io(e.to_string())
        })?;
        progress.done("store: saved to the database".to_owned());
    }

    let age = download
        .modified
        .map(|m| Duration::try_from(now - m).unwrap_or(Duration::ZERO))
        .unwrap_or(Duration::ZERO);
    let summary = Summary {
        source: spec.describe(),
        version: decoded.list.version,
        domains: decoded.list.entries.len(),
        insurance: decoded.list.insurance_count(),
        signature,
        fetched_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        age_seconds: age.as_secs(),
        written,
        stored: args.store,
    };
    match args.format {
        OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
        }
        OutputFormat::Text => print!("{}", summary.text()),
    }
    Ok(exit::OK)
}

/// Rejected lists exit 1; unreadable sources and store failures exit 3.
fn cli_error(e: FederationError) -> CliError {
    match e {
        FederationError::Config(_) => CliError::usage(e.to_string()),
        e if e.is_rejection() => CliError::failed(e.to_string()),
        e => CliError::io(e.to_string()),
    }
}

#[derive(Serialize)]
struct SignatureSummary {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    alg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    anchor: Option<String>,
}

impl SignatureSummary {
    fn of(decoded: &Decoded) -> Self {
        match &decoded.signature {
            Some(sig) => Self {
                status: "verified",
                alg: Some(sig.alg.to_string()),
                signer: Some(sig.signer.clone()),
                anchor: Some(sig.anchor.clone()),
            },
            None => Self {
                status: "unsigned",
                alg: None,
                signer: None,
                anchor: None,
            },
        }
    }

    fn text(&self) -> String {
        match (&self.alg, &self.signer) {
            (Some(alg), Some(signer)) => format!("verified ({alg}, signer {signer})"),
            _ => "unsigned (registration-service JSON)".to_owned(),
        }
    }
}

#[derive(Serialize)]
struct Summary {
    source: String,
    version: i64,
    domains: usize,
    insurance: usize,
    signature: SignatureSummary,
    fetched_at: String,
    age_seconds: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<String>,
    stored: bool,
}

impl Summary {
    fn text(&self) -> String {
        let mut out = format!(
            "source:    {}\nversion:   {}\ndomains:   {}\ninsurance: {}\nsignature: {}\nage:       {}\n",
            self.source,
            self.version,
            self.domains,
            self.insurance,
            self.signature.text(),
            humantime::format_duration(Duration::from_secs(self.age_seconds)),
        );
        if let Some(path) = &self.written {
            out.push_str(&format!("written:   {path}\n"));
        }
        if self.stored {
            out.push_str("stored:    database\n");
        }
        out
    }
}

/// A spinner per step on a terminal; one plain line per finished step otherwise (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) = ProgressStyle::with_template("{spinner} {msg}") {
                bar.set_style(style);
            }
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self { bar }
    }

    fn start(&self, message: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(message);
        }
    }

    fn done(&self, line: String) {
        match &self.bar {
            Some(bar) => bar.println(format!("✔ {line}")),
            None => eprintln!("{line}"),
        }
    }

    fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}
