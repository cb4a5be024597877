//! The outbound state for a reloaded configuration.

use std::sync::Arc;

use super::{OutboundError, OutboundState};
use crate::config::Config;
use crate::tls::Authority;

impl OutboundState {
    /// The state for `config` with `authority` (the caller keeps the old one when the CA and
    /// the leaf settings did not change). The upstream client and its connection pool are
    /// kept when `keep_upstream` says the upstream settings (trust, dial policy, pool size) are
    /// the same; the caller decides, because only it knows whether the trusted CA files changed
    /// on disk. The raw-data observer is carried over. A failure here leaves the running state alone.
    pub fn reconfigure(
        &self,
        config: &Config,
        authority: Arc<Authority>,
        keep_upstream: bool,
    ) -> Result<OutboundState, OutboundError> {
        let mut next = OutboundState::new(
            config,
            self.federation.clone(),
            authority,
            self.metrics.clone(),
        )?;
        if keep_upstream {
            next.client = self.client.clone();
            next.connector = self.connector.clone();
        }
        next.replace_observer(self.observer());
        Ok(next)
    }
}
