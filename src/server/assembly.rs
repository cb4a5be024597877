//! The listeners' states for one configuration, built the same way at start and on reload.
//!
//! Building is the only step that can fail, and it changes nothing that is running: a reload
//! builds a whole new [`Assembly`] (reusing the previous one's pools and caches where their
//! settings did not change) and swaps it in only when every part was built.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::admin::operator::{Operations, OperatorAccess};
use crate::admin::{AdminState, HomeserverComponent};
use crate::config::Config;
use crate::federation::FederationHandle;
use crate::inbound::InboundState;
use crate::info_api::InfoApiState;
use crate::logging::LogControl;
use crate::metrics::Metrics;
use crate::outbound::OutboundState;
use crate::store::Store;
use crate::tls::{Authority, CertificateAuthority};

use super::readiness::{OutboxComponent, StoreComponent};

/// What every assembly shares for the life of the process.
pub(super) struct Shared {
    pub metrics: Arc<Metrics>,
    pub store: Store,
    pub federation: FederationHandle,
    pub log: Option<Arc<LogControl>>,
    pub operations: Arc<dyn Operations>,
}

/// The states of one configuration.
pub(super) struct Assembly {
    pub config: Arc<Config>,
    pub inbound: Arc<InboundState>,
    pub outbound: Arc<OutboundState>,
    /// Present when `info_api.enabled` (a restart-only key, so it stays as it started).
    pub info_api: Option<Arc<InfoApiState>>,
    pub admin: Arc<AdminState>,
    pub authority: Arc<Authority>,
    /// Digest of what the upstream TLS client is built from, trusted CA files' contents
    /// included: equal digests let a reload keep the upstream pool.
    pub upstream: [u8; 32],
}

impl Assembly {
    /// Build everything for `config`. With `previous`, keep its interception CA's leaf cache
    /// when the CA and leaf settings are the same, its upstream pools, and its caches.
    pub fn build(
        config: Arc<Config>,
        ca: CertificateAuthority,
        previous: Option<&Assembly>,
        shared: &Shared,
    ) -> Result<Assembly, String> {
        let upstream = upstream_digest(&config)?;
        let authority = match previous {
            Some(prev)
                if prev.authority.ca_fingerprint() == ca.fingerprint()
                    && prev.config.outbound.cert_cache == config.outbound.cert_cache
                    && prev.config.outbound.leaf_validity == config.outbound.leaf_validity =>
            {
                prev.authority.clone()
            }
            _ => Arc::new(Authority::new(
                ca,
                &config.outbound.cert_cache,
                config.outbound.leaf_validity,
                shared.metrics.clone(),
            )),
        };
        let inbound = match previous {
            Some(prev) => prev.inbound.reconfigure(&config),
            None => InboundState::new(&config, shared.federation.clone(), shared.metrics.clone()),
        }
        .map_err(|e| e.to_string())?;
        let outbound = match previous {
            Some(prev) => {
                prev.outbound
                    .reconfigure(&config, authority.clone(), prev.upstream == upstream)
            }
            None => OutboundState::new(
                &config,
                shared.federation.clone(),
                authority.clone(),
                shared.metrics.clone(),
            ),
        }
        .map_err(|e| e.to_string())?;
        let info_api = if config.info_api.enabled {
            let state = match previous.and_then(|p| p.info_api.as_ref().map(|s| (p, s))) {
                Some((prev, state)) => state.reconfigure(&prev.config, &config),
                None => {
                    InfoApiState::new(&config, shared.federation.clone(), shared.metrics.clone())
                }
            }
            .map_err(|e| e.to_string())?;
            Some(Arc::new(state))
        } else {
            None
        };
        let admin = admin_state(&config, shared)?;
        Ok(Assembly {
            config,
            inbound: Arc::new(inbound),
            outbound: Arc::new(outbound),
            info_api,
            admin: Arc::new(admin),
            authority,
            upstream,
        })
    }
}

fn admin_state(config: &Config, shared: &Shared) -> Result<AdminState, String> {
    let homeserver = HomeserverComponent::new(&config.homeserver)
        .map_err(|e| format!("cannot build HTTP client: {e}"))?;
    let token = config
        .admin
        .operator_token()
        .map_err(|e| format!("admin.token_file: {e}"))?;
    let mut admin = AdminState::new(shared.metrics.clone())
        .with_federation(shared.federation.clone())
        .with_component(Arc::new(homeserver))
        .with_component(Arc::new(StoreComponent(shared.store.clone())))
        .with_operations(shared.operations.clone())
        .with_access(OperatorAccess::new(
            token.as_deref(),
            config.admin.log_level_reset_after,
        ));
    if config.raw_data.enabled {
        admin = admin.with_component(Arc::new(OutboxComponent {
            store: shared.store.clone(),
            max_backlog: config.raw_data.max_backlog,
        }));
    }
    if let Some(log) = &shared.log {
        admin = admin.with_log_control(log.clone());
    }
    Ok(admin)
}

/// Digest of the upstream TLS client's inputs: the dial and pool settings, and the bytes of
/// `federation.trusted_ca_files` (a CA file replaced in place must take effect on reload).
fn upstream_digest(config: &Config) -> Result<[u8; 32], String> {
    let out = &config.outbound;
    let settings = serde_json::json!([
        out.danger_accept_invalid_upstream_certs,
        out.allow_private_destinations,
        out.resolve,
        humantime::format_duration(out.connect_timeout).to_string(),
        out.max_idle_per_host,
        config.federation.trusted_ca_files,
    ]);
    let mut digest = Sha256::new();
    digest.update(settings.to_string().as_bytes());
    for path in &config.federation.trusted_ca_files {
        let bytes = std::fs::read(path).map_err(|e| {
            format!(
                "federation.trusted_ca_files: cannot read {}: {e}",
                path.display()
            )
        })?;
        digest.update(Sha256::digest(&bytes));
    }
    Ok(digest.finalize().into())
}
