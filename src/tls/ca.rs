//! The interception CA: generate it (`timproxy gen-ca`, or `serve` on the embedded default),
//! write it without ever leaving a half-written file, and load it for minting.
//!
//! The CA key signs leaves only; every leaf gets its own fresh key (DESIGN.md §3: never reuse
//! the CA key for leaves).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::TlsError;

/// File names `gen-ca` writes into its output directory.
pub const CA_CERT_FILE: &str = "ca.crt";
pub const CA_KEY_FILE: &str = "ca.key";

/// Key algorithms a CA can be generated with. RSA is absent on purpose: the ring backend
/// cannot generate RSA keys (it can still *load* an RSA CA key in PKCS#8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// EC P-256 with SHA-256: fast to sign with, accepted everywhere.
    #[default]
    P256,
    /// EC P-384 with SHA-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl KeyType {
    pub(crate) fn algorithm(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyType::P256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::P384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            KeyType::P256 => "EC P-256",
            KeyType::P384 => "EC P-384",
            KeyType::Ed25519 => "Ed25519",
        }
    }
}

/// What to put into a new CA certificate.
#[derive(Debug, Clone)]
pub struct CaOptions {
    pub common_name: String,
    pub organization: Option<String>,
    /// Validity in days from now.
    pub days: u32,
    pub key_type: KeyType,
}

impl Default for CaOptions {
    fn default() -> Self {
        Self {
            common_name: "timproxy interception CA".to_owned(),
            organization: None,
            days: 3650,
            key_type: KeyType::P256,
        }
    }
}

/// A freshly generated CA in PEM form, not yet written anywhere.
#[derive(Clone)]
pub struct GeneratedCa {
    pub cert_pem: String,
    /// PKCS#8 PEM. Never log it.
    pub key_pem: String,
    /// SHA-256 over the certificate DER, colon-separated upper-case hex.
    pub fingerprint: String,
}

impl std::fmt::Debug for GeneratedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratedCa")
            .field("fingerprint", &self.fingerprint)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

/// Generate a self-signed CA (CA:TRUE, pathlen 0, keyCertSign + cRLSign).
pub fn generate_ca(opts: &CaOptions) -> Result<GeneratedCa, TlsError> {
    if opts.days == 0 {
        return Err(TlsError::Validity("--days must be at least 1".to_owned()));
    }
    if opts.common_name.trim().is_empty() {
        return Err(TlsError::Validity(
            "the common name must not be empty".to_owned(),
        ));
    }
    let key = KeyPair::generate_for(opts.key_type.algorithm())?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, opts.common_name.as_str());
    if let Some(org) = &opts.organization {
        dn.push(DnType::OrganizationName, org.as_str());
    }
    params.distinguished_name = dn;
    // pathlen 0: this CA signs leaves directly and nothing else.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let (not_before, not_after) =
        validity_window(Duration::from_secs(u64::from(opts.days) * 86_400))?;
    params.not_before = not_before;
    params.not_after = not_after;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key)?;
    Ok(GeneratedCa {
        fingerprint: fingerprint(cert.der()),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The `ca.crt` / `ca.key` paths inside a directory.
pub fn paths_in(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE))
}

/// Write a generated CA: the certificate world-readable, the key mode 0600.
///
/// Refuses (before writing anything) when either file exists and `force` is false. Both files
/// are written to temporary names in the target directory first and renamed into place, so
/// a crash or full disk never leaves a half-written certificate or key behind.
pub fn write_ca(
    cert_path: &Path,
    key_path: &Path,
    ca: &GeneratedCa,
    force: bool,
) -> Result<(), TlsError> {
    write_files(
        &[
            (cert_path, ca.cert_pem.as_bytes(), 0o644),
            (key_path, ca.key_pem.as_bytes(), 0o600),
        ],
        force,
    )
}

