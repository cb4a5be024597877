//! The one YAML configuration file, its defaults, environment overrides and validation.
//!
//! Every key has a default so that `timproxy serve` runs with no file at all (the embedded
//! default: SQLite under `./data/`, a generated dev CA under `./certificates/`).
//!
//! Environment overrides: `TIMPROXY_<SECTION>__<KEY>` (double underscore between levels,
//! case-insensitive), e.g. `TIMPROXY_DATABASE__URL=postgres://…` or
//! `TIMPROXY_OUTBOUND__CA__CERT_FILE=/etc/timproxy/ca.crt`. The value is read as a YAML scalar
//! or flow value, so `TIMPROXY_FEDERATION__TRUST_ANCHORS='[a.pem, b.pem]'` sets a list.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "TIMPROXY_";
/// File looked up in the working directory when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "timproxy.yaml";

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Inbound listener: Matrix client-server API and inbound federation.
    pub inbound: InboundConfig,
    /// Outbound listener: the forward proxy the homeserver uses for federation.
    pub outbound: OutboundConfig,
    /// Admin listener: liveness, readiness, Prometheus metrics.
    pub admin: AdminConfig,
    /// TI-Messenger information API.
    pub info_api: InfoApiConfig,
    /// The homeserver behind the proxy.
    pub homeserver: HomeserverConfig,
    /// The registration service (federation list, well-known support).
    pub registration_service: RegistrationServiceConfig,
    /// Federation list: source, verification, refresh, expiry.
    pub federation: FederationConfig,
    /// Database (SQLite or PostgreSQL).
    pub database: DatabaseConfig,
    /// TIM rules.
    pub policy: PolicyConfig,
    /// Raw-data (performance) reports.
    pub raw_data: RawDataConfig,
    /// Orphaned-room cleanup (A_28564-01).
    pub cleanup: CleanupConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InboundConfig {
    /// Address the inbound listener binds (plain HTTP unless `tls` is set).
    pub listen: SocketAddr,
    /// Optional TLS for the inbound listener (PEM files).
    pub tls: Option<TlsFiles>,
    /// Port written into the self-served `/.well-known/matrix/server` answer.
    pub well_known_server_port: u16,
    /// Largest request body a rule reads (createRoom, invite, state, …); larger → 413.
    pub max_body_bytes: u64,
    /// Access-token → user cache (tokens are stored only as hashes).
    pub whoami_cache: CacheConfig,
    /// Forward `/_synapse/admin/…` through the public inbound port (never do this in production).
    pub expose_synapse_admin: bool,
    /// Most concurrent client connections; further connections wait in the accept queue.
    pub max_connections: usize,
    /// Time allowed for a client to send a request head, and the longest pause while it sends
    /// a request body (slow-loris protection).
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Time allowed for each write of an answer to a client: a client that stops reading is
    /// disconnected instead of holding its connection and the answer's buffers.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Extra (method, path template) pairs allowed besides Matrix v1.11.
    pub extra_endpoints: Vec<String>,
    /// Allow Synapse's single-sign-on pages outside the Matrix API (OIDC/SAML callbacks, CAS
    /// ticket, identity-provider and user-name pickers, consent; the built-in list
    /// `src/inbound/sso_endpoints.txt`). Absent = on for `policy.flavour: epa` (ePA requires
    /// OIDC login), off for `pro`.
    pub sso_endpoints: Option<bool>,
    /// Reverse proxies (load balancers) in front of timproxy, as addresses or CIDR blocks.
    /// Only a connection from one of them may bring its own `X-Forwarded-For` (the peer is
    /// appended), `X-Forwarded-Proto`, `X-Forwarded-Host`, `Forwarded` and `X-Real-IP`; from
    /// anyone else these fields are dropped and `X-Forwarded-For` is the peer address, so a
    /// client cannot choose the address the homeserver rate-limits and records.
    pub trusted_proxies: Vec<Cidr>,
}

impl InboundConfig {
    /// Whether a connection from `ip` comes from a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted_proxies.iter().any(|block| block.contains(ip))
    }
}

/// An address block (`10.0.0.0/8`, `fd00::/8`) or a single address (`10.1.2.3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(ip) & mask == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net)
            }
            _ => false,
        }
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: prefix length must be 0 to {max}"))?,
        };
        let block = Cidr { network, prefix };
        if !block.contains(network) {
            return Err(format!(
                "`{text}` has bits set after the prefix; write the network address"
            ));
        }
        Ok(block)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.trim().parse().map_err(serde::de::Error::custom)
    }
}

