//! Leaf certificates signed by the interception CA: one per intercepted host (outbound proxy)
//! or for test homeservers and the inbound TLS listener (`gen-ca leaf`).
//!
//! Leaves are EC P-256 with a fresh key each: key generation plus one ECDSA signature is the
//! cheapest mint ring offers, which keeps a cold CONNECT fast.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::TlsError;
use super::ca::{CertificateAuthority, pem_encode, random_serial, validity_window};

/// A name a leaf is issued for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubjectName {
    Dns(String),
    Ip(IpAddr),
}

impl SubjectName {
    /// Parse a host as it appears in SNI, a CONNECT target or on the command line: IP literals
    /// (IPv6 with or without brackets) become IP names, everything else must be a valid DNS
    /// name (lower-cased, a trailing dot removed).
    pub fn parse(host: &str) -> Result<Self, TlsError> {
        let trimmed = host.trim();
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(trimmed);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(SubjectName::Ip(ip));
        }
        let name = trimmed
            .strip_suffix('.')
            .unwrap_or(trimmed)
            .to_ascii_lowercase();
        if name.is_empty() || DnsName::try_from(name.as_str()).is_err() {
            return Err(TlsError::InvalidHost(host.to_owned()));
        }
        // DnsName accepts all-numeric names like `1.2.3`, which no certificate should carry.
        if name
            .split('.')
            .all(|l| l.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(TlsError::InvalidHost(host.to_owned()));
        }
        Ok(SubjectName::Dns(name))
    }

    /// Canonical text (cache key, common name).
    pub fn as_text(&self) -> String {
        match self {
            SubjectName::Dns(name) => name.clone(),
            SubjectName::Ip(ip) => ip.to_string(),
        }
    }

    fn san(&self) -> Result<SanType, TlsError> {
        Ok(match self {
            SubjectName::Dns(name) => SanType::DnsName(
                name.as_str()
                    .try_into()
                    .map_err(|_| TlsError::InvalidHost(name.clone()))?,
            ),
            SubjectName::Ip(ip) => SanType::IpAddress(*ip),
        })
    }
}

/// Which extended key usages a leaf carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafUsage {
    /// serverAuth only (intercepted hosts).
    Server,
    /// serverAuth + clientAuth (homeservers, which also present their cert as clients).
    ServerAndClient,
}

/// A minted leaf: certificate and its private key (PKCS#8).
pub struct Leaf {
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl std::fmt::Debug for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leaf").field("key", &"[elided]").finish()
    }
}

impl Leaf {
    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }

    pub fn cert_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.cert_der)
    }

    /// PKCS#8 PEM. Never log it.
    pub fn key_pem(&self) -> String {
        pem_encode("PRIVATE KEY", &self.key_der)
    }
}

/// Mint a leaf for `names` (the first one is also the common name), valid from an hour ago
/// for `validity`, signed by `ca`.
pub fn mint(
    ca: &CertificateAuthority,
    names: &[SubjectName],
    validity: Duration,
    usage: LeafUsage,
) -> Result<Leaf, TlsError> {
    let first = names
        .first()
        .ok_or_else(|| TlsError::InvalidHost(String::new()))?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, first.as_text());
    params.distinguished_name = dn;
    params.subject_alt_names = names
        .iter()
        .map(SubjectName::san)
        .collect::<Result<_, _>>()?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match usage {
        LeafUsage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        LeafUsage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial());
    let (not_before, not_after) = validity_window(validity)?;
    params.not_before = not_before;
    params.not_after = not_after;
    let cert = params.signed_by(&key, ca.issuer())?;
    Ok(Leaf {
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ca::{CaOptions, generate_ca};

    #[test]
    fn parse_accepts_dns_and_ip_and_rejects_garbage() {
        assert_eq!(
            SubjectName::parse("HS1.Test.").unwrap(),
            SubjectName::Dns("hs1.test".to_owned())
        );
        assert_eq!(
            SubjectName::parse("[::1]").unwrap(),
            SubjectName::Ip("::1".parse().unwrap())
        );
        assert_eq!(
            SubjectName::parse("127.0.0.1").unwrap(),
            SubjectName::Ip([127, 0, 0, 1].into())
        );
        for bad in ["", "a b", "bad_host!", "-x.example", "1.2.3", "host:8448"] {
            assert!(SubjectName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn leaf_carries_sans_usages_and_chains_to_the_ca() {
        let ca = CertificateAuthority::from_generated(&generate_ca(&CaOptions::default()).unwrap())
            .unwrap();
        let names = [
            SubjectName::parse("hs1.test").unwrap(),
            SubjectName::parse("127.0.0.1").unwrap(),
        ];
        let leaf = mint(
            &ca,
            &names,
            Duration::from_secs(3600),
            LeafUsage::ServerAndClient,
        )
        .unwrap();
        let (_, x509) = x509_parser::parse_x509_certificate(&leaf.cert_der).unwrap();
        let san = x509.subject_alternative_name().unwrap().unwrap().value;
        let rendered: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            rendered,
            vec!["DNSName(hs1.test)", "IPAddress(7f:00:00:01)"]
        );
        let eku = x509.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!x509.basic_constraints().unwrap().unwrap().value.ca);
        let (_, ca_x509) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
        x509.verify_signature(Some(ca_x509.public_key())).unwrap();
        assert_eq!(x509.issuer(), ca_x509.subject());
        assert!(leaf.key_pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    }
}
