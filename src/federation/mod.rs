//! Federation list: sources (registration service, VZD JWS, file), verification, the
//! in-memory snapshot, persistence and refresh.

pub mod jws;
pub mod list;
pub mod refresh;
pub mod source;
pub mod store;

pub use list::{DomainEntry, FederationHandle, FederationList, ListSource, Membership};
pub use refresh::{FetchOutcome, Refresher};
pub use store::{MemoryStore, SnapshotRecord, SnapshotStore, StoreError};

use crate::config::Config;

/// Everything that can go wrong getting a list. Callers distinguish two classes
/// ([`FederationError::is_rejection`]): the source could not be read (network, file, store:
/// try again later) versus the list itself is not acceptable (signature, format, version:
/// an operator or the list publisher must act).
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{source_name}: {message}")]
    Source {
        source_name: String,
        message: String,
    },
    #[error("list is malformed: {0}")]
    Parse(String),
    #[error("list signature rejected: {0}")]
    Verify(#[from] jws::JwsError),
    #[error("list is not signed, but the source requires a signed JWS")]
    Unsigned,
    #[error("list version {got} is older than the held version {have}")]
    NotNewer { got: i64, have: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl FederationError {
    /// True when the fetched list was refused (as opposed to not being fetched at all).
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            FederationError::Parse(_)
                | FederationError::Verify(_)
                | FederationError::Unsigned
                | FederationError::NotNewer { .. }
        )
    }

    /// Label for `timproxy_federation_fetches_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        if self.is_rejection() {
            "rejected"
        } else {
            "error"
        }
    }
}

/// Persist a snapshot for `timproxy fetch-federation --store`.
///
/// The one-shot command has no running `serve` to hand it a store, so it goes through this
/// function; it is the seam where the SQL store (`database.url`) is opened. Until a store
/// backend is linked in, it reports the store as unavailable rather than pretending to save.
pub async fn store_hook(config: &Config, record: &SnapshotRecord) -> Result<(), StoreError> {
    let _ = record;
    Err(StoreError::Unavailable(format!(
        "no snapshot store backend for {} is built into this binary; use --out FILE",
        redact_db_url(&config.database.url)
    )))
}

/// `scheme://host/db` without credentials, for messages.
fn redact_db_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
            format!("{scheme}://{rest}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_url_credentials_are_not_shown() {
        assert_eq!(
            redact_db_url("postgres://u:p@db:5432/t"),
            "postgres://db:5432/t"
        );
        assert_eq!(redact_db_url("sqlite://data/x.db"), "sqlite://data/x.db");
    }
}
