//! Verification of the VZD-signed federation list (compact JWS with an `x5c` chain).
//!
//! The reference proxy trusts whatever its registration service hands it; the TI-Messenger
//! spec (api-ti-messenger `MessengerService.adoc`) requires the proxy itself to check the
//! list signature. The steps and their order follow `tests/data/federation-list` (README
//! "How it must be verified"): algorithm allow-list first (so `alg: none` never reaches
//! any key handling), then the certificate path from `x5c[0]` through the rest of `x5c` to a
//! configured trust anchor, then the JWS signature, and only then the payload.
//!
//! Names are only used to *find* a candidate issuer; every link is accepted only when the
//! issuer's key verifies the certificate's signature, because a rogue hierarchy can copy the
//! genuine names (`vzd-list-wrong-anchor.jws`). Revocation is checked afterwards, with the
//! signer and its issuer this verification returns (`super::ocsp`).

use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ecdsa::signature::Verifier as _;
use serde::Deserialize;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer as _;

/// Most certificates accepted in `x5c`; a real chain has one to three.
const MAX_X5C: usize = 8;

/// OID ecdsa-with-SHA256 (RFC 5758).
const OID_ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
/// OID id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// OID of the named curve secp256r1 / P-256.
const OID_P256: &str = "1.2.840.10045.3.1.7";
/// OID of the named curve brainpoolP256r1 (RFC 5639).
const OID_BP256R1: &str = "1.3.36.3.3.2.8.1.1.7";

/// A JWS signature algorithm timproxy may accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA over brainpoolP256r1 with SHA-256 (the VZD default, always allowed).
    Bp256r1,
    /// ECDSA over P-256 with SHA-256 (only with `federation.allow_es256`).
    Es256,
}

impl Alg {
    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Bp256r1 => "BP256R1",
            Alg::Es256 => "ES256",
        }
    }

    fn curve(self) -> Curve {
        match self {
            Alg::Bp256r1 => Curve::Bp256r1,
            Alg::Es256 => Curve::P256,
        }
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a JWS was not accepted. Each variant names the failed step so logs and the
/// `fetch-federation` summary say what to fix (anchor config, clock, the list itself).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwsError {
    #[error("not a compact JWS: {0}")]
    Malformed(String),
    #[error("algorithm `{0}` is not allowed")]
    AlgNotAllowed(String),
    #[error("unsupported critical header parameter(s): {0}")]
    CriticalHeader(String),
    #[error("x5c: {0}")]
    X5c(String),
    #[error("certificate `{subject}`: {reason}")]
    Certificate { subject: String, reason: String },
    #[error("no path from the signer to a configured trust anchor: {0}")]
    Untrusted(String),
    #[error("signature does not verify: {0}")]
    BadSignature(String),
    #[error("no trust anchors configured")]
    NoTrustAnchors,
    #[error("trust anchor {path}: {reason}")]
    Anchor { path: String, reason: String },
}

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    pub alg: Alg,
    /// Subject of the signer certificate (`x5c[0]`), for logs and the CLI summary.
    pub signer: String,
    /// Subject of the trust anchor the chain ended in.
    pub anchor: String,
    /// The decoded payload bytes (UTF-8 JSON), only available after all checks passed.
    pub payload: Vec<u8>,
    /// The signer certificate (DER), for its revocation check.
    pub signer_der: Vec<u8>,
    /// The certificate that issued the signer (DER: `x5c[1]` or a trust anchor), which an
    /// OCSP request names and whose key (or delegate) signs the answer.
    pub issuer_der: Vec<u8>,
}

/// Configured trust anchors (DER certificates). An anchor may be a root or an intermediate
/// CA (a partial chain, like a Java PKIX `TrustAnchor`): the real VZD sends only the signer
/// in `x5c`, so its issuing CA has to be configured directly.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    ders: Vec<Vec<u8>>,
}

