//! OCSP (RFC 6960) for the certificate that signed a federation list.
//!
//! The TI-Messenger spec requires the VZD list's signer to be checked for revocation, not only
//! chained to the TI trust anchor. After [`super::jws`] verified a list, the refresher asks the
//! responder the signer certificate names in its authorityInfoAccess (or the configured
//! `federation.ocsp.responder_url`) about the signer, and accepts only a verified answer:
//!
//! - the request names the signer by a SHA-1 `CertID` (issuer name and key hash, serial) and
//!   carries no nonce (the RFC 5019 profile responders cache for), so freshness comes from the
//!   answer's `thisUpdate`/`nextUpdate`, checked against the clock with `clock_skew` tolerance;
//!   an answer without `nextUpdate` is current for `default_validity` after `thisUpdate`;
//! - the answer is signed (ecdsa-with-SHA256, P-256 or brainpoolP256r1 as in the TI PKI) either
//!   by the signer's issuer itself or by a delegated responder certificate that the issuer
//!   issued directly, that carries extendedKeyUsage id-kp-OCSPSigning and is valid now;
//!   the responder ID must name that certificate (by name or by key hash);
//! - the single response must be about exactly our `CertID`.
//!
//! What each status means for the list is decided by the refresher (`super::refresh`):
//! `good` lets the list in; `revoked` refuses it and withdraws a held list from the same
//! signer (fail closed); `unknown`, an unreachable responder or an answer that does not verify
//! refuse the new list but keep the last good one until `federation.max_age`.
//! Answers are cached per `CertID` while current (`good` and `revoked`; `unknown` is asked
//! again), so a poll every minute does not mean an OCSP request every minute.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;
use url::Url;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::jws::{self, SigEncoding};
use crate::config::OcspConfig;

/// Largest OCSP answer read (a real one is 1–3 KiB; the signer certificate is inside).
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// DER of OID sha1 (1.3.14.3.2.26) with its `NULL` parameters, the `CertID` hash algorithm.
const SHA1_ALGORITHM: &[u8] = &[
    0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00,
];
/// Content of OID sha1 (1.3.14.3.2.26).
const OID_SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];
/// Content of OID id-pkix-ocsp-basic (1.3.6.1.5.5.7.48.1.1).
const OID_OCSP_BASIC: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01];
/// Content of OID ecdsa-with-SHA256 (1.2.840.10045.4.3.2).
const OID_ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
/// id-ad-ocsp (1.3.6.1.5.5.7.48.1), the access method of an OCSP responder in AIA.
const OID_AD_OCSP: &str = "1.3.6.1.5.5.7.48.1";

