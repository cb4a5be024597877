//! `timproxy gen-ca`: create the interception CA (replacing the openssl steps operators ran
//! for the reference), and `timproxy gen-ca leaf`: a server certificate signed by it for test
//! homeservers or the inbound TLS listener.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::{CliError, CmdResult, exit};
use crate::cli::{GlobalOpts, OutputFormat};
use crate::tls::ca::{self, CaOptions, CertificateAuthority, KeyType};
use crate::tls::leaf::{self, LeafUsage, SubjectName};
use crate::tls::{TlsError, ca::fingerprint};

/// Leaf file names `gen-ca leaf` writes.
pub const LEAF_CERT_FILE: &str = "leaf.crt";
pub const LEAF_KEY_FILE: &str = "leaf.key";

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct GenCaArgs {
    #[command(subcommand)]
    pub action: Option<GenCaAction>,
    #[command(flatten)]
    pub ca: CaArgs,
}

#[derive(Debug, Subcommand)]
pub enum GenCaAction {
    /// Issue a serverAuth + clientAuth leaf certificate signed by an existing CA
    Leaf(LeafArgs),
}

#[derive(Debug, Args)]
pub struct CaArgs {
    /// Directory to write ca.crt and ca.key into (created if missing)
    #[arg(long, value_name = "DIR", default_value = "certificates")]
    pub out: PathBuf,
    /// Common name of the CA
    #[arg(long, value_name = "NAME", default_value = "timproxy interception CA")]
    pub cn: String,
    /// Organization name of the CA
    #[arg(long, value_name = "ORG")]
    pub org: Option<String>,
    /// Validity in days
    #[arg(long, value_name = "N", default_value_t = 3650)]
    pub days: u32,
    /// Key algorithm
    #[arg(long, value_enum, default_value_t = KeyTypeArg::P256)]
    pub key_type: KeyTypeArg,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

#[derive(Debug, Args)]
pub struct LeafArgs {
    /// Directory holding ca.crt and ca.key
    #[arg(long, value_name = "DIR")]
    pub ca: PathBuf,
    /// DNS name for the certificate (repeatable; the first is also the common name)
    #[arg(long = "host", value_name = "NAME", required = true, num_args = 1..)]
    pub hosts: Vec<String>,
    /// IP address for the certificate (repeatable)
    #[arg(long = "ip", value_name = "ADDR", num_args = 1..)]
    pub ips: Vec<std::net::IpAddr>,
    /// Directory to write leaf.crt and leaf.key into (created if missing)
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Validity in days
    #[arg(long, value_name = "N", default_value_t = 365)]
    pub days: u32,
    /// Overwrite existing files
    #[arg(long)]
    pub force: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

/// Key algorithms offered on the command line (those ring can generate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    P256,
    P384,
    Ed25519,
}

impl From<KeyTypeArg> for KeyType {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::P256 => KeyType::P256,
            KeyTypeArg::P384 => KeyType::P384,
            KeyTypeArg::Ed25519 => KeyType::Ed25519,
        }
    }
}

pub async fn run(args: GenCaArgs, _global: &GlobalOpts) -> CmdResult {
    match args.action {
        Some(GenCaAction::Leaf(leaf)) => run_leaf(&leaf),
        None => run_ca(&args.ca),
    }
}

fn tls_error(context: &str, error: TlsError) -> CliError {
    let message = format!("{context}: {error}");
    if error.is_usage() {
        CliError::usage(message)
    } else {
        CliError::io(message)
    }
}

fn ensure_dir(dir: &Path) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::io(format!("cannot create {}: {e}", dir.display())))
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