impl Default for InboundConfig {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8090).into(),
            tls: None,
            well_known_server_port: 443,
            max_body_bytes: 1024 * 1024,
            whoami_cache: CacheConfig {
                max_entries: 100_000,
                ttl: Duration::from_secs(300),
            },
            expose_synapse_admin: false,
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
            extra_endpoints: Vec::new(),
            sso_endpoints: None,
            trusted_proxies: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Most entries kept.
    pub max_entries: u64,
    /// How long an entry lives.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            ttl: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address of the forward proxy (`HTTPS_PROXY` of the homeserver). Keep it private.
    pub listen: SocketAddr,
    /// Check federation destinations; absent = `federation.enforce`.
    pub enforce: Option<bool>,
    /// Interception CA (PEM). `serve` generates a dev CA here when both files are missing
    /// and the paths are the defaults.
    pub ca: CaConfig,
    /// Minted leaf certificates per host.
    pub cert_cache: CacheConfig,
    /// Validity of minted leaves; the cache TTL must be shorter.
    #[serde(with = "humantime_serde")]
    pub leaf_validity: Duration,
    /// Federation destinations allowed besides the federation list (host or `host:port`),
    /// e.g. a test homeserver. Treated like list members: intercepted, every request checked.
    pub allow_hosts: Vec<String>,
    /// The homeserver's non-federation destinations (OIDC/SAML/CAS identity provider, push
    /// gateway, identity server, reCAPTCHA), as `host` (every port) or `host:port`. Tunnelled
    /// without TLS interception: Synapse checks these certificates against the system trust
    /// store, not the proxy CA. Wins over the federation list for the same host and port.
    pub passthrough: Vec<String>,
    /// The homeserver's SSO server (the reference's `ssoDomain`), as `host` or `host:port`:
    /// intercepted like federation (upstream verified against the system roots and
    /// `federation.trusted_ca_files`), but reachable without a federation-list entry and with
    /// every path, not only the Matrix routes (CAS ticket validation, OIDC calls). The
    /// homeserver must trust the proxy CA for these connections; a provider it verifies
    /// against the system trust store belongs in `passthrough` instead.
    pub sso_hosts: Vec<String>,
    /// Allow upstream connections to loopback/private/link-local addresses (tests only).
    pub allow_private_destinations: bool,
    /// DANGER: accept any upstream certificate. For local tests only; logged loudly.
    pub danger_accept_invalid_upstream_certs: bool,
    /// Upstream TCP + TLS connect timeout.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Upstream response timeout (time to response head).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Idle pooled upstream connections kept per host. A busy remote homeserver sees bursts
    /// of parallel federation requests; a pool smaller than the burst closes connections
    /// only to re-handshake them moments later.
    pub max_idle_per_host: usize,
    /// Time allowed for the CONNECT head plus the TLS handshake of a new tunnel
    /// (slow-loris protection; an idle homeserver connection never gets this far).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// On shutdown, how long open tunnels may finish in-flight requests before they are cut.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Static host → IP address overrides used instead of DNS for upstream connections (like
    /// `curl --resolve`); the private-address policy still applies to them.
    pub resolve: BTreeMap<String, IpAddr>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 8093).into(),
            enforce: None,
            ca: CaConfig::default(),
            cert_cache: CacheConfig {
                max_entries: 10_000,
                ttl: Duration::from_secs(12 * 3600),
            },
            leaf_validity: Duration::from_secs(7 * 24 * 3600),
            allow_hosts: Vec::new(),
            passthrough: Vec::new(),
            sso_hosts: Vec::new(),
            allow_private_destinations: false,
            danger_accept_invalid_upstream_certs: false,
            connect_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(120),
            max_idle_per_host: 256,
            handshake_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(10),
            resolve: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CaConfig {
    /// CA certificate (PEM).
    pub cert_file: PathBuf,
    /// CA private key (PEM, PKCS#8).
    pub key_file: PathBuf,
}