// DER tags used here.
const SEQUENCE: u8 = 0x30;
const OCTET_STRING: u8 = 0x04;
const BIT_STRING: u8 = 0x03;
const INTEGER: u8 = 0x02;
const ENUMERATED: u8 = 0x0a;
const OID: u8 = 0x06;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]` constructed (EXPLICIT tag, or IMPLICIT SEQUENCE).
const CTX0: u8 = 0xa0;
/// `[1]` constructed.
const CTX1: u8 = 0xa1;
/// `[2]` constructed.
const CTX2: u8 = 0xa2;
/// `[0]` primitive (certStatus good: IMPLICIT NULL).
const CTX0_PRIMITIVE: u8 = 0x80;
/// `[2]` primitive (certStatus unknown: IMPLICIT NULL).
const CTX2_PRIMITIVE: u8 = 0x82;

/// What the responder says about the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    Good,
    Revoked {
        at: OffsetDateTime,
        /// CRLReason code, when given.
        reason: Option<u8>,
    },
    Unknown,
}

impl CertStatus {
    /// Metric label and log word.
    pub fn label(&self) -> &'static str {
        match self {
            CertStatus::Good => "good",
            CertStatus::Revoked { .. } => "revoked",
            CertStatus::Unknown => "unknown",
        }
    }
}

/// A verified answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OcspAnswer {
    pub status: CertStatus,
    pub this_update: OffsetDateTime,
    /// Until when the answer is current: `nextUpdate`, or `thisUpdate + default_validity`.
    pub valid_until: OffsetDateTime,
    /// The responder asked.
    pub responder: String,
    /// Taken from the cache (no request was made).
    pub cached: bool,
}

/// Why no status could be established.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OcspError {
    #[error(
        "the signer certificate names no OCSP responder (authorityInfoAccess) and federation.ocsp.responder_url is not set"
    )]
    NoResponder,
    #[error("certificate unusable for OCSP: {0}")]
    Certificate(String),
    #[error("OCSP responder {url} unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("OCSP responder {url} answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("OCSP responder answered `{0}` instead of a status")]
    NotSuccessful(&'static str),
    #[error("OCSP answer rejected: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> OcspError {
    OcspError::Invalid(reason.into())
}

/// The certificate an OCSP request asks about (RFC 6960 §4.1.1, SHA-1 hashes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CertId {
    name_hash: Vec<u8>,
    key_hash: Vec<u8>,
    /// The serial's INTEGER content, without leading zero octets.
    serial: Vec<u8>,
}

impl CertId {
    /// `cert` as issued by `issuer`.
    pub fn new(cert: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> Self {
        Self {
            name_hash: sha1(issuer.subject().as_raw()),
            key_hash: key_hash(issuer),
            serial: trim_integer(cert.raw_serial()).to_vec(),
        }
    }

    /// `CertID` in DER.
    pub fn der(&self) -> Vec<u8> {
        let mut serial = self.serial.clone();
        if serial.first().is_none_or(|b| b & 0x80 != 0) {
            serial.insert(0, 0); // stays a positive INTEGER
        }
        let mut body = SHA1_ALGORITHM.to_vec();
        body.extend(tlv(OCTET_STRING, &self.name_hash));
        body.extend(tlv(OCTET_STRING, &self.key_hash));
        body.extend(tlv(INTEGER, &serial));
        tlv(SEQUENCE, &body)
    }

    /// A whole `OCSPRequest` for this certificate: one request, no extensions (no nonce).
    pub fn request_der(&self) -> Vec<u8> {
        let request = tlv(SEQUENCE, &self.der());
        let request_list = tlv(SEQUENCE, &request);
        let tbs_request = tlv(SEQUENCE, &request_list);
        tlv(SEQUENCE, &tbs_request)
    }
}

/// SHA-1 (the `CertID` hash every responder supports; RFC 5019 §2.1.1).
fn sha1(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data)
        .as_ref()
        .to_vec()
}

/// SHA-1 of the issuer's subjectPublicKey bits (`issuerKeyHash`, and a responder ID by key).
fn key_hash(cert: &X509Certificate<'_>) -> Vec<u8> {
    sha1(&cert.public_key().subject_public_key.data)
}

fn trim_integer(mut bytes: &[u8]) -> &[u8] {
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    bytes
}

/// The OCSP responder a certificate names (authorityInfoAccess, access method id-ad-ocsp).
pub fn responder_from_aia(cert: &X509Certificate<'_>) -> Option<Url> {
    cert.extensions().iter().find_map(|ext| {
        let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() else {
            return None;
        };
        aia.accessdescs.iter().find_map(|desc| {
            if desc.access_method.to_id_string() != OID_AD_OCSP {
                return None;
            }
            match &desc.access_location {
                GeneralName::URI(uri) => Url::parse(uri)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https")),
                _ => None,
            }
        })
    })
}

// ---------------------------------------------------------------------------------------------
// DER reading: definite lengths, single-octet tags (all OCSP needs), every length checked.

/// One DER element.
#[derive(Debug, Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    /// Tag, length and content: what a signature covers.
    whole: &'a [u8],
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The first element of `input` and what follows it.
fn read(input: &[u8]) -> Result<(Tlv<'_>, &[u8]), OcspError> {
    let (&tag, rest) = input
        .split_first()
        .ok_or_else(|| invalid("DER: element expected, input ended"))?;
    if tag & 0x1f == 0x1f {
        return Err(invalid("DER: multi-octet tags are not used by OCSP"));
    }
    let (&first, rest) = rest
        .split_first()
        .ok_or_else(|| invalid("DER: length missing"))?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return Err(invalid("DER: bad length"));
        }
        let (octets, rest) = rest.split_at(count);
        let len = octets
            .iter()
            .fold(0usize, |n, b| (n << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return Err(invalid("DER: element longer than its input"));
    }
    let header = input.len() - rest.len();
    let (content, after) = rest.split_at(len);
    Ok((
        Tlv {
            tag,
            content,
            whole: &input[..header + len],
        },
        after,
    ))
}

/// `input` must be exactly one element with tag `tag`.
fn expect_only<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Tlv<'a>, OcspError> {
    let (element, rest) = read(input)?;
    if element.tag != tag || !rest.is_empty() {
        return Err(invalid(format!("{what}: unexpected encoding")));
    }
    Ok(element)
}

/// Reads the elements of a constructed value one after the other.
struct Elements<'a> {
    rest: &'a [u8],
}

impl<'a> Elements<'a> {
    fn of(element: Tlv<'a>) -> Self {
        Self {
            rest: element.content,
        }
    }

    fn next(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, OcspError> {
        let (element, rest) = read(self.rest)?;
        if element.tag != tag {
            return Err(invalid(format!(
                "{what}: tag {:#04x} where {tag:#04x} belongs",
                element.tag
            )));
        }
        self.rest = rest;
        Ok(element)
    }

    fn next_any(&mut self, what: &str) -> Result<Tlv<'a>, OcspError> {
        let (element, rest) = read(self.rest).map_err(|e| invalid(format!("{what}: {e}")))?;
        self.rest = rest;
        Ok(element)
    }

    fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, OcspError> {
        match self.rest.first() {
            Some(t) if *t == tag => {
                let (element, rest) = read(self.rest)?;
                self.rest = rest;
                Ok(Some(element))
            }
            _ => Ok(None),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }
}

/// `YYYYMMDDHHMMSS[.f]Z` (DER GeneralizedTime is always UTC).
fn generalized_time(element: Tlv<'_>) -> Result<OffsetDateTime, OcspError> {
    let bad = || invalid("GeneralizedTime malformed");
    let text = std::str::from_utf8(element.content).map_err(|_| bad())?;
    let text = text.strip_suffix('Z').ok_or_else(bad)?;
    let main = text.split('.').next().ok_or_else(bad)?;
    if main.len() != 14 || !main.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| main[range].parse::<u32>().map_err(|_| bad());
    let year = i32::try_from(num(0..4)?).map_err(|_| bad())?;
    let month =
        time::Month::try_from(u8::try_from(num(4..6)?).map_err(|_| bad())?).map_err(|_| bad())?;
    let date =
        time::Date::from_calendar_date(year, month, u8::try_from(num(6..8)?).map_err(|_| bad())?)
            .map_err(|_| bad())?;
    let clock = time::Time::from_hms(
        u8::try_from(num(8..10)?).map_err(|_| bad())?,
        u8::try_from(num(10..12)?).map_err(|_| bad())?,
        u8::try_from(num(12..14)?).map_err(|_| bad())?,
    )
    .map_err(|_| bad())?;
    Ok(date.with_time(clock).assume_utc())
}

// ---------------------------------------------------------------------------------------------
// Verifying an answer.

/// How an answer is judged: the clock and its tolerances.
#[derive(Debug, Clone, Copy)]
pub struct Freshness {
    pub now: OffsetDateTime,
    pub default_validity: Duration,
    pub clock_skew: Duration,
}

/// The parts of a `SingleResponse` that matter.
struct Single {
    status: CertStatus,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
}

/// Verify a DER `OCSPResponse` about `id` (the certificate issued by `issuer`) and return its
/// status with the time it is current until.
pub fn verify_response(
    bytes: &[u8],
    id: &CertId,
    issuer: &X509Certificate<'_>,
    freshness: Freshness,
) -> Result<(CertStatus, OffsetDateTime, OffsetDateTime), OcspError> {
    // OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT … }
    let response = expect_only(bytes, SEQUENCE, "OCSPResponse")?;
    let mut fields = Elements::of(response);
    let status = fields.next(ENUMERATED, "responseStatus")?;
    match status.content {
        [0] => {}
        [1] => return Err(OcspError::NotSuccessful("malformedRequest")),
        [2] => return Err(OcspError::NotSuccessful("internalError")),
        [3] => return Err(OcspError::NotSuccessful("tryLater")),
        [5] => return Err(OcspError::NotSuccessful("sigRequired")),
        [6] => return Err(OcspError::NotSuccessful("unauthorized")),
        _ => return Err(invalid("responseStatus has an undefined value")),
    }
    let response_bytes = fields.next(CTX0, "responseBytes")?;
    let response_bytes = expect_only(response_bytes.content, SEQUENCE, "ResponseBytes")?;
    let mut rb = Elements::of(response_bytes);
    if rb.next(OID, "responseType")?.content != OID_OCSP_BASIC {
        return Err(invalid("responseType is not id-pkix-ocsp-basic"));
    }
    let basic = rb.next(OCTET_STRING, "response")?;

    // BasicOCSPResponse ::= SEQUENCE { tbsResponseData, signatureAlgorithm, signature, certs [0] }
    let basic = expect_only(basic.content, SEQUENCE, "BasicOCSPResponse")?;
    let mut b = Elements::of(basic);
    let tbs = b.next(SEQUENCE, "tbsResponseData")?;
    let algorithm = b.next(SEQUENCE, "signatureAlgorithm")?;
    if Elements::of(algorithm)
        .next(OID, "signatureAlgorithm")?
        .content
        != OID_ECDSA_SHA256
    {
        return Err(invalid(
            "signature algorithm is not ecdsa-with-SHA256 (the TI PKI's)",
        ));
    }
    let signature = b.next(BIT_STRING, "signature")?;
    let signature = match signature.content.split_first() {
        Some((0, bits)) => bits,
        _ => return Err(invalid("signature BIT STRING malformed")),
    };
    let mut certs: Vec<X509Certificate<'_>> = Vec::new();
    if let Some(wrapped) = b.optional(CTX0)? {
        let list = expect_only(wrapped.content, SEQUENCE, "certs")?;
        let mut items = Elements::of(list);
        while items.peek().is_some() {
            let der = items.next(SEQUENCE, "certs")?;
            let cert = jws::parse_cert(der.whole).map_err(invalid)?;
            certs.push(cert);
        }
    }

    // ResponseData ::= SEQUENCE { version [0] OPTIONAL, responderID, producedAt, responses, … }
    let mut data = Elements::of(tbs);
    if let Some(version) = data.optional(CTX0)?
        && version.content != [0x02, 0x01, 0x00]
    {
        return Err(invalid("ResponseData version is not v1"));
    }
    let responder_id = data.next_any("responderID")?;
    data.next(GENERALIZED_TIME, "producedAt")?;
    let responses = data.next(SEQUENCE, "responses")?;

    // Who signed: the issuer itself or a delegate it issued for OCSP signing.
    let signer = responder(responder_id, issuer, &certs, freshness.now)?;
    let (curve, point) = jws::ec_key(signer).map_err(invalid)?;
    jws::verify_ecdsa(curve, point, tbs.whole, SigEncoding::Der(signature))
        .map_err(|e| invalid(format!("signature does not verify: {e}")))?;

    // Our single response.
    let mut items = Elements::of(responses);
    let mut ours = None;
    while items.peek().is_some() {
        let single = items.next(SEQUENCE, "SingleResponse")?;
        if let Some(found) = single_response(single, id)? {
            ours = Some(found);
            break;
        }
    }
    let single = ours.ok_or_else(|| invalid("no response about the signer certificate"))?;

    let skew = freshness.clock_skew;
    if single.this_update > freshness.now + skew {
        return Err(invalid(format!(
            "thisUpdate {} lies in the future",
            single.this_update
        )));
    }
    let valid_until = single
        .next_update
        .unwrap_or(single.this_update + freshness.default_validity);
    if valid_until + skew < freshness.now {
        return Err(invalid(format!(
            "stale: current only until {valid_until} (nextUpdate, or thisUpdate + federation.ocsp.default_validity)"
        )));
    }
    Ok((single.status, single.this_update, valid_until))
}

/// The certificate whose key must have signed the answer.
fn responder<'c>(
    id: Tlv<'_>,
    issuer: &'c X509Certificate<'c>,
    certs: &'c [X509Certificate<'c>],
    now: OffsetDateTime,
) -> Result<&'c X509Certificate<'c>, OcspError> {
    // ResponderID ::= CHOICE { byName [1] Name, byKey [2] KeyHash }
    let names = |cert: &X509Certificate<'_>| -> Result<bool, OcspError> {
        match id.tag {
            CTX1 => Ok(id.content == cert.subject().as_raw()),
            CTX2 => {
                let hash = expect_only(id.content, OCTET_STRING, "responderID byKey")?;
                Ok(hash.content == key_hash(cert).as_slice())
            }
            _ => Err(invalid("responderID is neither byName nor byKey")),
        }
    };
    if names(issuer)? {
        return Ok(issuer);
    }
    for cert in certs {
        if !names(cert)? {
            continue;
        }
        // A delegate: issued directly by the signer's issuer, for OCSP signing, valid now.
        jws::check_issued_by(cert, issuer, 0, now)
            .map_err(|e| invalid(format!("responder certificate: {e}")))?;
        let ocsp_signing =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.ocsp_signing);
        if !ocsp_signing {
            return Err(invalid(format!(
                "responder certificate `{}` lacks extendedKeyUsage id-kp-OCSPSigning",
                cert.subject()
            )));
        }
        return Ok(cert);
    }
    Err(invalid(
        "the responder is neither the issuer nor a certificate sent with the answer",
    ))
}

/// The `SingleResponse`, if it is about `id`.
fn single_response(single: Tlv<'_>, id: &CertId) -> Result<Option<Single>, OcspError> {
    let mut fields = Elements::of(single);
    let cert_id = fields.next(SEQUENCE, "certID")?;
    let mut c = Elements::of(cert_id);
    let algorithm = c.next(SEQUENCE, "hashAlgorithm")?;
    let hash_oid = Elements::of(algorithm).next(OID, "hashAlgorithm")?;
    let name_hash = c.next(OCTET_STRING, "issuerNameHash")?;
    let key = c.next(OCTET_STRING, "issuerKeyHash")?;
    let serial = c.next(INTEGER, "serialNumber")?;
    if hash_oid.content != OID_SHA1
        || name_hash.content != id.name_hash.as_slice()
        || key.content != id.key_hash.as_slice()
        || trim_integer(serial.content) != id.serial.as_slice()
    {
        return Ok(None);
    }
    let status = fields.next_any("certStatus")?;
    let status = match status.tag {
        CTX0_PRIMITIVE => CertStatus::Good,
        CTX2_PRIMITIVE => CertStatus::Unknown,
        CTX1 => {
            // RevokedInfo ::= SEQUENCE { revocationTime, revocationReason [0] EXPLICIT OPTIONAL }
            let mut info = Elements::of(status);
            let at = generalized_time(info.next(GENERALIZED_TIME, "revocationTime")?)?;
            let reason = match info.optional(CTX0)? {
                Some(wrapped) => {
                    let code = expect_only(wrapped.content, ENUMERATED, "revocationReason")?;
                    code.content.first().copied()
                }
                None => None,
            };
            CertStatus::Revoked { at, reason }
        }
        _ => return Err(invalid("certStatus is not good, revoked or unknown")),
    };
    let this_update = generalized_time(fields.next(GENERALIZED_TIME, "thisUpdate")?)?;
    let next_update = match fields.optional(CTX0)? {
        Some(wrapped) => Some(generalized_time(expect_only(
            wrapped.content,
            GENERALIZED_TIME,
            "nextUpdate",
        )?)?),
        None => None,
    };
    Ok(Some(Single {
        status,
        this_update,
        next_update,
    }))
}

// ---------------------------------------------------------------------------------------------
// Asking.

/// Asks responders and remembers current answers.
#[derive(Debug)]
pub struct OcspChecker {
    http: reqwest::Client,
    responder: Option<Url>,
    default_validity: Duration,
    clock_skew: Duration,
    cache: Mutex<HashMap<CertId, OcspAnswer>>,
}

impl OcspChecker {
    pub fn new(config: &OcspConfig) -> Result<Self, OcspError> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("timproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| OcspError::Unreachable {
                url: String::new(),
                reason: format!("HTTP client: {e}"),
            })?;
        Ok(Self {
            http,
            responder: config.responder_url.clone(),
            default_validity: config.default_validity,
            clock_skew: config.clock_skew,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The status of `signer_der` (issued by `issuer_der`) as of `now`: a current cached
    /// answer, else a fresh one from the responder.
    pub async fn status(
        &self,
        signer_der: &[u8],
        issuer_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<OcspAnswer, OcspError> {
        let signer = jws::parse_cert(signer_der).map_err(OcspError::Certificate)?;
        let issuer = jws::parse_cert(issuer_der).map_err(OcspError::Certificate)?;
        let id = CertId::new(&signer, &issuer);
        if let Some(cached) = self.cached(&id, now) {
            return Ok(cached);
        }
        let url = self
            .responder
            .clone()
            .or_else(|| responder_from_aia(&signer))
            .ok_or(OcspError::NoResponder)?;
        let body = self.ask(&url, id.request_der()).await?;
        let freshness = Freshness {
            now,
            default_validity: self.default_validity,
            clock_skew: self.clock_skew,
        };
        let (status, this_update, valid_until) = verify_response(&body, &id, &issuer, freshness)?;
        let answer = OcspAnswer {
            status,
            this_update,
            valid_until,
            responder: url.to_string(),
            cached: false,
        };
        if status != CertStatus::Unknown
            && let Ok(mut cache) = self.cache.lock()
        {
            cache.insert(id, answer.clone());
        }
        Ok(answer)
    }

    fn cached(&self, id: &CertId, now: OffsetDateTime) -> Option<OcspAnswer> {
        let mut cache = self.cache.lock().ok()?;
        match cache.get(id) {
            Some(answer) if answer.valid_until > now => Some(OcspAnswer {
                cached: true,
                ..answer.clone()
            }),
            Some(_) => {
                cache.remove(id);
                None
            }
            None => None,
        }
    }

    /// POST the request (RFC 6960 appendix A.1).
    async fn ask(&self, url: &Url, request: Vec<u8>) -> Result<Vec<u8>, OcspError> {
        let unreachable = |reason: String| OcspError::Unreachable {
            url: url.to_string(),
            reason,
        };
        let response = self
            .http
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/ocsp-request")
            .header(reqwest::header::ACCEPT, "application/ocsp-response")
            .body(request)
            .send()
            .await
            .map_err(|e| unreachable(crate::admin::error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(OcspError::HttpStatus {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_RESPONSE_BYTES as u64)
        {
            return Err(invalid("answer larger than 256 KiB"));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| unreachable(crate::admin::error_chain(&e)))?;
        if body.len() > MAX_RESPONSE_BYTES {
            return Err(invalid("answer larger than 256 KiB"));
        }
        Ok(body.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_round_trip_and_truncation_is_refused() {
        for len in [0usize, 1, 127, 128, 255, 256, 70_000] {
            let content = vec![7u8; len];
            let encoded = tlv(OCTET_STRING, &content);
            let (element, rest) = read(&encoded).unwrap();
            assert_eq!(
                (element.tag, element.content.len(), rest.len()),
                (OCTET_STRING, len, 0)
            );
            assert_eq!(element.whole, encoded.as_slice());
            assert!(read(&encoded[..encoded.len() - 1]).is_err() || len == 0);
        }
        assert!(read(&[]).is_err());
        assert!(read(&[0x30]).is_err());
        assert!(
            read(&[0x30, 0x80, 0x00, 0x00]).is_err(),
            "indefinite length"
        );
        assert!(
            read(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err(),
            "length over 4 octets"
        );
        assert!(read(&[0x1f, 0x01, 0x00]).is_err(), "multi-octet tag");
    }

    #[test]
    fn generalized_time_parses_utc_only() {
        let t = |s: &str| {
            let bytes = tlv(GENERALIZED_TIME, s.as_bytes());
            generalized_time(read(&bytes).unwrap().0)
        };
        assert_eq!(
            t("20261206031638Z").unwrap(),
            time::macros::datetime!(2026-12-06 03:16:38 UTC)
        );
        assert_eq!(
            t("20261206031638.5Z").unwrap(),
            time::macros::datetime!(2026-12-06 03:16:38 UTC)
        );
        for bad in [
            "20261206031638",
            "2026120603163Z",
            "20261306031638Z",
            "2026120603163xZ",
            "",
        ] {
            assert!(t(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_request_is_one_sha1_cert_id_without_extensions() {
        let id = CertId {
            name_hash: vec![1; 20],
            key_hash: vec![2; 20],
            serial: vec![0x90, 0x01],
        };
        let der = id.request_der();
        // OCSPRequest → TBSRequest → requestList → Request → CertID
        let (request, rest) = read(&der).unwrap();
        assert!(rest.is_empty());
        let tbs = expect_only(request.content, SEQUENCE, "tbs").unwrap();
        let list = expect_only(tbs.content, SEQUENCE, "list").unwrap();
        let req = expect_only(list.content, SEQUENCE, "req").unwrap();
        let cert_id = expect_only(req.content, SEQUENCE, "certid").unwrap();
        let mut fields = Elements::of(cert_id);
        let alg = fields.next(SEQUENCE, "alg").unwrap();
        assert_eq!(alg.whole, SHA1_ALGORITHM);
        assert_eq!(fields.next(OCTET_STRING, "n").unwrap().content, &[1; 20]);
        assert_eq!(fields.next(OCTET_STRING, "k").unwrap().content, &[2; 20]);
        // A serial with the high bit set gets a leading zero: it stays positive.
        assert_eq!(fields.next(INTEGER, "s").unwrap().content, &[0, 0x90, 0x01]);
        assert!(fields.peek().is_none());
    }

    #[test]
    fn unsuccessful_answers_say_what_the_responder_said() {
        let id = CertId {
            name_hash: vec![1; 20],
            key_hash: vec![2; 20],
            serial: vec![1],
        };
        let anchor = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/federation-list/signer-ca.pem"
        ))
        .unwrap();
        let pem = x509_parser::pem::parse_x509_pem(&anchor).unwrap().1;
        let issuer = pem.parse_x509().unwrap();
        let freshness = Freshness {
            now: OffsetDateTime::now_utc(),
            default_validity: Duration::from_secs(3600),
            clock_skew: Duration::from_secs(300),
        };
        let answer = |status: u8| tlv(SEQUENCE, &tlv(ENUMERATED, &[status]));
        assert_eq!(
            verify_response(&answer(3), &id, &issuer, freshness),
            Err(OcspError::NotSuccessful("tryLater"))
        );
        assert_eq!(
            verify_response(&answer(6), &id, &issuer, freshness),
            Err(OcspError::NotSuccessful("unauthorized"))
        );
        assert!(matches!(
            verify_response(b"<html>", &id, &issuer, freshness),
            Err(OcspError::Invalid(_))
        ));
        assert!(matches!(
            verify_response(&answer(0), &id, &issuer, freshness),
            Err(OcspError::Invalid(_))
        ));
    }
}