impl TrustAnchors {
    /// Load every certificate from each PEM file. A file without certificates is an error,
    /// so a wrong path or a key file never silently yields "no anchors".
    pub fn from_pem_files(paths: &[PathBuf]) -> Result<Self, JwsError> {
        let mut anchors = Self::default();
        for path in paths {
            let text = std::fs::read(path).map_err(|e| JwsError::Anchor {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            anchors.add_pem(&text, path)?;
        }
        Ok(anchors)
    }

    /// Add the certificates of one PEM document (`origin` names it in errors).
    pub fn add_pem(&mut self, pem: &[u8], origin: &Path) -> Result<(), JwsError> {
        let anchor_err = |reason: String| JwsError::Anchor {
            path: origin.display().to_string(),
            reason,
        };
        let mut found = 0;
        for item in x509_parser::pem::Pem::iter_from_buffer(pem) {
            let item = item.map_err(|e| anchor_err(format!("bad PEM: {e}")))?;
            if item.label != "CERTIFICATE" {
                continue;
            }
            X509Certificate::from_der(&item.contents)
                .map_err(|e| anchor_err(format!("bad certificate: {e}")))?;
            self.ders.push(item.contents);
            found += 1;
        }
        if found == 0 {
            return Err(anchor_err("no CERTIFICATE block found".to_owned()));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.ders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ders.is_empty()
    }
}

/// Verifies compact JWS federation lists against trust anchors and an algorithm allow-list.
#[derive(Debug, Clone)]
pub struct JwsVerifier {
    anchors: TrustAnchors,
    allow_es256: bool,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    x5c: Option<Vec<String>>,
    #[serde(default)]
    crit: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Curve {
    P256,
    Bp256r1,
}

impl JwsVerifier {
    pub fn new(anchors: TrustAnchors, allow_es256: bool) -> Self {
        Self {
            anchors,
            allow_es256,
        }
    }

    pub fn anchors(&self) -> &TrustAnchors {
        &self.anchors
    }

    /// Verify `compact` as of `now` (a parameter so tests are deterministic).
    pub fn verify(&self, compact: &[u8], now: OffsetDateTime) -> Result<VerifiedJws, JwsError> {
        // 1. Three parts; header decoded and parsed.
        let text = std::str::from_utf8(compact)
            .map_err(|_| JwsError::Malformed("not ASCII".to_owned()))?
            .trim();
        let mut parts = text.split('.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed(
                "expected three dot-separated parts".to_owned(),
            ));
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(h64)
            .map_err(|e| JwsError::Malformed(format!("header is not base64url: {e}")))?;
        let header: Header = serde_json::from_slice(&header_bytes)
            .map_err(|e| JwsError::Malformed(format!("header is not a JSON object: {e}")))?;

        // 2. Allow-list before anything else touches keys.
        let alg = match header.alg.as_str() {
            "BP256R1" => Alg::Bp256r1,
            "ES256" if self.allow_es256 => Alg::Es256,
            other => return Err(JwsError::AlgNotAllowed(other.to_owned())),
        };
        if let Some(crit) = header.crit.filter(|c| !c.is_empty()) {
            return Err(JwsError::CriticalHeader(crit.join(", ")));
        }

        // 3. x5c: standard base64 DER, signer first.
        let x5c = header.x5c.unwrap_or_default();
        if x5c.is_empty() {
            return Err(JwsError::X5c("missing or empty".to_owned()));
        }
        if x5c.len() > MAX_X5C {
            return Err(JwsError::X5c(format!("more than {MAX_X5C} certificates")));
        }
        let ders = x5c
            .iter()
            .enumerate()
            .map(|(i, b64)| {
                STANDARD
                    .decode(b64)
                    .map_err(|e| JwsError::X5c(format!("entry {i} is not base64: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let chain = ders
            .iter()
            .enumerate()
            .map(|(i, der)| parse_cert(der).map_err(|e| JwsError::X5c(format!("entry {i}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;

        // 4. Path to an anchor.
        if self.anchors.is_empty() {
            return Err(JwsError::NoTrustAnchors);
        }
        let anchors = self
            .anchors
            .ders
            .iter()
            .map(|der| parse_cert(der))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| JwsError::Untrusted(format!("trust anchor unreadable: {e}")))?;
        let (anchor_index, signer_issuer) = check_path(&chain, &anchors, now)?;
        let anchor = &anchors[anchor_index];
        let issuer_der = match signer_issuer {
            SignerIssuer::Anchor => self.anchors.ders[anchor_index].clone(),
            SignerIssuer::X5c => ders[1].clone(),
        };

        // 5. Signature with x5c[0]'s key; the key's curve must match `alg`.
        let signer = &chain[0];
        let signature = URL_SAFE_NO_PAD
            .decode(s64)
            .map_err(|e| JwsError::Malformed(format!("signature is not base64url: {e}")))?;
        if signature.len() != 64 {
            return Err(JwsError::BadSignature(format!(
                "expected 64 bytes r||s, got {}",
                signature.len()
            )));
        }
        let (curve, point) = ec_key(signer).map_err(|reason| JwsError::Certificate {
            subject: signer.subject().to_string(),
            reason,
        })?;
        if curve != alg.curve() {
            return Err(JwsError::BadSignature(format!(
                "signer key curve does not match alg {alg}"
            )));
        }
        let signing_input = &text.as_bytes()[..h64.len() + 1 + p64.len()];
        verify_ecdsa(curve, point, signing_input, SigEncoding::Fixed(&signature))
            .map_err(JwsError::BadSignature)?;

        // 6. Only now the payload.
        let payload = URL_SAFE_NO_PAD
            .decode(p64)
            .map_err(|e| JwsError::Malformed(format!("payload is not base64url: {e}")))?;
        Ok(VerifiedJws {
            alg,
            signer: signer.subject().to_string(),
            anchor: anchor.subject().to_string(),
            payload,
            signer_der: ders[0].clone(),
            issuer_der,
        })
    }
}

pub(crate) fn parse_cert(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".to_owned()),
        Err(e) => Err(format!("not an X.509 certificate: {e}")),
    }
}

fn cert_err(cert: &X509Certificate<'_>, reason: impl Into<String>) -> JwsError {
    JwsError::Certificate {
        subject: cert.subject().to_string(),
        reason: reason.into(),
    }
}

/// Which certificate issued the signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignerIssuer {
    /// The trust anchor the path ended in (a partial chain: `x5c` holds only the signer).
    Anchor,
    /// `x5c[1]`.
    X5c,
}

/// Walk `x5c[0] → x5c[1..] → anchor`. At each step an anchor that verifies the current
/// certificate ends the path (partial chains); otherwise the next `x5c` entry must be its
/// issuer. Returns the index of the anchor the path ended in and where the signer's issuer is.
fn check_path(
    chain: &[X509Certificate<'_>],
    anchors: &[X509Certificate<'_>],
    now: OffsetDateTime,
) -> Result<(usize, SignerIssuer), JwsError> {
    let signer = &chain[0];
    check_validity(signer, now)?;
    if !key_usage(signer).is_some_and(|(digital_signature, _)| digital_signature) {
        return Err(cert_err(signer, "signer lacks keyUsage digitalSignature"));
    }
    // CA certificates already in the path below the next issuer (for pathLenConstraint).
    let mut cas_below = 0u32;
    let mut current = signer;
    let mut next = 1;
    loop {
        let mut anchor_failures = Vec::new();
        for (index, anchor) in anchors.iter().enumerate() {
            if anchor.subject().as_raw() != current.issuer().as_raw() {
                continue;
            }
            match check_issued_by(current, anchor, cas_below, now) {
                Ok(()) => {
                    let issuer = if next == 1 {
                        SignerIssuer::Anchor
                    } else {
                        SignerIssuer::X5c
                    };
                    return Ok((index, issuer));
                }
                Err(e) => anchor_failures.push(e.to_string()),
            }
        }
        let Some(issuer) = chain.get(next) else {
            let detail = if anchor_failures.is_empty() {
                format!(
                    "issuer `{}` of `{}` is neither in x5c nor a configured trust anchor",
                    current.issuer(),
                    current.subject()
                )
            } else {
                anchor_failures.join("; ")
            };
            return Err(JwsError::Untrusted(detail));
        };
        check_issued_by(current, issuer, cas_below, now)?;
        // `issuer` is now an intermediate CA below whatever issues it next.
        cas_below += 1;
        current = issuer;
        next += 1;
    }
}

/// `issuer` is a valid CA that signed `cert`.
pub(crate) fn check_issued_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    cas_below: u32,
    now: OffsetDateTime,
) -> Result<(), JwsError> {
    if issuer.subject().as_raw() != cert.issuer().as_raw() {
        return Err(cert_err(
            cert,
            format!(
                "issued by `{}`, not by `{}`",
                cert.issuer(),
                issuer.subject()
            ),
        ));
    }
    check_validity(issuer, now)?;
    match issuer.basic_constraints() {
        Ok(Some(bc)) if bc.value.ca => {
            if let Some(max) = bc.value.path_len_constraint
                && cas_below > max
            {
                return Err(cert_err(issuer, "pathLenConstraint exceeded"));
            }
        }
        _ => {
            return Err(cert_err(
                issuer,
                "issuer is not a CA (basicConstraints CA:TRUE)",
            ));
        }
    }
    if !key_usage(issuer).is_some_and(|(_, key_cert_sign)| key_cert_sign) {
        return Err(cert_err(issuer, "issuer lacks keyUsage keyCertSign"));
    }
    if cert.signature_algorithm.algorithm.to_id_string() != OID_ECDSA_SHA256
        || cert.tbs_certificate.signature.algorithm != cert.signature_algorithm.algorithm
    {
        return Err(cert_err(
            cert,
            format!(
                "certificate signature algorithm {} is not ecdsa-with-SHA256",
                cert.signature_algorithm.algorithm
            ),
        ));
    }
    let (curve, point) = ec_key(issuer).map_err(|reason| cert_err(issuer, reason))?;
    verify_ecdsa(
        curve,
        point,
        cert.tbs_certificate.as_ref(),
        SigEncoding::Der(&cert.signature_value.data),
    )
    .map_err(|e| {
        cert_err(
            cert,
            format!(
                "signature does not verify with the key of `{}`: {e}",
                issuer.subject()
            ),
        )
    })
}

pub(crate) fn check_validity(
    cert: &X509Certificate<'_>,
    now: OffsetDateTime,
) -> Result<(), JwsError> {
    let validity = cert.validity();
    let t = now.unix_timestamp();
    if t < validity.not_before.timestamp() {
        return Err(cert_err(
            cert,
            format!("not valid before {}", validity.not_before),
        ));
    }
    if t > validity.not_after.timestamp() {
        return Err(cert_err(cert, format!("expired on {}", validity.not_after)));
    }
    Ok(())
}

/// `(digitalSignature, keyCertSign)`, or `None` without a (parsable) keyUsage extension.
fn key_usage(cert: &X509Certificate<'_>) -> Option<(bool, bool)> {
    match cert.key_usage() {
        Ok(Some(ku)) => Some((ku.value.digital_signature(), ku.value.key_cert_sign())),
        _ => None,
    }
}

/// Curve and SEC1 point of an EC public key.
pub(crate) fn ec_key<'c>(cert: &'c X509Certificate<'_>) -> Result<(Curve, &'c [u8]), String> {
    let spki = cert.public_key();
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY {
        return Err(format!(
            "public key algorithm {} is not EC",
            spki.algorithm.algorithm
        ));
    }
    let curve_oid: Option<Oid<'_>> = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let curve = match curve_oid.map(|o| o.to_id_string()).as_deref() {
        Some(OID_P256) => Curve::P256,
        Some(OID_BP256R1) => Curve::Bp256r1,
        Some(other) => return Err(format!("unsupported curve {other}")),
        None => return Err("EC key without a named curve".to_owned()),
    };
    Ok((curve, &spki.subject_public_key.data))
}

pub(crate) enum SigEncoding<'s> {
    /// 64-byte `r || s` (JWS).
    Fixed(&'s [u8]),
    /// DER `SEQUENCE { r, s }` (X.509).
    Der(&'s [u8]),
}

/// ECDSA with SHA-256 over `message`.
pub(crate) fn verify_ecdsa(
    curve: Curve,
    point: &[u8],
    message: &[u8],
    sig: SigEncoding<'_>,
) -> Result<(), String> {
    match curve {
        Curve::P256 => {
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map_err(|_| "invalid P-256 public key".to_owned())?;
            let sig = match sig {
                SigEncoding::Fixed(b) => p256::ecdsa::Signature::from_slice(b),
                SigEncoding::Der(b) => p256::ecdsa::Signature::from_der(b),
            }
            .map_err(|_| "malformed signature".to_owned())?;
            key.verify(message, &sig)
                .map_err(|_| "ECDSA P-256 verification failed".to_owned())
        }
        Curve::Bp256r1 => {
            let key = ecdsa::VerifyingKey::<bp256::BrainpoolP256r1>::from_sec1_bytes(point)
                .map_err(|_| "invalid brainpoolP256r1 public key".to_owned())?;
            let sig = match sig {
                SigEncoding::Fixed(b) => bp256::r1::ecdsa::Signature::from_slice(b),
                SigEncoding::Der(b) => bp256::r1::ecdsa::Signature::from_der(b),
            }
            .map_err(|_| "malformed signature".to_owned())?;
            key.verify(message, &sig)
                .map_err(|_| "ECDSA brainpoolP256r1 verification failed".to_owned())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn data(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/federation-list")
            .join(name)
    }

    fn verifier(anchor: &str, es256: bool) -> JwsVerifier {
        JwsVerifier::new(
            TrustAnchors::from_pem_files(&[data(anchor)]).unwrap(),
            es256,
        )
    }

    fn at(year: i32) -> OffsetDateTime {
        time::Date::from_calendar_date(year, time::Month::June, 1)
            .unwrap()
            .midnight()
            .assume_utc()
    }

    #[derive(Deserialize)]
    struct Expected {
        jws: Vec<ExpectedJws>,
    }

    #[derive(Deserialize)]
    struct ExpectedJws {
        file: String,
        trust_anchor: String,
        valid: bool,
        reason: String,
        version: i64,
        domain_count: usize,
    }

    /// Every vector in expected.json, with ES256 allowed (the ES256 vector is valid there).
    #[test]
    fn expected_json_table_matches_exactly() {
        let expected: Expected =
            serde_json::from_slice(&std::fs::read(data("expected.json")).unwrap()).unwrap();
        assert!(expected.jws.len() >= 9);
        for now in [at(2025), at(2030), at(2034)] {
            for case in &expected.jws {
                let jws = std::fs::read(data(&case.file)).unwrap();
                let result = verifier(&case.trust_anchor, true).verify(&jws, now);
                assert_eq!(
                    result.is_ok(),
                    case.valid,
                    "{} at {now}: {:?} (expected because: {})",
                    case.file,
                    result.as_ref().err(),
                    case.reason
                );
                if let Ok(v) = result {
                    let list: serde_json::Value = serde_json::from_slice(&v.payload).unwrap();
                    assert_eq!(list["version"].as_i64(), Some(case.version));
                    assert_eq!(
                        list["domainList"].as_array().map(Vec::len),
                        Some(case.domain_count)
                    );
                }
            }
        }
    }

    #[test]
    fn alg_none_is_rejected_before_anything_else() {
        let jws = std::fs::read(data("vzd-list-alg-none.jws")).unwrap();
        let empty = JwsVerifier::new(TrustAnchors::default(), true);
        assert_eq!(
            empty.verify(&jws, at(2030)),
            Err(JwsError::AlgNotAllowed("none".to_owned()))
        );
    }

    #[test]
    fn es256_is_rejected_unless_allowed() {
        let jws = std::fs::read(data("vzd-list-es256.jws")).unwrap();
        let err = verifier("trust-anchor-p256.pem", false)
            .verify(&jws, at(2030))
            .unwrap_err();
        assert_eq!(err, JwsError::AlgNotAllowed("ES256".to_owned()));
    }

    #[test]
    fn signer_only_x5c_fails_with_only_the_root_configured() {
        let jws = std::fs::read(data("vzd-list-signer-only-x5c.jws")).unwrap();
        let err = verifier("trust-anchor.pem", false)
            .verify(&jws, at(2030))
            .unwrap_err();
        assert!(matches!(err, JwsError::Untrusted(_)), "{err}");
    }

    #[test]
    fn wrong_anchor_vector_verifies_against_its_own_rogue_root() {
        // Proves the genuine-anchor failure is about keys, not a broken file.
        let jws = std::fs::read(data("vzd-list-wrong-anchor.jws")).unwrap();
        assert!(
            verifier("rogue-trust-anchor.pem", false)
                .verify(&jws, at(2030))
                .is_ok()
        );
        let err = verifier("trust-anchor.pem", false)
            .verify(&jws, at(2030))
            .unwrap_err();
        assert!(matches!(err, JwsError::Untrusted(_)), "{err}");
    }

    #[test]
    fn validity_is_checked_for_every_certificate_including_the_anchor() {
        let jws = std::fs::read(data("vzd-list.jws")).unwrap();
        let v = verifier("trust-anchor.pem", false);
        // Before the signer's notBefore (2025-01-01).
        assert!(matches!(
            v.verify(&jws, at(2024)),
            Err(JwsError::Certificate { .. })
        ));
        // After the signer's notAfter (2035-01-01).
        assert!(matches!(
            v.verify(&jws, at(2036)),
            Err(JwsError::Certificate { .. })
        ));
        // Signer-only x5c with the intermediate (valid to 2040) as anchor: still bounded by
        // the signer; and at 2041 the intermediate anchor itself is expired too.
        let signer_only = std::fs::read(data("vzd-list-signer-only-x5c.jws")).unwrap();
        assert!(
            verifier("signer-ca.pem", false)
                .verify(&signer_only, at(2041))
                .is_err()
        );
    }

    #[test]
    fn a_ca_certificate_is_not_accepted_as_a_signer() {
        // Use the intermediate's PEM as "signer": it has keyCertSign but no digitalSignature.
        let pem = std::fs::read(data("signer-ca.pem")).unwrap();
        let der = x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents;
        let header = serde_json::json!({"alg": "BP256R1", "x5c": [STANDARD.encode(&der)]});
        let compact = format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode("{}"),
            URL_SAFE_NO_PAD.encode([0u8; 64])
        );
        let err = verifier("trust-anchor.pem", false)
            .verify(compact.as_bytes(), at(2030))
            .unwrap_err();
        assert!(err.to_string().contains("digitalSignature"), "{err}");
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let v = verifier("trust-anchor.pem", false);
        for input in [
            &b""[..],
            b"a.b",
            b"a.b.c.d",
            b"!!!.b.c",
            b"e30.e30.",
            b"\xff\xfe",
        ] {
            assert!(v.verify(input, at(2030)).is_err());
        }
        let no_x5c = format!("{}.e30.", URL_SAFE_NO_PAD.encode(r#"{"alg":"BP256R1"}"#));
        assert!(matches!(
            v.verify(no_x5c.as_bytes(), at(2030)),
            Err(JwsError::X5c(_))
        ));
        let crit = format!(
            "{}.e30.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"BP256R1","crit":["b64"],"x5c":[]}"#)
        );
        assert!(matches!(
            v.verify(crit.as_bytes(), at(2030)),
            Err(JwsError::CriticalHeader(_))
        ));
    }

    #[test]
    fn anchor_file_without_certificates_is_an_error() {
        let err = TrustAnchors::from_pem_files(&[data("signer.key.pem")]).unwrap_err();
        assert!(err.to_string().contains("no CERTIFICATE"), "{err}");
    }
}
