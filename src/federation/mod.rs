//! Federation list: sources (registration service, VZD JWS, file), verification, the
//! in-memory snapshot, persistence and refresh.

pub mod jws;
pub mod list;
pub mod ocsp;
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
    #[error("the list signer `{signer}` is revoked (since {at}, OCSP {responder})")]
    SignerRevoked {
        signer: String,
        at: time::OffsetDateTime,
        responder: String,
    },
    #[error("the OCSP responder {responder} does not know the list signer `{signer}`")]
    SignerUnknown { signer: String, responder: String },
    #[error("the list signer's revocation status cannot be established: {0}")]
    Ocsp(#[from] ocsp::OcspError),
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
                | FederationError::SignerRevoked { .. }
                | FederationError::SignerUnknown { .. }
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

/// Persist a snapshot for `timproxy fetch-federation --store` into the configured database
/// (`database.url`), applying pending migrations first so a fresh database works.
pub async fn store_hook(config: &Config, record: &SnapshotRecord) -> Result<(), StoreError> {
    let store = crate::store::Store::connect(&config.database)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    store
        .migrate()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let result = SnapshotStore::save(&store, record).await;
    store.close().await;
    result
}