/// Write several files all-or-nothing as far as the file system allows: check, write every
/// temporary, then rename each into place (removing the temporaries on any failure).
pub(crate) fn write_files(files: &[(&Path, &[u8], u32)], force: bool) -> Result<(), TlsError> {
    if !force {
        for (path, _, _) in files {
            if path.exists() {
                return Err(TlsError::Exists {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    let mut temps: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    for (path, contents, mode) in files {
        match write_temp(path, contents, *mode) {
            Ok(tmp) => temps.push((tmp, path)),
            Err(e) => {
                remove_temps(&temps);
                return Err(e);
            }
        }
    }
    for (i, (tmp, path)) in temps.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            remove_temps(&temps[i..]);
            return Err(TlsError::io(*path, e));
        }
    }
    Ok(())
}

fn remove_temps(temps: &[(PathBuf, &Path)]) {
    for (tmp, _) in temps {
        let _ = std::fs::remove_file(tmp);
    }
}

fn write_temp(path: &Path, contents: &[u8], mode: u32) -> Result<PathBuf, TlsError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".to_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // The mode is set at creation, so the key is never readable by others, not even briefly.
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp).map_err(|e| TlsError::io(path, e))?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| TlsError::io(path, e));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// A loaded CA that can sign leaves.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    fingerprint: String,
    subject: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("subject", &self.subject)
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

impl CertificateAuthority {
    /// Load `cert` (PEM) and `key` (PEM, PKCS#8) and check that they belong together and the
    /// certificate is allowed to sign certificates.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let cert_pem = std::fs::read_to_string(cert).map_err(|e| TlsError::io(cert, e))?;
        let key_pem = std::fs::read_to_string(key).map_err(|e| TlsError::io(key, e))?;
        Self::from_pem_named(
            &cert_pem,
            &key_pem,
            &cert.display().to_string(),
            &key.display().to_string(),
        )
    }

    /// Same as [`load`](Self::load) from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::from_pem_named(cert_pem, key_pem, "CA certificate", "CA key")
    }

    /// The CA `generate_ca` just made.
    pub fn from_generated(ca: &GeneratedCa) -> Result<Self, TlsError> {
        Self::from_pem(&ca.cert_pem, &ca.key_pem)
    }

    fn from_pem_named(
        cert_pem: &str,
        key_pem: &str,
        cert_name: &str,
        key_name: &str,
    ) -> Result<Self, TlsError> {
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|e| TlsError::Pem {
                what: cert_name.to_owned(),
                reason: format!("no PEM certificate found ({e})"),
            })?;
        let key = parse_key(key_pem, key_name)?;
        let (_, x509) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| TlsError::Pem {
                what: cert_name.to_owned(),
                reason: format!("not an X.509 certificate ({e})"),
            })?;
        let not_ca = |reason: &str| TlsError::NotCa {
            what: cert_name.to_owned(),
            reason: reason.to_owned(),
        };
        match x509.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(not_ca("basicConstraints CA:TRUE missing")),
            Err(_) => return Err(not_ca("duplicate basicConstraints")),
        }
        match x509.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(not_ca("keyUsage lacks keyCertSign"));
            }
            Ok(_) => {}
            Err(_) => return Err(not_ca("duplicate keyUsage")),
        }
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(TlsError::KeyMismatch {
                cert: cert_name.to_owned(),
                key: key_name.to_owned(),
            });
        }
        let subject = x509.subject().to_string();
        let fingerprint = fingerprint(&cert_der);
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|e| TlsError::Pem {
            what: cert_name.to_owned(),
            reason: e.to_string(),
        })?;
        let cert_pem = pem_encode("CERTIFICATE", &cert_der);
        Ok(Self {
            issuer,
            cert_der,
            cert_pem,
            fingerprint,
            subject,
        })
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// SHA-256 fingerprint, colon-separated upper-case hex (what `openssl x509 -fingerprint
    /// -sha256` prints).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Subject DN as text.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    pub(crate) fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }
}

fn parse_key(key_pem: &str, key_name: &str) -> Result<KeyPair, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| TlsError::Pem {
        what: key_name.to_owned(),
        reason: format!("no PEM private key found ({e})"),
    })?;
    match &key {
        PrivateKeyDer::Pkcs8(_) => {}
        PrivateKeyDer::Sec1(_) | PrivateKeyDer::Pkcs1(_) => {
            return Err(TlsError::KeyType {
                what: key_name.to_owned(),
                reason: "key is not PKCS#8 (convert it: openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pk8)"
                    .to_owned(),
            });
        }
        _ => {
            return Err(TlsError::KeyType {
                what: key_name.to_owned(),
                reason: "unknown private key encoding".to_owned(),
            });
        }
    }
    KeyPair::try_from(&key).map_err(|_| TlsError::KeyType {
        what: key_name.to_owned(),
        reason: "unsupported key type (supported: EC P-256, EC P-384, Ed25519, RSA)".to_owned(),
    })
}