impl Default for CaConfig {
    fn default() -> Self {
        Self {
            cert_file: PathBuf::from("certificates/ca.crt"),
            key_file: PathBuf::from("certificates/ca.key"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener. Never expose it publicly.
    pub listen: SocketAddr,
    /// Bearer token the operator endpoints (reload, log level) require; without one (and
    /// without `token_file`) they answer loopback clients only. Prefer `token_file` or the
    /// environment override.
    pub token: Option<String>,
    /// File holding the operator token (read on start and on every reload).
    pub token_file: Option<PathBuf>,
    /// Log filter (tracing env-filter syntax) the process runs with and returns to after a
    /// temporary change; `--log-level` / `TIMPROXY_LOG` win over it.
    pub log_level_default: String,
    /// How long a log filter set through the admin listener lasts unless the request says
    /// otherwise; zero keeps it until the next change.
    #[serde(with = "humantime_serde")]
    pub log_level_reset_after: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: ([127, 0, 0, 1], 1233).into(),
            token: None,
            token_file: None,
            log_level_default: "info".to_owned(),
            log_level_reset_after: Duration::from_secs(30 * 60),
        }
    }
}

impl AdminConfig {
    /// The operator token from `token` or `token_file`. An empty file counts as no token.
    pub fn operator_token(&self) -> Result<Option<String>, std::io::Error> {
        if let Some(token) = self.token.as_ref().filter(|t| !t.trim().is_empty()) {
            return Ok(Some(token.trim().to_owned()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)?;
        let token = text.trim();
        Ok((!token.is_empty()).then(|| token.to_owned()))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct InfoApiConfig {
    /// Serve the TI-Messenger information API.
    pub enabled: bool,
    /// Address of the information API listener.
    pub listen: SocketAddr,
    /// `title` of `GET /tim-information`.
    pub title: String,
    /// `description` of `GET /tim-information`.
    pub description: Option<String>,
    /// `contact` of `GET /tim-information`.
    pub contact: Option<String>,
    /// OpenID token → user cache.
    pub token_cache: CacheConfig,
    /// Tokens the homeserver refused, remembered (as hashes) so that the same invalid token
    /// is not sent to the homeserver again within `ttl`.
    pub invalid_token_cache: CacheConfig,
}

impl Default for InfoApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: ([0, 0, 0, 0], 7777).into(),
            title: "Contact Information API des TI-Messengers".to_owned(),
            description: None,
            contact: None,
            token_cache: CacheConfig {
                max_entries: 10_000,
                ttl: Duration::from_secs(300),
            },
            invalid_token_cache: CacheConfig {
                max_entries: 10_000,
                ttl: Duration::from_secs(30),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HomeserverConfig {
    /// Base URL of the homeserver's plain HTTP listener.
    pub url: Url,
    /// The homeserver's Matrix server name (`M-Dom`, inbound `destination` check).
    pub server_name: String,
    /// Path probed for readiness.
    pub health_path: String,
    /// Base URL of the admin API (default: `url`).
    pub admin_url: Option<Url>,
    /// Admin API access token (prefer `admin_token_file` or the environment override).
    pub admin_token: Option<String>,
    /// File holding the admin API access token (read when needed, so it may appear later).
    pub admin_token_file: Option<PathBuf>,
    /// Most pooled idle connections to the homeserver.
    pub max_idle_connections: usize,
    /// TCP connect timeout to the homeserver.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time to the response head from the homeserver (long-polling `/sync` needs more).
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for HomeserverConfig {
    fn default() -> Self {
        Self {
            url: Url::parse("http://127.0.0.1:8083").unwrap_or_else(|_| unreachable!()),
            server_name: "localhost".to_owned(),
            health_path: "/health".to_owned(),
            admin_url: None,
            admin_token: None,
            admin_token_file: None,
            max_idle_connections: 256,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(300),
        }
    }
}

impl HomeserverConfig {
    pub fn admin_base(&self) -> &Url {
        self.admin_url.as_ref().unwrap_or(&self.url)
    }

    /// The admin token from `admin_token` or `admin_token_file`, read now.
    pub fn admin_token(&self) -> Option<String> {
        if let Some(token) = &self.admin_token {
            return Some(token.clone());
        }
        let path = self.admin_token_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let token = text.trim();
        (!token.is_empty()).then(|| token.to_owned())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationServiceConfig {
    /// Base URL of the registration service.
    pub url: Url,
    /// Path of the federation list.
    pub federation_list_path: String,
    /// Path prefix of the well-known support document (`…/{serverName}`).
    pub well_known_support_path: String,
    /// Server name used for the support lookup (default: `homeserver.server_name`).
    pub support_server_name: Option<String>,
    /// JSON support document served when the registration service has none (404); absent =
    /// answer 404 `M_NOT_FOUND`.
    pub support_fallback_file: Option<PathBuf>,
    /// Timeout of one call.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RegistrationServiceConfig {
    fn default() -> Self {
        Self {
            url: Url::parse("http://127.0.0.1:8080").unwrap_or_else(|_| unreachable!()),
            federation_list_path: "/backend/federation".to_owned(),
            well_known_support_path: "/backend/well-known-support".to_owned(),
            support_server_name: None,
            support_fallback_file: None,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Where the federation list comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum FederationSource {
    /// `GET {registration_service.url}{federation_list_path}?version=N`.
    #[default]
    RegistrationService,
    /// A VZD-signed JWS list at `federation.vzd_url`, verified against `trust_anchors`.
    VzdJws,
    /// A local file (`federation.list_file`): registration-service JSON or a JWS.
    File,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Enforce federation membership and permission checks (false = test mode).
    pub enforce: bool,
    /// Source of the list.
    pub source: FederationSource,
    /// URL of the VZD `federationList.jws` (source `vzd_jws`).
    pub vzd_url: Option<Url>,
    /// Bearer token for the VZD (prefer the environment override).
    pub vzd_token: Option<String>,
    /// List file (source `file`), registration-service JSON or JWS.
    pub list_file: Option<PathBuf>,
    /// PEM trust anchors for the JWS signer chain.
    pub trust_anchors: Vec<PathBuf>,
    /// Accept `ES256` (P-256) signatures besides `BP256R1`.
    pub allow_es256: bool,
    /// Poll interval.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// Random extra delay added to each poll (spreads replicas).
    #[serde(with = "humantime_serde")]
    pub refresh_jitter: Duration,
    /// A list older than this is expired: federation fails closed.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Refresh once before refusing an unknown domain (A_25537).
    pub refresh_on_miss: bool,
    /// At most one refresh-on-miss per this period.
    #[serde(with = "humantime_serde")]
    pub min_refresh_gap: Duration,
    /// Extra PEM CA files trusted for upstream federation TLS (besides system roots).
    pub trusted_ca_files: Vec<PathBuf>,
    /// Largest federation body whose events are checked for non-federated domains
    /// (transactions, `send_join`/`send_leave`/`send_knock`, invites; inbound and outbound);
    /// larger → 413. Default: what Synapse itself accepts (200 × 64 KiB), so no legitimate
    /// transaction is refused (a refused one would be retried by its sender forever).
    pub max_event_body_bytes: u64,
    /// Revocation check (OCSP) of the certificate that signed a JWS list.
    pub ocsp: OcspConfig,
}

/// OCSP (RFC 6960) for the signer of a signed federation list: a signer that is revoked, or
/// whose status cannot be established, never brings in a new list (see `federation::ocsp`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OcspConfig {
    /// Check the signer of every signed (JWS) list before it is used.
    pub enabled: bool,
    /// Responder to ask; `None` = the one the signer certificate names (authorityInfoAccess).
    pub responder_url: Option<Url>,
    /// Bound for one OCSP request (connect + answer).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long an answer without `nextUpdate` counts as current, from its `thisUpdate`.
    #[serde(with = "humantime_serde")]
    pub default_validity: Duration,
    /// Clock difference to the responder tolerated on `thisUpdate` and `nextUpdate`.
    #[serde(with = "humantime_serde")]
    pub clock_skew: Duration,
}

impl Default for OcspConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            responder_url: None,
            timeout: Duration::from_secs(10),
            default_validity: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
        }
    }
}

impl Default for FederationConfig {
    fn default() -> Self {
        Self {
            enforce: true,
            source: FederationSource::RegistrationService,
            vzd_url: None,
            vzd_token: None,
            list_file: None,
            trust_anchors: Vec::new(),
            allow_es256: false,
            refresh_interval: Duration::from_secs(60),
            refresh_jitter: Duration::from_secs(10),
            max_age: Duration::from_secs(72 * 3600),
            refresh_on_miss: true,
            min_refresh_gap: Duration::from_secs(60),
            trusted_ca_files: Vec::new(),
            max_event_body_bytes: 200 * 64 * 1024,
            ocsp: OcspConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (embedded default) or `postgres://…` (production).
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// Apply pending migrations when `serve` starts.
    pub migrate_on_start: bool,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/timproxy.db".to_owned(),
            max_connections: 8,
            migrate_on_start: true,
        }
    }
}

/// Which TI-Messenger flavour the homeserver is (selects the permission-config type).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Flavour {
    /// TI-M Pro: `de.gematik.tim.account.permissionconfig.pro.v1`.
    #[default]
    Pro,
    /// TI-M ePA: `de.gematik.tim.account.permissionconfig.epa.v1`, no public rooms.
    Epa,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Deployment flavour.
    pub flavour: Flavour,
    /// Evaluate the invitee's permission config on invites (A_26021-01).
    pub invite_permission_check: bool,
    /// Default for invitees without a permission config: `allow all` or `block all`.
    pub default_permission: String,
    /// Room versions allowed for createRoom and upgrades (A_26202, A_26203).
    pub allowed_room_versions: Vec<String>,
    /// Room version injected when createRoom names none.
    pub default_room_version: String,
    /// Redactions of events older than this are refused (A_28358).
    #[serde(with = "humantime_serde")]
    pub redaction_max_age: Duration,
    /// Longest presence `status_msg` in characters.
    pub presence_status_max: usize,
    /// Rules in shadow mode: evaluated, logged and counted (`mode="shadow"`), but the request
    /// is forwarded unchanged (no refusal, no rewrite). TIM rule ids as logged; rules that
    /// guard the federation boundary cannot be listed.
    pub shadow: Vec<crate::policy::shadow::ShadowRule>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            flavour: Flavour::Pro,
            invite_permission_check: true,
            default_permission: "allow all".to_owned(),
            allowed_room_versions: vec!["9".to_owned(), "10".to_owned()],
            default_room_version: "10".to_owned(),
            redaction_max_age: Duration::from_secs(24 * 3600),
            presence_status_max: 250,
            shadow: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RawDataConfig {
    /// Produce raw-data reports.
    pub enabled: bool,
    /// Collector endpoint.
    pub url: Url,
    /// `Inst-ID` of the reports.
    pub instance_id: String,
    /// `profOID`.
    pub profession_oid: String,
    /// `tID`.
    pub telematik_id: String,
    /// Reports sent per sender round.
    pub batch_size: u32,
    /// First retry delay after a failed delivery (doubles up to `retry_max`).
    #[serde(with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Longest retry delay.
    #[serde(with = "humantime_serde")]
    pub retry_max: Duration,
    /// Undelivered reports older than this are dropped (and counted).
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Readiness turns false above this many undelivered reports.
    pub max_backlog: u64,
    /// How long a sender owns the reports it claimed. Reports claimed just before the sender
    /// lost its database connection (or died) are sent again after this; the collector
    /// de-duplicates by `Idempotency-Key`.
    #[serde(with = "humantime_serde")]
    pub claim_lease: Duration,
}

impl Default for RawDataConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: Url::parse("http://127.0.0.1:9020/add-performance-data")
                .unwrap_or_else(|_| unreachable!()),
            instance_id: String::new(),
            profession_oid: String::new(),
            telematik_id: String::new(),
            batch_size: 100,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_backlog: 100_000,
            claim_lease: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// Run the orphaned-room cleanup (needs an admin token).
    pub enabled: bool,
    /// Run interval.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rooms whose newest state is younger than this are kept.
    #[serde(with = "humantime_serde")]
    pub min_age: Duration,
    /// Only record and log decisions; delete nothing.
    pub dry_run: bool,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(24 * 3600),
            min_age: Duration::from_secs(14 * 24 * 3600),
            dry_run: false,
        }
    }
}

/// A configuration problem, printed as one line naming file, position and key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}: cannot read: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error("environment {var}: {message}")]
    Env { var: String, message: String },
    #[error("{file}: {key}: {message}")]
    Semantic {
        file: String,
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// A semantic error with the line and column of its key in `text` (the file it came from)
    /// when the key is written there; keys set from the environment or left at their default
    /// keep the file-and-key form.
    pub fn located_in(self, text: &str) -> Self {
        let ConfigError::Semantic { file, key, message } = self else {
            return self;
        };
        let path: Vec<&str> = key.split('.').collect();
        let locator = crate::spec_check::locate::Locator::new(text);
        let last = path.last().copied().unwrap_or_default();
        match locator.find_path(&path) {
            Some(at) if text[at..].trim_start_matches(['"', '\'']).starts_with(last) => {
                let pos = locator.pos(at);
                ConfigError::Invalid {
                    location: format!("{file}:{}:{}", pos.line, pos.column),
                    message: format!("{key}: {message}"),
                }
            }
            _ => ConfigError::Semantic { file, key, message },
        }
    }
}

impl Config {
    /// Resolve which file to load: an explicit path must exist; otherwise `timproxy.yaml` in
    /// the working directory if present; otherwise built-in defaults.
    pub fn resolve_path(explicit: Option<&Path>) -> Option<PathBuf> {
        match explicit {
            Some(path) => Some(path.to_path_buf()),
            None => {
                let default = PathBuf::from(DEFAULT_CONFIG_FILE);
                default.exists().then_some(default)
            }
        }
    }

    /// Load (file or defaults) + environment overrides, then validate.
    pub fn load(explicit: Option<&Path>) -> Result<(Config, Option<PathBuf>), ConfigError> {
        let path = Self::resolve_path(explicit);
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| ConfigError::Unreadable {
                file: p.display().to_string(),
                reason: e.to_string(),
            })?,
            None => String::new(),
        };
        let name = path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "<defaults>".to_owned());
        let env: Vec<(String, String)> = std::env::vars().collect();
        let config = Self::from_yaml_with_env(&text, &name, &env)?;
        config.validate(&name).map_err(|e| e.located_in(&text))?;
        Ok((config, path))
    }

    /// Parse YAML text (empty = defaults) and apply `TIMPROXY_*` overrides from `env`.
    pub fn from_yaml_with_env(
        text: &str,
        name: &str,
        env: &[(String, String)],
    ) -> Result<Config, ConfigError> {
        let parsed: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| yaml_error(name, &e))?
        };
        let overrides: Vec<&(String, String)> =
            env.iter().filter(|(k, _)| is_override(k)).collect();
        if overrides.is_empty() {
            return Ok(parsed);
        }
        let mut tree = serde_yaml::to_value(&parsed).map_err(|e| ConfigError::Invalid {
            location: name.to_owned(),
            message: e.to_string(),
        })?;
        for (var, raw) in overrides {
            apply_override(&mut tree, var, raw)?;
        }
        serde_yaml::from_value(tree).map_err(|e| {
            let var = env
                .iter()
                .filter(|(k, _)| is_override(k))
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            ConfigError::Env {
                var,
                message: e.to_string(),
            }
        })
    }

