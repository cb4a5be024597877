//! Certificates: the interception CA (`gen-ca`, loaded by `serve`), leaf minting, and the
//! bounded per-host `ServerConfig` cache the outbound proxy answers TLS handshakes with.
//!
//! The outbound listener never learns how certificates are made: it asks
//! [`Authority::server_config`] for a host and gets a ready `rustls::ServerConfig`.

pub mod ca;
pub mod cache;
pub mod leaf;

use std::path::PathBuf;

pub use ca::{CaOptions, CertificateAuthority, GeneratedCa, KeyType};
pub use cache::Authority;
pub use leaf::{Leaf, SubjectName};

/// Everything that can go wrong creating, loading or using certificates.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The target file exists and overwriting was not asked for.
    #[error("{} already exists (use --force to overwrite)", path.display())]
    Exists { path: PathBuf },
    /// A PEM file lacks the expected block or is malformed.
    #[error("{what}: {reason}")]
    Pem { what: String, reason: String },
    /// The private key has a type or encoding this build cannot sign with.
    #[error("{what}: {reason}")]
    KeyType { what: String, reason: String },
    /// The certificate cannot issue certificates.
    #[error("{what}: not a CA certificate ({reason})")]
    NotCa { what: String, reason: String },
    /// The private key does not belong to the certificate.
    #[error("{key} does not match the public key of {cert}")]
    KeyMismatch { cert: String, key: String },
    /// A host name or address that cannot be put into a certificate.
    #[error("invalid host name `{0}`")]
    InvalidHost(String),
    /// A validity period out of range.
    #[error("invalid validity: {0}")]
    Validity(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration failed: {0}")]
    Rustls(#[from] rustls::Error),
    /// One failure reported to every caller that waited for the same mint.
    #[error(transparent)]
    Shared(std::sync::Arc<TlsError>),
}

impl TlsError {
    /// Whether the error is the caller's input (exit 2) rather than the file system (exit 3).
    pub fn is_usage(&self) -> bool {
        match self {
            TlsError::Io { .. } => false,
            TlsError::Shared(inner) => inner.is_usage(),
            _ => true,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TlsError::Io {
            path: path.into(),
            source,
        }
    }
}

/// The crypto provider used for every rustls config timproxy builds (ring, as in Cargo.toml),
/// passed explicitly so library users and tests need no process-wide default.
pub fn crypto_provider() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
