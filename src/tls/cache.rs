//! [`Authority`]: "give me a `ServerConfig` for this host", backed by a bounded cache.
//!
//! One `ServerConfig` per host is built once and shared by every tunnel to that host, so a
//! warm CONNECT costs a cache lookup, not a mint. The cache is bounded in entries and its TTL
//! is shorter than the leaf validity (checked by config validation), so a cached leaf never
//! expires while it is served. Concurrent first connections to one host share one mint
//! (`try_get_with` coalesces them).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};

use super::TlsError;
use super::ca::CertificateAuthority;
use super::leaf::{self, Leaf, LeafUsage, SubjectName};
use crate::config::CacheConfig;
use crate::metrics::Metrics;

/// TLS sessions kept for resumption, shared by all hosts (one store instead of one per
/// `ServerConfig`, so memory does not grow with the number of cached hosts).
const SESSION_CACHE_ENTRIES: usize = 4096;

/// Mints and caches per-host server configurations from the interception CA.
pub struct Authority {
    ca: Arc<CertificateAuthority>,
    cache: Cache<String, Arc<ServerConfig>>,
    leaf_validity: Duration,
    metrics: Arc<Metrics>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    mints: AtomicU64,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ca", &self.ca)
            .field("leaf_validity", &self.leaf_validity)
            .finish()
    }
}

impl Authority {
    /// `cache.max_entries` bounds the hosts kept, `cache.ttl` how long one is kept.
    pub fn new(
        ca: CertificateAuthority,
        cache: &CacheConfig,
        leaf_validity: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let evicted = metrics.cert_cache_size.clone();
        let cache = Cache::builder()
            .max_capacity(cache.max_entries)
            .time_to_live(cache.ttl)
            .eviction_listener(move |_host, _config, _cause| {
                evicted.dec();
            })
            .build();
        Self {
            ca: Arc::new(ca),
            cache,
            leaf_validity,
            metrics,
            provider: super::crypto_provider(),
            sessions: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            mints: AtomicU64::new(0),
        }
    }

    /// SHA-256 fingerprint of the CA the leaves are signed with.
    pub fn ca_fingerprint(&self) -> &str {
        self.ca.fingerprint()
    }

    /// Drop every cached leaf (this authority was replaced by one with another CA or other
    /// cache settings); the cache-size gauge follows.
    pub async fn flush(&self) {
        self.cache.invalidate_all();
        self.cache.run_pending_tasks().await;
    }

    /// The configuration to answer a TLS handshake for `host` (SNI, or the CONNECT host when
    /// the client sent none). Minted on first use, then served from the cache.
    pub async fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, TlsError> {
        let name = SubjectName::parse(host)?;
        let key = name.as_text();
        self.cache
            .try_get_with(key, async {
                let config = self.build(&name)?;
                self.mints.fetch_add(1, Ordering::Relaxed);
                self.metrics.cert_mints.inc();
                self.metrics.cert_cache_size.inc();
                Ok::<_, TlsError>(Arc::new(config))
            })
            .await
            .map_err(|e| Arc::try_unwrap(e).unwrap_or_else(TlsError::Shared))
    }

    fn build(&self, name: &SubjectName) -> Result<ServerConfig, TlsError> {
        let leaf = leaf::mint(
            &self.ca,
            std::slice::from_ref(name),
            self.leaf_validity,
            LeafUsage::Server,
        )?;
        let mut config = build_server_config(&leaf, &self.ca, self.provider.clone())?;
        config.session_storage = self.sessions.clone();
        Ok(config)
    }

    /// The CA leaves are signed with.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// Leaves minted by this authority so far.
    pub fn mints(&self) -> u64 {
        self.mints.load(Ordering::Relaxed)
    }

    /// Hosts currently cached (after applying pending evictions).
    pub async fn cached_hosts(&self) -> u64 {
        self.cache.run_pending_tasks().await;
        self.cache.entry_count()
    }
}

/// The server side of an intercepted handshake: chain leaf + CA (so clients that trust the CA
/// need nothing else), ALPN h2 and http/1.1 (a client offering neither, like Synapse, gets
/// HTTP/1.1).
pub fn build_server_config(
    leaf: &Leaf,
    ca: &CertificateAuthority,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, TlsError> {
    let chain = vec![leaf.cert_der.clone(), ca.cert_der().clone()];
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, leaf.key_der())?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{CaOptions, generate_ca};

    fn authority(max_entries: u64) -> Authority {
        let ca = CertificateAuthority::from_generated(&generate_ca(&CaOptions::default()).unwrap())
            .unwrap();
        Authority::new(
            ca,
            &CacheConfig {
                max_entries,
                ttl: Duration::from_secs(600),
            },
            Duration::from_secs(3600),
            Metrics::new(),
        )
    }

    #[tokio::test]
    async fn same_host_is_minted_once_and_shared() {
        let authority = authority(10);
        let a = authority.server_config("HS1.test").await.unwrap();
        let b = authority.server_config("hs1.test").await.unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(authority.mints(), 1);
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[tokio::test]
    async fn invalid_host_is_an_error_not_a_mint() {
        let authority = authority(10);
        let err = authority.server_config("bad host").await.unwrap_err();
        assert!(matches!(err, TlsError::InvalidHost(_)));
        assert_eq!(authority.mints(), 0);
    }

    #[tokio::test]
    async fn cache_stays_within_capacity_and_the_gauge_follows() {
        let authority = authority(4);
        for i in 0..20 {
            authority
                .server_config(&format!("h{i}.example"))
                .await
                .unwrap();
        }
        assert_eq!(authority.mints(), 20);
        assert!(authority.cached_hosts().await <= 4);
        assert_eq!(
            authority.metrics.cert_cache_size.get(),
            i64::try_from(authority.cached_hosts().await).unwrap()
        );
    }
}