    /// Checks serde cannot express: port clashes, URL schemes, readable files, value ranges.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let semantic = |key: &str, message: String| ConfigError::Semantic {
            file: file.to_owned(),
            key: key.to_owned(),
            message,
        };
        let mut listeners: Vec<(&str, SocketAddr)> = vec![
            ("inbound.listen", self.inbound.listen),
            ("outbound.listen", self.outbound.listen),
            ("admin.listen", self.admin.listen),
        ];
        if self.info_api.enabled {
            listeners.push(("info_api.listen", self.info_api.listen));
        }
        for (i, (key_a, addr_a)) in listeners.iter().enumerate() {
            for (key_b, addr_b) in listeners.iter().skip(i + 1) {
                if addr_a.port() != 0 && addr_a.port() == addr_b.port() && overlaps(addr_a, addr_b)
                {
                    return Err(semantic(
                        key_b,
                        format!("port {} is already used by {key_a}", addr_b.port()),
                    ));
                }
            }
        }
        for (key, url) in [
            ("homeserver.url", &self.homeserver.url),
            ("registration_service.url", &self.registration_service.url),
            ("raw_data.url", &self.raw_data.url),
        ] {
            if !matches!(url.scheme(), "http" | "https") {
                return Err(semantic(
                    key,
                    format!("URL scheme must be http or https, got `{}`", url.scheme()),
                ));
            }
        }
        if self.homeserver.url.scheme() != "http" {
            return Err(semantic(
                "homeserver.url",
                "must be an http:// URL: timproxy speaks plain HTTP/1.1 to the homeserver on the internal network (TLS belongs on inbound.tls)".to_owned(),
            ));
        }
        if let Some(url) = &self.homeserver.admin_url
            && !matches!(url.scheme(), "http" | "https")
        {
            return Err(semantic(
                "homeserver.admin_url",
                "URL scheme must be http or https".to_owned(),
            ));
        }
        if !(self.database.url.starts_with("sqlite:")
            || self.database.url.starts_with("postgres://")
            || self.database.url.starts_with("postgresql://"))
        {
            return Err(semantic(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://".to_owned(),
            ));
        }
        if !matches!(
            self.policy.default_permission.as_str(),
            "allow all" | "block all"
        ) {
            return Err(semantic(
                "policy.default_permission",
                format!(
                    "must be `allow all` or `block all`, got `{}`",
                    self.policy.default_permission
                ),
            ));
        }
        if self.policy.allowed_room_versions.is_empty() {
            return Err(semantic(
                "policy.allowed_room_versions",
                "must name at least one room version".to_owned(),
            ));
        }
        if !self
            .policy
            .allowed_room_versions
            .contains(&self.policy.default_room_version)
        {
            return Err(semantic(
                "policy.default_room_version",
                format!(
                    "`{}` is not in policy.allowed_room_versions",
                    self.policy.default_room_version
                ),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.admin.log_level_default) {
            return Err(semantic(
                "admin.log_level_default",
                format!(
                    "`{}` is not a log filter: {e}",
                    self.admin.log_level_default
                ),
            ));
        }
        if self.outbound.cert_cache.ttl >= self.outbound.leaf_validity {
            return Err(semantic(
                "outbound.cert_cache.ttl",
                "must be shorter than outbound.leaf_validity".to_owned(),
            ));
        }
        if self.inbound.write_timeout.is_zero() {
            return Err(semantic(
                "inbound.write_timeout",
                "must be longer than zero".to_owned(),
            ));
        }
        if self.homeserver.server_name.trim().is_empty() {
            return Err(semantic(
                "homeserver.server_name",
                "must not be empty".to_owned(),
            ));
        }
        if self.federation.source == FederationSource::VzdJws && self.federation.vzd_url.is_none() {
            return Err(semantic(
                "federation.vzd_url",
                "is required when federation.source is vzd_jws".to_owned(),
            ));
        }
        if self.federation.source == FederationSource::File && self.federation.list_file.is_none() {
            return Err(semantic(
                "federation.list_file",
                "is required when federation.source is file".to_owned(),
            ));
        }
        let mut files: Vec<(&str, &Path)> = Vec::new();
        if let Some(tls) = &self.inbound.tls {
            files.push(("inbound.tls.cert_file", &tls.cert_file));
            files.push(("inbound.tls.key_file", &tls.key_file));
        }
        if self.outbound.ca != CaConfig::default() {
            files.push(("outbound.ca.cert_file", &self.outbound.ca.cert_file));
            files.push(("outbound.ca.key_file", &self.outbound.ca.key_file));
        }
        for path in &self.federation.trust_anchors {
            files.push(("federation.trust_anchors", path));
        }
        for path in &self.federation.trusted_ca_files {
            files.push(("federation.trusted_ca_files", path));
        }
        if let Some(path) = &self.federation.list_file {
            files.push(("federation.list_file", path));
        }
        if let Some(path) = &self.registration_service.support_fallback_file {
            files.push(("registration_service.support_fallback_file", path));
        }
        if let Some(path) = &self.admin.token_file {
            files.push(("admin.token_file", path));
        }
        for (key, path) in files {
            if let Err(e) = std::fs::File::open(path) {
                return Err(semantic(
                    key,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        }
        for (key, entries) in [
            ("outbound.passthrough", &self.outbound.passthrough),
            ("outbound.sso_hosts", &self.outbound.sso_hosts),
        ] {
            for entry in entries {
                crate::outbound::passthrough::parse_entry(entry)
                    .map_err(|message| semantic(key, message))?;
            }
        }
        let mut seen = BTreeSet::new();
        for extra in &self.inbound.extra_endpoints {
            let mut parts = extra.split_whitespace();
            match (parts.next(), parts.next(), parts.next()) {
                (Some(method), Some(path), None)
                    if http::Method::from_bytes(method.as_bytes()).is_ok()
                        && path.starts_with('/') =>
                {
                    if !seen.insert(extra.clone()) {
                        return Err(semantic(
                            "inbound.extra_endpoints",
                            format!("`{extra}` is listed twice"),
                        ));
                    }
                }
                _ => {
                    return Err(semantic(
                        "inbound.extra_endpoints",
                        format!("`{extra}` must be `METHOD /path/template`"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Whether outbound destinations are checked.
    pub fn outbound_enforce(&self) -> bool {
        self.outbound.enforce.unwrap_or(self.federation.enforce)
    }

    /// Whether Synapse's SSO pages are allowed inbound (`inbound.sso_endpoints`, by default
    /// only for the ePA flavour).
    pub fn sso_endpoints_enabled(&self) -> bool {
        self.inbound
            .sso_endpoints
            .unwrap_or(self.policy.flavour == Flavour::Epa)
    }
}

/// Every section is a mapping, so a real override always has a `__` after the section; other
/// `TIMPROXY_*` variables (`TIMPROXY_LOG`, test switches) are not config keys.
fn is_override(var: &str) -> bool {
    var.strip_prefix(ENV_PREFIX)
        .is_some_and(|rest| rest.contains("__"))
}

fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
}

fn yaml_error(name: &str, error: &serde_yaml::Error) -> ConfigError {
    let location = match error.location() {
        Some(loc) => format!("{name}:{}:{}", loc.line(), loc.column()),
        None => name.to_owned(),
    };
    // serde_norway appends " at line L column C" to the message; the location prefix says it.
    let message = error.to_string();
    let message = match message.find(" at line ") {
        Some(idx) => message[..idx].to_owned(),
        None => message,
    };
    ConfigError::Invalid { location, message }
}

fn apply_override(tree: &mut serde_yaml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var[ENV_PREFIX.len()..]
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(|s| s.is_empty()) {
        return Err(ConfigError::Env {
            var: var.to_owned(),
            message: "empty key segment (use `__` only between keys)".to_owned(),
        });
    }
    let value: serde_yaml::Value =
        serde_yaml::from_str(raw).unwrap_or_else(|_| serde_yaml::Value::String(raw.to_owned()));
    let mut node = tree;
    for (i, key) in path.iter().enumerate() {
        let map = match node {
            serde_yaml::Value::Mapping(map) => map,
            serde_yaml::Value::Null => {
                *node = serde_yaml::Value::Mapping(Default::default());
                match node {
                    serde_yaml::Value::Mapping(map) => map,
                    _ => unreachable!(),
                }
            }
            _ => {
                return Err(ConfigError::Env {
                    var: var.to_owned(),
                    message: format!("`{}` is not a section", path[..i].join(".")),
                });
            }
        };
        let key_value = serde_yaml::Value::String(key.clone());
        if !map.contains_key(&key_value) {
            return Err(ConfigError::Env {
                var: var.to_owned(),
                message: format!("unknown key `{}`", path[..=i].join(".")),
            });
        }
        if i + 1 == path.len() {
            map.insert(key_value, value);
            return Ok(());
        }
        node = map
            .get_mut(&key_value)
            .unwrap_or_else(|| unreachable!("checked above"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let c = Config::from_yaml_with_env(text, "t.yaml", &[])?;
        c.validate("t.yaml")?;
        Ok(c)
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn example_file_parses_and_names_every_key() {
        let text = include_str!("../timproxy.example.yaml");
        let example: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        let defaults = serde_yaml::to_value(Config::default()).unwrap();
        let mut missing = Vec::new();
        collect_missing(&defaults, &example, "", &mut missing);
        assert!(
            missing.is_empty(),
            "timproxy.example.yaml lacks keys: {missing:?}"
        );
        let parsed: Config = serde_yaml::from_str(text).unwrap();
        parsed.validate("timproxy.example.yaml").unwrap();
    }

    fn collect_missing(
        defaults: &serde_yaml::Value,
        example: &serde_yaml::Value,
        prefix: &str,
        missing: &mut Vec<String>,
    ) {
        if let serde_yaml::Value::Mapping(map) = defaults {
            for (k, v) in map {
                let key = k.as_str().unwrap_or_default();
                let full = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}.{key}")
                };
                match example.get(key) {
                    None => missing.push(full),
                    Some(ex) => collect_missing(v, ex, &full, missing),
                }
            }
        }
    }

    #[test]
    fn bad_configs_are_rejected_with_location_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "inbound:\n  lisen: 0.0.0.0:1\n",
                "t.yaml:2:3: inbound: unknown field `lisen`",
            ),
            ("nonsense: 1\n", "t.yaml:1:1: unknown field `nonsense`"),
            (
                "inbound:\n  max_body_bytes: lots\n",
                "t.yaml:2:19: inbound.max_body_bytes: invalid type",
            ),
            (
                "homeserver:\n  url: not a url\n",
                "t.yaml:2:8: homeserver.url: relative URL without a base",
            ),
            (
                "homeserver:\n  url: ftp://x\n",
                "t.yaml: homeserver.url: URL scheme must be http or https",
            ),
            (
                "homeserver:\n  url: https://hs.example\n",
                "t.yaml: homeserver.url: must be an http:// URL",
            ),
            (
                "raw_data:\n  claim_lease: soon\n",
                "t.yaml:2:16: raw_data.claim_lease: invalid value",
            ),
            (
                "admin:\n  listen: 0.0.0.0:8090\n",
                "t.yaml: admin.listen: port 8090 is already used by inbound.listen",
            ),
            (
                "inbound:\n  tls:\n    cert_file: /nonexistent/c.pem\n    key_file: /nonexistent/k.pem\n",
                "t.yaml: inbound.tls.cert_file: cannot read /nonexistent/c.pem",
            ),
            (
                "database:\n  url: mysql://x\n",
                "t.yaml: database.url: must start with",
            ),
            (
                "policy:\n  default_permission: maybe\n",
                "t.yaml: policy.default_permission: must be",
            ),
            (
                "policy:\n  default_room_version: '11'\n",
                "t.yaml: policy.default_room_version: `11` is not in",
            ),
            (
                "admin:\n  log_level_default: 'info,[bad'\n",
                "t.yaml: admin.log_level_default: `info,[bad` is not a log filter",
            ),
            (
                "federation:\n  max_age: forever\n",
                "t.yaml:2:12: federation.max_age: ",
            ),
            (
                "federation:\n  source: vzd_jws\n",
                "t.yaml: federation.vzd_url: is required",
            ),
            (
                "inbound:\n  extra_endpoints: ['GET']\n",
                "t.yaml: inbound.extra_endpoints: `GET` must be",
            ),
            (
                "inbound:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.1/33]\n",
                "t.yaml:2:20: inbound.trusted_proxies: `10.0.0.1/33`: prefix length must be 0 to 32",
            ),
            (
                "inbound:\n  trusted_proxies:\n    - lb.example\n",
                "t.yaml:3:5: inbound.trusted_proxies: `lb.example` is not an IP address or CIDR block",
            ),
            (
                "inbound:\n  trusted_proxies: [10.1.0.0/8]\n",
                "t.yaml:2:20: inbound.trusted_proxies: `10.1.0.0/8` has bits set after the prefix",
            ),
            (
                "outbound:\n  passthrough: ['https://idp.example.org/']\n",
                "t.yaml: outbound.passthrough: `https://idp.example.org/` must be `host` or `host:port`",
            ),
            (
                "outbound:\n  sso_hosts: ['idp.example.org:0']\n",
                "t.yaml: outbound.sso_hosts: `idp.example.org:0` must be",
            ),
            ("inbound: [1, 2\n", "t.yaml:1:"),
            (
                "policy:\n  shadow: [A_26515-01, A_25534]\n",
                "t.yaml:2:24: policy.shadow[1]: `A_25534` protects the federation boundary and cannot be shadowed",
            ),
            (
                "policy:\n  shadow:\n    - A_28271\n    - nonsense\n",
                "t.yaml:4:7: policy.shadow[1]: unknown rule id `nonsense`; rules that can be shadowed: A_25368-01,",
            ),
            (
                "policy:\n  shadow: [x-matrix-missing]\n",
                "t.yaml:2:12: policy.shadow[0]: `x-matrix-missing` protects the federation boundary",
            ),
            (
                "policy:\n  shadow: [body-parse]\n",
                "t.yaml:2:12: policy.shadow[0]: `body-parse` refuses unusable requests; it is not a TIM rule",
            ),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(
                err.starts_with(expected),
                "config {text:?}\n  got:      {err}\n  expected: {expected}…"
            );
        }
    }

    #[test]
    fn shadowed_rules_are_read_from_file_and_environment() {
        let c = parse("policy:\n  shadow: [A_26515-01, A_28271]\n").unwrap();
        let ids: Vec<&str> = c.policy.shadow.iter().map(|r| r.as_str()).collect();
        assert_eq!(ids, ["A_26515-01", "A_28271"]);
        let env = vec![(
            "TIMPROXY_POLICY__SHADOW".to_owned(),
            "[A_25395-02]".to_owned(),
        )];
        let c = Config::from_yaml_with_env("", "t", &env).unwrap();
        assert_eq!(c.policy.shadow[0].as_str(), "A_25395-02");
        let env = vec![(
            "TIMPROXY_POLICY__SHADOW".to_owned(),
            "[federation-origin]".to_owned(),
        )];
        let err = Config::from_yaml_with_env("", "t", &env).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment TIMPROXY_POLICY__SHADOW: ")
                && err.to_string().contains("federation boundary"),
            "{err}"
        );
    }

    #[test]
    fn trusted_proxies_match_addresses_and_blocks() {
        let c = parse(
            "inbound:\n  trusted_proxies: [10.0.0.0/8, 192.168.1.7, 'fd00::/8', 0.0.0.0/0]\n",
        )
        .unwrap();
        let blocks = &c.inbound.trusted_proxies;
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(blocks[0].contains(ip("10.200.3.4")));
        assert!(!blocks[0].contains(ip("11.0.0.1")));
        assert!(blocks[1].contains(ip("192.168.1.7")));
        assert!(!blocks[1].contains(ip("192.168.1.8")));
        assert!(blocks[2].contains(ip("fd12::1")));
        assert!(!blocks[2].contains(ip("fe80::1")));
        assert!(blocks[3].contains(ip("8.8.8.8")));
        assert!(!blocks[3].contains(ip("::1")));
        let only_lan = parse("inbound:\n  trusted_proxies: [10.0.0.0/8]\n").unwrap();
        assert!(only_lan.inbound.is_trusted_proxy(ip("::ffff:10.1.1.1")));
        assert!(!only_lan.inbound.is_trusted_proxy(ip("127.0.0.1")));
        assert!(!Config::default().inbound.is_trusted_proxy(ip("127.0.0.1")));
        assert_eq!(blocks[1].to_string(), "192.168.1.7/32");
    }

    #[test]
    fn semantic_errors_name_the_line_and_column_of_a_key_written_in_the_file() {
        let text = "homeserver:\n  server_name: hs1.test\npolicy:\n  default_permission: maybe\n";
        let err = parse(text).unwrap_err().located_in(text);
        assert_eq!(
            err.to_string(),
            "t.yaml:4:3: policy.default_permission: must be `allow all` or `block all`, got `maybe`"
        );
        // Not in the file (a default, or from the environment): file and key only.
        let text = "policy:\n  allowed_room_versions: ['9']\n";
        let err = parse(text).unwrap_err().located_in(text);
        assert!(
            err.to_string()
                .starts_with("t.yaml: policy.default_room_version: `10` is not in"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_nested_keys_and_lists() {
        let env = vec![
            (
                "TIMPROXY_DATABASE__URL".to_owned(),
                "postgres://db/x".to_owned(),
            ),
            (
                "TIMPROXY_OUTBOUND__CA__CERT_FILE".to_owned(),
                "/tmp/ca.crt".to_owned(),
            ),
            ("TIMPROXY_FEDERATION__MAX_AGE".to_owned(), "48h".to_owned()),
            (
                "TIMPROXY_OUTBOUND__ALLOW_HOSTS".to_owned(),
                "[a.example, b.example]".to_owned(),
            ),
            ("OTHER".to_owned(), "ignored".to_owned()),
            ("TIMPROXY_LOG".to_owned(), "debug".to_owned()),
            ("TIMPROXY_SKIP_PG".to_owned(), "1".to_owned()),
        ];
        let c = Config::from_yaml_with_env("database:\n  url: sqlite://x\n", "t", &env).unwrap();
        assert_eq!(c.database.url, "postgres://db/x");
        assert_eq!(c.outbound.ca.cert_file, PathBuf::from("/tmp/ca.crt"));
        assert_eq!(c.federation.max_age, Duration::from_secs(48 * 3600));
        assert_eq!(c.outbound.allow_hosts, vec!["a.example", "b.example"]);
    }

    #[test]
    fn env_override_of_unknown_key_names_the_variable() {
        let env = vec![("TIMPROXY_DATABASE__URI".to_owned(), "x".to_owned())];
        let err = Config::from_yaml_with_env("", "t", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment TIMPROXY_DATABASE__URI: unknown key `database.uri`"
        );
    }

    #[test]
    fn env_override_with_wrong_type_is_an_error() {
        let env = vec![(
            "TIMPROXY_INBOUND__MAX_BODY_BYTES".to_owned(),
            "many".to_owned(),
        )];
        let err = Config::from_yaml_with_env("", "t", &env).unwrap_err();
        assert!(err.to_string().contains("TIMPROXY_INBOUND__MAX_BODY_BYTES"));
    }

    #[test]
    fn optional_sections_can_be_set_from_env() {
        let env = vec![(
            "TIMPROXY_HOMESERVER__ADMIN_TOKEN_FILE".to_owned(),
            "/run/secret".to_owned(),
        )];
        let c = Config::from_yaml_with_env("", "t", &env).unwrap();
        assert_eq!(
            c.homeserver.admin_token_file,
            Some(PathBuf::from("/run/secret"))
        );
    }
}
