//! Readiness components `serve` adds to the admin listener besides the homeserver and the
//! federation list.

use futures_util::future::BoxFuture;

use crate::admin::{Component, ComponentStatus};
use crate::store::Store;

/// Readiness: the database answers.
pub(super) struct StoreComponent(pub(super) Store);

impl Component for StoreComponent {
    fn name(&self) -> &'static str {
        "store"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            match self.0.ping().await {
                Ok(()) => ComponentStatus::ok(format!("{} reachable", self.0.kind())),
                Err(e) => ComponentStatus::failing(e.to_string()),
            }
        })
    }
}

/// Readiness: the raw-data outbox is not piling up (collector down for long).
pub(super) struct OutboxComponent {
    pub(super) store: Store,
    pub(super) max_backlog: u64,
}

impl Component for OutboxComponent {
    fn name(&self) -> &'static str {
        "raw_data_outbox"
    }
    fn check(&self) -> BoxFuture<'_, ComponentStatus> {
        Box::pin(async move {
            match self.store.outbox_depth().await {
                Ok(depth) if depth <= self.max_backlog => {
                    ComponentStatus::ok(format!("{depth} undelivered"))
                }
                Ok(depth) => ComponentStatus::failing(format!(
                    "{depth} undelivered reports exceed raw_data.max_backlog {}",
                    self.max_backlog
                )),
                Err(e) => ComponentStatus::failing(e.to_string()),
            }
        })
    }
}
