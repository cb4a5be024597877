//! The inbound state for a reloaded configuration.

use std::sync::{Arc, RwLock};

use super::{InboundError, InboundState, RequestObserver};
use crate::config::Config;

impl InboundState {
    /// The state for `config`, keeping what the change does not touch: the homeserver
    /// connection pool and admin client while `homeserver` is unchanged, the whoami cache while
    /// its settings and the homeserver are, and the raw-data observer. Everything else (endpoint
    /// table, TLS certificate re-read from its files, rules' settings) is built anew, so a
    /// failure here leaves the running state alone.
    pub fn reconfigure(&self, config: &Config) -> Result<InboundState, InboundError> {
        let mut next = InboundState::new(config, self.federation.clone(), self.metrics.clone())?;
        let (old, new) = (&self.config, config);
        if old.homeserver == new.homeserver {
            next.forwarder = self.forwarder.clone();
            next.admin = self.admin.clone();
            if old.inbound.whoami_cache == new.inbound.whoami_cache {
                next.whoami = self.whoami.clone();
            }
        }
        next.observer = RwLock::new(self.observer());
        Ok(next)
    }

    /// Install (or with `None` remove) the raw-data hook.
    pub(crate) fn replace_observer(&self, observer: Option<Arc<dyn RequestObserver>>) {
        if let Ok(mut slot) = self.observer.write() {
            *slot = observer;
        }
    }
}
