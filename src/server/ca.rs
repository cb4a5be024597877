//! The interception CA `serve` starts with.

use crate::config::{CaConfig, Config};
use crate::tls::{self, CaOptions, CertificateAuthority, TlsError};

use super::StartError;

/// The configured CA, or — only when both default paths are missing — a freshly generated dev
/// CA written there, so `timproxy serve` works on a fresh checkout. Explicitly configured paths
/// must exist: silently minting a new CA would break the homeserver's trust.
pub(super) fn load_or_create(config: &Config) -> Result<CertificateAuthority, StartError> {
    let paths = &config.outbound.ca;
    let is_default = *paths == CaConfig::default();
    if is_default && !paths.cert_file.exists() && !paths.key_file.exists() {
        let generated = tls::ca::generate_ca(&CaOptions {
            common_name: "timproxy development CA".to_owned(),
            ..CaOptions::default()
        })
        .map_err(tls_error)?;
        if let Some(dir) = paths
            .cert_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StartError::Io(format!("{}: {e}", dir.display())))?;
        }
        tls::ca::write_ca(&paths.cert_file, &paths.key_file, &generated, false)
            .map_err(tls_error)?;
        tracing::warn!(
            cert = %paths.cert_file.display(),
            fingerprint = %generated.fingerprint,
            "generated a development interception CA; use `timproxy gen-ca` and outbound.ca for production"
        );
        return CertificateAuthority::from_generated(&generated).map_err(tls_error);
    }
    CertificateAuthority::load(&paths.cert_file, &paths.key_file).map_err(tls_error)
}

fn tls_error(e: TlsError) -> StartError {
    if e.is_usage() {
        StartError::Config(e.to_string())
    } else {
        StartError::Io(e.to_string())
    }
}