fn run_ca(args: &CaArgs) -> CmdResult {
    let options = CaOptions {
        common_name: args.cn.clone(),
        organization: args.org.clone(),
        days: args.days,
        key_type: args.key_type.into(),
    };
    let (cert_path, key_path) = ca::paths_in(&args.out);
    if !args.force {
        for path in [&cert_path, &key_path] {
            if path.exists() {
                return Err(CliError::usage(format!(
                    "{} already exists; not overwriting it",
                    path.display()
                ))
                .with_hint(
                    "pass --force to replace the CA (every leaf signed by it stops being trusted)",
                ));
            }
        }
    }
    let generated =
        ca::generate_ca(&options).map_err(|e| tls_error("cannot generate the CA", e))?;
    ensure_dir(&args.out)?;
    ca::write_ca(&cert_path, &key_path, &generated, args.force)
        .map_err(|e| tls_error("cannot write the CA", e))?;
    let cert_abs = absolute(&cert_path);
    let key_abs = absolute(&key_path);
    let synapse = format!("federation_custom_ca_list: [{}]", cert_abs.display());
    match args.format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "cert_file": cert_abs,
                "key_file": key_abs,
                "key_type": options.key_type.name(),
                "days": options.days,
                "fingerprint_sha256": generated.fingerprint,
                "synapse_trust": synapse,
            });
            println!("{report}");
        }
        OutputFormat::Text => {
            println!(
                "wrote {} ({} CA, valid {} days)",
                cert_abs.display(),
                options.key_type.name(),
                options.days
            );
            println!("wrote {} (private key, mode 0600)", key_abs.display());
            println!("SHA-256 fingerprint: {}", generated.fingerprint);
            println!(
                "Homeservers must trust this CA for federation; in Synapse's homeserver.yaml:"
            );
            println!("  {synapse}");
        }
    }
    Ok(exit::OK)
}

fn run_leaf(args: &LeafArgs) -> CmdResult {
    let mut names = Vec::with_capacity(args.hosts.len() + args.ips.len());
    for host in &args.hosts {
        match SubjectName::parse(host) {
            Ok(SubjectName::Dns(name)) => names.push(SubjectName::Dns(name)),
            Ok(SubjectName::Ip(_)) => {
                return Err(CliError::usage(format!(
                    "--host {host} is an IP address; use --ip for addresses"
                )));
            }
            Err(e) => return Err(tls_error("--host", e)),
        }
    }
    names.extend(args.ips.iter().copied().map(SubjectName::Ip));
    if args.days == 0 {
        return Err(CliError::usage("--days must be at least 1"));
    }
    let (ca_cert, ca_key) = ca::paths_in(&args.ca);
    let authority = CertificateAuthority::load(&ca_cert, &ca_key)
        .map_err(|e| tls_error("cannot load the CA", e))?;
    let minted = leaf::mint(
        &authority,
        &names,
        Duration::from_secs(u64::from(args.days) * 86_400),
        LeafUsage::ServerAndClient,
    )
    .map_err(|e| tls_error("cannot issue the leaf", e))?;
    ensure_dir(&args.out)?;
    let cert_path = args.out.join(LEAF_CERT_FILE);
    let key_path = args.out.join(LEAF_KEY_FILE);
    let cert_pem = minted.cert_pem();
    let key_pem = minted.key_pem();
    ca::write_files(
        &[
            (&cert_path, cert_pem.as_bytes(), 0o644),
            (&key_path, key_pem.as_bytes(), 0o600),
        ],
        args.force,
    )
    .map_err(|e| match e {
        TlsError::Exists { path } => CliError::usage(format!(
            "{} already exists; not overwriting it",
            path.display()
        ))
        .with_hint("pass --force to replace it"),
        other => tls_error("cannot write the leaf", other),
    })?;
    let cert_abs = absolute(&cert_path);
    let key_abs = absolute(&key_path);
    let names_text: Vec<String> = names.iter().map(SubjectName::as_text).collect();
    let fp = fingerprint(&minted.cert_der);
    match args.format {
        OutputFormat::Json => {
            let report = serde_json::json!({
                "cert_file": cert_abs,
                "key_file": key_abs,
                "names": names_text,
                "days": args.days,
                "issuer": authority.subject(),
                "fingerprint_sha256": fp,
            });
            println!("{report}");
        }
        OutputFormat::Text => {
            println!(
                "wrote {} ({}; valid {} days; issued by {})",
                cert_abs.display(),
                names_text.join(", "),
                args.days,
                authority.subject()
            );
            println!("wrote {} (private key, mode 0600)", key_abs.display());
            println!("SHA-256 fingerprint: {fp}");
        }
    }
    Ok(exit::OK)
}
