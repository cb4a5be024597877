//! `timproxy migrate`: apply or list the embedded database migrations.

use serde_json::json;

use super::{CliError, CmdResult, exit, load_config};
use crate::cli::{GlobalOpts, OutputFormat};
use crate::store::{MigrationStatus, Store, StoreError};

const MIGRATE_HELP: &str = "\
Exit codes:
  0  success (migrations applied, or nothing to do)
  1  the database has migrations this timproxy does not know (migrated by a newer version)
  2  usage or configuration error
  3  database unreachable, or a migration failed";

#[derive(Debug, clap::Args)]
#[command(after_long_help = MIGRATE_HELP)]
pub struct MigrateArgs {
    /// Database URL (sqlite://PATH or postgres://…) [default: database.url from the config]
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// List applied and pending migrations; change nothing
    #[arg(long, conflicts_with = "dry_run")]
    pub status: bool,
    /// List the migrations that would be applied; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
}

pub async fn run(args: MigrateArgs, global: &GlobalOpts) -> CmdResult {
    let (config, _) = load_config(global)?;
    let url = args.database_url.unwrap_or(config.database.url);
    let store = Store::connect_url(&url, 1).await.map_err(store_error)?;
    let outcome = if args.status {
        let all = store.migration_status().await.map_err(store_error)?;
        print_status(&store, &all, args.format);
        Ok(exit::OK)
    } else if args.dry_run {
        let pending: Vec<MigrationStatus> = store
            .migration_status()
            .await
            .map_err(store_error)?
            .into_iter()
            .filter(|m| !m.applied)
            .collect();
        print_list(&store, "would apply", &pending, args.format);
        Ok(exit::OK)
    } else {
        let applied = store.migrate().await.map_err(store_error)?;
        print_list(&store, "applied", &applied, args.format);
        Ok(exit::OK)
    };
    store.close().await;
    outcome
}

/// Unknown newer migrations are a failed check (1); everything else the store reports is
/// an I/O problem with the database (3), except malformed URLs, which are usage errors (2).
fn store_error(err: StoreError) -> CliError {
    match err {
        StoreError::UnknownMigrations { .. } => CliError::failed(err.to_string())
            .with_hint("run the newer timproxy, or point --database-url at another database"),
        StoreError::UnsupportedUrl { .. } | StoreError::InvalidUrl { .. } => {
            CliError::usage(err.to_string())
        }
        _ => CliError::io(err.to_string()),
    }
}

fn print_list(store: &Store, verb: &str, list: &[MigrationStatus], format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            let key = if verb == "applied" {
                "applied"
            } else {
                "pending"
            };
            let mut out = serde_json::Map::new();
            out.insert("database".to_owned(), json!(store.display_url()));
            out.insert(key.to_owned(), json!(list));
            println!("{}", serde_json::Value::Object(out));
        }
        OutputFormat::Text => {
            for m in list {
                println!("{verb} {:>4} {}", m.version, m.description);
            }
            if list.is_empty() {
                println!("{}: up to date, nothing to apply", store.display_url());
            } else {
                let n = list.len();
                let plural = if n == 1 { "" } else { "s" };
                println!("{}: {verb} {n} migration{plural}", store.display_url());
            }
        }
    }
}

fn print_status(store: &Store, all: &[MigrationStatus], format: OutputFormat) {
    match format {
        OutputFormat::Json => {
            println!(
                "{}",
                json!({ "database": store.display_url(), "migrations": all })
            );
        }
        OutputFormat::Text => {
            println!("{}", store.display_url());
            for m in all {
                let state = match &m.applied_at {
                    Some(at) if m.applied => format!("applied {at}"),
                    _ if m.applied => "applied".to_owned(),
                    _ => "pending".to_owned(),
                };
                println!("{:>4} {:<24} {state}", m.version, m.description);
            }
        }
    }
}
