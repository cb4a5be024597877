//! The store: SQLite (embedded default, one process) or PostgreSQL (production, several
//! replicas), behind one API so callers never branch on the backend.
//!
//! Queries are runtime-checked (`sqlx::query`), so building needs no database. Both backends
//! use the same SQL text (`$1` placeholders work in SQLite too); timestamps are Unix epoch
//! milliseconds in `BIGINT` columns so rows decode identically everywhere.
//!
//! Migrations are embedded from `migrations/sqlite/` and `migrations/postgres/`.

mod federation;
mod lock;
mod outbox;
mod rooms;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool};

use crate::config::DatabaseConfig;

pub use federation::{NewSnapshot, SnapshotRow};
pub use lock::LockGuard;
pub use outbox::{NewOutboxItem, OutboxRow};
pub use rooms::{OrphanedRoomRow, RoomDecision};

static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// How long `connect` waits for a pooled connection (and PostgreSQL for the TCP connect)
/// before reporting the database unreachable; a CLI user should not stare at a hang.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A store failure. `Unreachable` and `Database` are I/O problems (exit 3 in the CLI);
/// `UnknownMigrations` means the database was migrated by a newer timproxy.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {url}: expected sqlite://PATH or postgres://…")]
    UnsupportedUrl { url: String },
    #[error("invalid database URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("cannot create the database directory {path}: {reason}")]
    CreateDir { path: String, reason: String },
    #[error("cannot connect to the database {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the database {url} has migrations this timproxy does not know (versions {versions}); it was migrated by a newer timproxy"
    )]
    UnknownMigrations { url: String, versions: String },
    #[error("migration failed on {url}: {reason}")]
    Migration { url: String, reason: String },
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
}

/// The connection pool of one backend.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The store handle; cheap to clone (pools are reference counted).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    /// The URL with any password masked, for messages and logs.
    display_url: String,
}

/// One embedded migration and whether the database has it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
    /// When it was applied (RFC 3339, UTC), if it was.
    pub applied_at: Option<String>,
}