/// SHA-256 over DER, colon-separated upper-case hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// A random positive 128-bit serial (RFC 5280: unique per issuer, at most 20 octets).
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    SerialNumber::from_slice(&bytes)
}

/// `(now - 1 h, now + validity)`: the hour of slack tolerates clocks of peers running behind.
pub(crate) fn validity_window(
    validity: Duration,
) -> Result<(OffsetDateTime, OffsetDateTime), TlsError> {
    let now = OffsetDateTime::now_utc();
    let span = time::Duration::try_from(validity)
        .map_err(|_| TlsError::Validity("validity too long".to_owned()))?;
    let not_after = now
        .checked_add(span)
        .filter(|t| t.year() <= 9999)
        .ok_or_else(|| TlsError::Validity("validity ends after the year 9999".to_owned()))?;
    Ok((now - time::Duration::hours(1), not_after))
}

pub(crate) fn pem_encode(tag: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {tag}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {tag}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ca_loads_and_is_a_ca() {
        for key_type in [KeyType::P256, KeyType::P384, KeyType::Ed25519] {
            let generated = generate_ca(&CaOptions {
                key_type,
                organization: Some("Example Org".to_owned()),
                ..CaOptions::default()
            })
            .unwrap();
            let ca = CertificateAuthority::from_generated(&generated).unwrap();
            assert_eq!(ca.fingerprint(), generated.fingerprint);
            assert!(ca.subject().contains("CN=timproxy interception CA"));
            assert!(ca.subject().contains("O=Example Org"));
            let (_, x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
            let bc = x509.basic_constraints().unwrap().unwrap();
            assert!(bc.critical && bc.value.ca);
            assert_eq!(bc.value.path_len_constraint, Some(0));
            let ku = x509.key_usage().unwrap().unwrap().value;
            assert!(ku.key_cert_sign() && ku.crl_sign());
        }
    }

    #[test]
    fn key_of_another_ca_is_a_mismatch() {
        let a = generate_ca(&CaOptions::default()).unwrap();
        let b = generate_ca(&CaOptions::default()).unwrap();
        let err = CertificateAuthority::from_pem(&a.cert_pem, &b.key_pem).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.is_usage());
    }

    #[test]
    fn swapped_files_are_reported_per_file() {
        let a = generate_ca(&CaOptions::default()).unwrap();
        let err = CertificateAuthority::from_pem(&a.key_pem, &a.key_pem).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("CA certificate: no PEM certificate"),
            "{err}"
        );
        let err = CertificateAuthority::from_pem(&a.cert_pem, &a.cert_pem).unwrap_err();
        assert!(
            err.to_string().starts_with("CA key: no PEM private key"),
            "{err}"
        );
    }

    #[test]
    fn zero_days_is_refused() {
        let err = generate_ca(&CaOptions {
            days: 0,
            ..CaOptions::default()
        })
        .unwrap_err();
        assert!(matches!(err, TlsError::Validity(_)));
    }

    #[test]
    fn fingerprint_is_colon_hex_of_sha256() {
        let fp = fingerprint(b"abc");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("BA:78:16:BF"));
    }

    #[test]
    fn write_refuses_existing_files_without_force_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = paths_in(dir.path());
        let ca = generate_ca(&CaOptions::default()).unwrap();
        write_ca(&cert, &key, &ca, false).unwrap();
        let err = write_ca(&cert, &key, &ca, false).unwrap_err();
        assert!(matches!(err, TlsError::Exists { .. }));
        let other = generate_ca(&CaOptions::default()).unwrap();
        write_ca(&cert, &key, &other, true).unwrap();
        assert_eq!(std::fs::read_to_string(&cert).unwrap(), other.cert_pem);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        CertificateAuthority::load(&cert, &key).unwrap();
    }

    #[test]
    fn write_into_missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = paths_in(&dir.path().join("missing"));
        let ca = generate_ca(&CaOptions::default()).unwrap();
        let err = write_ca(&cert, &key, &ca, false).unwrap_err();
        assert!(!err.is_usage(), "{err}");
    }
}