/// Run the same expression against whichever pool the store has. Each arm is type-checked
/// on its own, so generic sqlx calls work for both databases without duplicated code.
macro_rules! on_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.backend {
            $crate::store::Backend::Sqlite($pool) => $body,
            $crate::store::Backend::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A pool of at most `max_connections` connections to the database `opts` name, whichever
/// backend it is.
async fn open_pool<DB: sqlx::Database>(
    opts: <DB::Connection as sqlx::Connection>::Options,
    max_connections: u32,
    display_url: &str,
) -> Result<sqlx::Pool<DB>, StoreError> {
    sqlx::pool::PoolOptions::<DB>::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .connect_with(opts)
        .await
        .map_err(|e| StoreError::Unreachable {
            url: display_url.to_owned(),
            reason: e.to_string(),
        })
}

impl Store {
    /// Open the database named in the configuration.
    pub async fn connect(cfg: &DatabaseConfig) -> Result<Store, StoreError> {
        Self::connect_url(&cfg.url, cfg.max_connections).await
    }

    /// Open a database by URL. SQLite files (and their directory) are created when missing
    /// and run in WAL mode so readers do not block the writer.
    pub async fn connect_url(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        let display_url = redact_url(url);
        let max_connections = max_connections.max(1);
        let backend = if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::InvalidUrl {
                    url: display_url.clone(),
                    reason: e.to_string(),
                })?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            let file = opts.get_filename().to_path_buf();
            if let Some(parent) = file.parent()
                && !parent.as_os_str().is_empty()
                && file.as_os_str() != ":memory:"
            {
                std::fs::create_dir_all(parent).map_err(|e| StoreError::CreateDir {
                    path: parent.display().to_string(),
                    reason: e.to_string(),
                })?;
            }
            Backend::Sqlite(open_pool(opts, max_connections, &display_url).await?)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            // Notices (e.g. "relation … already exists, skipping" from idempotent DDL) are
            // noise in our logs; warnings and errors still arrive.
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| StoreError::InvalidUrl {
                    url: display_url.clone(),
                    reason: e.to_string(),
                })?
                .options([("client_min_messages", "warning")]);
            Backend::Postgres(open_pool(opts, max_connections, &display_url).await?)
        } else {
            return Err(StoreError::UnsupportedUrl { url: display_url });
        };
        Ok(Store {
            backend,
            display_url,
        })
    }

    /// The database URL with any password masked.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// The backend's pool, for code that needs backend-specific SQL.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// `"sqlite"` or `"postgres"`.
    pub fn kind(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Close all pooled connections (waits for checked-out ones to come back).
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    /// A round trip to the database, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_pool!(self, pool => {
            sqlx::query("SELECT 1").execute(pool).await?;
        });
        Ok(())
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Sqlite(_) => &SQLITE_MIGRATOR,
            Backend::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// Versions the database records as applied, with their time (RFC 3339). Empty when
    /// the migrations table does not exist yet.
    async fn applied_migrations(&self) -> Result<BTreeMap<i64, Option<String>>, StoreError> {
        let rows: Vec<(i64, Option<String>)> = match &self.backend {
            Backend::Sqlite(pool) => {
                let exists: Option<(String,)> = sqlx::query_as(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
                )
                .fetch_optional(pool)
                .await?;
                if exists.is_none() {
                    return Ok(BTreeMap::new());
                }
                sqlx::query_as(
                    "SELECT version, strftime('%Y-%m-%dT%H:%M:%SZ', installed_on) FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await?
            }
            Backend::Postgres(pool) => {
                let (exists,): (bool,) =
                    sqlx::query_as("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                        .fetch_one(pool)
                        .await?;
                if !exists {
                    return Ok(BTreeMap::new());
                }
                sqlx::query_as(
                    "SELECT version, to_char(installed_on AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM _sqlx_migrations WHERE success ORDER BY version",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows.into_iter().collect())
    }

    /// Fail when the database records migrations this binary does not embed: running an
    /// older timproxy against a newer schema could corrupt data it does not understand.
    fn check_known(&self, applied: &BTreeMap<i64, Option<String>>) -> Result<(), StoreError> {
        let migrator = self.migrator();
        let unknown: Vec<String> = applied
            .keys()
            .filter(|v| !migrator.iter().any(|m| m.version == **v))
            .map(|v| v.to_string())
            .collect();
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(StoreError::UnknownMigrations {
                url: self.display_url.clone(),
                versions: unknown.join(", "),
            })
        }
    }

    /// Every embedded migration and whether it is applied. Errors with `UnknownMigrations`
    /// when the database is newer than this binary.
    pub async fn migration_status(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let applied = self.applied_migrations().await?;
        self.check_known(&applied)?;
        Ok(self
            .migrator()
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                applied: applied.contains_key(&m.version),
                applied_at: applied.get(&m.version).cloned().flatten(),
            })
            .collect())
    }

    /// Apply pending migrations (idempotent); returns the ones applied now. Concurrent
    /// replicas are serialised by sqlx's migration lock.
    pub async fn migrate(&self) -> Result<Vec<MigrationStatus>, StoreError> {
        let pending: Vec<MigrationStatus> = self
            .migration_status()
            .await?
            .into_iter()
            .filter(|m| !m.applied)
            .collect();
        let result = on_pool!(self, pool => self.migrator().run(pool).await);
        result.map_err(|e| match e {
            MigrateError::VersionMissing(v) => StoreError::UnknownMigrations {
                url: self.display_url.clone(),
                versions: v.to_string(),
            },
            other => StoreError::Migration {
                url: self.display_url.clone(),
                reason: other.to_string(),
            },
        })?;
        let applied = self.applied_migrations().await?;
        Ok(pending
            .into_iter()
            .map(|mut m| {
                m.applied_at = applied.get(&m.version).cloned().flatten();
                m.applied = applied.contains_key(&m.version);
                m
            })
            .collect())
    }
}

/// Mask the password of a database URL so it can be printed.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            if parsed.set_password(Some("***")).is_ok() {
                parsed.to_string()
            } else {
                url.to_owned()
            }
        }
        _ => url.to_owned(),
    }
}

/// Milliseconds since the Unix epoch (the store's time unit).
pub fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// A duration in milliseconds, saturating (config durations are far below the limit).
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_masks_password_only() {
        assert_eq!(
            redact_url("postgres://tp:secret@db:5432/tp"),
            "postgres://tp:***@db:5432/tp"
        );
        assert_eq!(redact_url("postgres://tp@db/tp"), "postgres://tp@db/tp");
        assert_eq!(
            redact_url("sqlite://data/timproxy.db"),
            "sqlite://data/timproxy.db"
        );
    }

    #[test]
    fn both_backends_embed_the_same_migration_versions() {
        let sqlite: Vec<i64> = SQLITE_MIGRATOR.iter().map(|m| m.version).collect();
        let pg: Vec<i64> = POSTGRES_MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(sqlite, pg);
        assert!(!sqlite.is_empty());
    }
}
