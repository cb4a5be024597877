//! Where federation lists come from and how their bytes become a [`ParsedList`].
//!
//! Three sources (`federation.source`):
//! - the registration service, `GET {registration_service.url}{federation_list_path}?version=N`
//!   → `200` JSON list or `304 Not Modified` (unsigned; trusted like the reference does);
//! - the VZD, `GET {federation.vzd_url}?version=N` with a bearer token → `200` compact JWS or
//!   `204 No Content` (no newer version); the JWS must verify (see [`super::jws`]);
//! - a file, JSON or JWS told apart by content.
//!
//! Fetching and decoding are separate steps so `fetch-federation` can report download and
//! verification separately and the refresher can persist the exact bytes it accepted.
//!
//! Production note: the TI spec additionally requires an OCSP check of every `x5c`
//! certificate; timproxy does not perform OCSP yet, so configure the narrowest trust anchor
//! (the VZD signer's issuing CA).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use url::Url;

use super::FederationError;
use super::jws::{JwsVerifier, VerifiedJws};
use super::list::{DomainEntry, ListSource};
use crate::config::{Config, FederationSource};

/// Largest list body accepted (the real list is well below 1 MiB); protects memory.
pub const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;

/// A decoded list, entries in source order (the order `--out` writes them back).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedList {
    pub version: i64,
    pub entries: Vec<DomainEntry>,
}

impl ParsedList {
    pub fn insurance_count(&self) -> usize {
        self.entries.iter().filter(|e| e.is_insurance).count()
    }

    /// The list in the registration service's JSON shape (`ik` only where known), so a file
    /// written by `fetch-federation --out` is itself a valid `file` source.
    pub fn to_registration_json(&self) -> Vec<u8> {
        let wire = WireListOut {
            version: self.version,
            domain_list: self
                .entries
                .iter()
                .map(|e| WireDomainOut {
                    domain: &e.domain,
                    is_insurance: e.is_insurance,
                    telematik_id: e.telematik_id.as_deref(),
                    ik: (!e.ik.is_empty()).then_some(&e.ik),
                })
                .collect(),
        };
        serde_json::to_vec(&wire).unwrap_or_default()
    }
}

#[derive(Serialize)]
struct WireListOut<'a> {
    version: i64,
    #[serde(rename = "domainList")]
    domain_list: Vec<WireDomainOut<'a>>,
}

#[derive(Serialize)]
struct WireDomainOut<'a> {
    domain: &'a str,
    #[serde(rename = "isInsurance")]
    is_insurance: bool,
    #[serde(rename = "telematikID", skip_serializing_if = "Option::is_none")]
    telematik_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ik: Option<&'a Vec<String>>,
}

/// Both wire formats, parsed leniently: unknown fields are ignored and optional fields may
/// be `null` (the VZD sample response has `"timAnbieter": null` and `iks` instead of `ik`).
/// `version`, `domainList[].domain` and `domainList[].isInsurance` are essential.
#[derive(Deserialize)]
struct WireList {
    version: i64,
    #[serde(rename = "domainList")]
    domain_list: Vec<WireDomain>,
}

#[derive(Deserialize)]
struct WireDomain {
    domain: String,
    #[serde(rename = "isInsurance")]
    is_insurance: bool,
    #[serde(rename = "telematikID", default)]
    telematik_id: Option<String>,
    #[serde(default)]
    ik: Option<Vec<String>>,
    #[serde(default)]
    iks: Option<Vec<String>>,
}

/// Parse a list body (registration-service JSON or a verified JWS payload).
pub fn parse_list_json(bytes: &[u8]) -> Result<ParsedList, FederationError> {
    let wire: WireList =
        serde_json::from_slice(bytes).map_err(|e| FederationError::Parse(e.to_string()))?;
    let mut entries = Vec::with_capacity(wire.domain_list.len());
    for (i, d) in wire.domain_list.into_iter().enumerate() {
        let domain = d.domain.trim().to_ascii_lowercase();
        if domain.is_empty() {
            return Err(FederationError::Parse(format!(
                "domainList[{i}].domain is empty"
            )));
        }
        let mut ik = d.ik.unwrap_or_default();
        ik.extend(d.iks.unwrap_or_default());
        ik.dedup();
        entries.push(DomainEntry {
            domain,
            is_insurance: d.is_insurance,
            telematik_id: d.telematik_id,
            ik,
        });
    }
    Ok(ParsedList {
        version: wire.version,
        entries,
    })
}

/// How a payload is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// Registration-service JSON (unsigned).
    Json,
    /// Compact JWS (VZD).
    Jws,
}

impl PayloadFormat {
    /// A JSON document starts with `{`; a compact JWS with base64url.
    pub fn detect(bytes: &[u8]) -> Self {
        match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => PayloadFormat::Json,
            _ => PayloadFormat::Jws,
        }
    }
}

/// The result of a verified decode.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub list: ParsedList,
    /// Present when the payload was a JWS whose signature and chain verified.
    pub signature: Option<VerifiedJws>,
}

/// Decode `raw`: JSON is parsed as is (unless `require_signature`), a JWS is verified first.
pub fn decode(
    raw: &[u8],
    verifier: &JwsVerifier,
    require_signature: bool,
    now: OffsetDateTime,
) -> Result<Decoded, FederationError> {
    match PayloadFormat::detect(raw) {
        PayloadFormat::Json if require_signature => Err(FederationError::Unsigned),
        PayloadFormat::Json => Ok(Decoded {
            list: parse_list_json(raw)?,
            signature: None,
        }),
        PayloadFormat::Jws => {
            let verified = verifier.verify(raw, now)?;
            let list = parse_list_json(&verified.payload)?;
            Ok(Decoded {
                list,
                signature: Some(verified),
            })
        }
    }
}

/// Where one fetcher reads from. Tokens are kept out of `Debug`/`describe`.
#[derive(Clone)]
pub enum SourceSpec {
    /// Registration service list URL (version query added per fetch).
    RegistrationService(Url),
    /// VZD `federationList.jws` URL and its bearer token.
    Vzd { url: Url, token: Option<String> },
    /// Any URL, fetched once without a version (CLI `--source URL`).
    Url(Url),
    /// A local file.
    File(PathBuf),
}

impl std::fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl SourceSpec {
    /// The spec `federation.source` selects.
    pub fn from_config(config: &Config) -> Result<Self, FederationError> {
        match config.federation.source {
            FederationSource::RegistrationService => {
                let base = config
                    .registration_service
                    .url
                    .as_str()
                    .trim_end_matches('/');
                let path = &config.registration_service.federation_list_path;
                let sep = if path.starts_with('/') { "" } else { "/" };
                let url = Url::parse(&format!("{base}{sep}{path}")).map_err(|e| {
                    FederationError::Config(format!(
                        "registration_service.federation_list_path: {e}"
                    ))
                })?;
                Ok(SourceSpec::RegistrationService(url))
            }
            FederationSource::VzdJws => {
                let url = config.federation.vzd_url.clone().ok_or_else(|| {
                    FederationError::Config(
                        "federation.vzd_url is required for source vzd_jws".to_owned(),
                    )
                })?;
                Ok(SourceSpec::Vzd {
                    url,
                    token: config.federation.vzd_token.clone(),
                })
            }
            FederationSource::File => {
                let path = config.federation.list_file.clone().ok_or_else(|| {
                    FederationError::Config(
                        "federation.list_file is required for source file".to_owned(),
                    )
                })?;
                Ok(SourceSpec::File(path))
            }
        }
    }

    /// A CLI `--source` value: `http(s)://…` is a URL, anything else a file path.
    pub fn from_arg(arg: &str) -> Result<Self, FederationError> {
        if arg.starts_with("http://") || arg.starts_with("https://") {
            Url::parse(arg)
                .map(SourceSpec::Url)
                .map_err(|e| FederationError::Config(format!("--source {arg}: {e}")))
        } else {
            Ok(SourceSpec::File(PathBuf::from(arg)))
        }
    }

    /// For logs and summaries: never includes the token.
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::RegistrationService(url) => format!("registration service {url}"),
            SourceSpec::Vzd { url, .. } => format!("VZD {url}"),
            SourceSpec::Url(url) => url.to_string(),
            SourceSpec::File(path) => format!("file {}", path.display()),
        }
    }

    /// Lists from the VZD must be signed; an unsigned answer there is an attack or a misconfig.
    pub fn requires_signature(&self) -> bool {
        matches!(self, SourceSpec::Vzd { .. })
    }

    /// Short name stored with persisted snapshots.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::RegistrationService(_) => "registration_service",
            SourceSpec::Vzd { .. } => "vzd_jws",
            SourceSpec::Url(_) => "url",
            SourceSpec::File(_) => "file",
        }
    }
}

/// The list source a snapshot is attributed to, from where and how it was fetched.
pub fn list_source(kind: &str, format: PayloadFormat) -> ListSource {
    match (kind, format) {
        ("registration_service", _) => ListSource::RegistrationService,
        ("vzd_jws", _) => ListSource::VzdJws,
        ("file", _) => ListSource::File,
        (_, PayloadFormat::Jws) => ListSource::VzdJws,
        (_, PayloadFormat::Json) => ListSource::RegistrationService,
    }
}

/// Bytes fetched from a source.
#[derive(Debug, Clone)]
pub struct Download {
    pub raw: Vec<u8>,
    pub format: PayloadFormat,
    /// Modification time of a file source (HTTP sources: `None`).
    pub modified: Option<OffsetDateTime>,
}

/// Outcome of one fetch.
#[derive(Debug, Clone)]
pub enum FetchResult {
    /// The source has nothing newer than the version we sent (304 / 204).
    NotModified,
    Fetched(Download),
}

/// Fetches lists from one [`SourceSpec`].
#[derive(Debug, Clone)]
pub struct ListFetcher {
    spec: SourceSpec,
    http: reqwest::Client,
}

impl ListFetcher {
    /// `timeout` bounds each HTTP request (connect + response).
    pub fn new(spec: SourceSpec, timeout: Duration) -> Result<Self, FederationError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("timproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FederationError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { spec, http })
    }

    pub fn spec(&self) -> &SourceSpec {
        &self.spec
    }

    /// Fetch the list; `have` is the version already held (sent as `?version=N`).
    pub async fn fetch(&self, have: Option<i64>) -> Result<FetchResult, FederationError> {
        match &self.spec {
            SourceSpec::File(path) => {
                let raw = tokio::fs::read(path)
                    .await
                    .map_err(|e| FederationError::Source {
                        source_name: self.spec.describe(),
                        message: e.to_string(),
                    })?;
                let modified = tokio::fs::metadata(path)
                    .await
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .map(OffsetDateTime::from);
                Ok(FetchResult::Fetched(Download {
                    format: PayloadFormat::detect(&raw),
                    raw,
                    modified,
                }))
            }
            SourceSpec::RegistrationService(url) => {
                self.get(url.clone(), have, None, reqwest::StatusCode::NOT_MODIFIED)
                    .await
            }
            SourceSpec::Vzd { url, token } => {
                self.get(
                    url.clone(),
                    have,
                    token.as_deref(),
                    reqwest::StatusCode::NO_CONTENT,
                )
                .await
            }
            SourceSpec::Url(url) => {
                self.get(url.clone(), None, None, reqwest::StatusCode::NOT_MODIFIED)
                    .await
            }
        }
    }

    async fn get(
        &self,
        mut url: Url,
        have: Option<i64>,
        token: Option<&str>,
        not_modified: reqwest::StatusCode,
    ) -> Result<FetchResult, FederationError> {
        if let Some(version) = have {
            url.query_pairs_mut()
                .append_pair("version", &version.to_string());
        }
        let source_err = |message: String| FederationError::Source {
            source_name: self.spec.describe(),
            message,
        };
        let mut request = self.http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| source_err(error_chain(&e)))?;
        let status = response.status();
        if status == not_modified {
            return Ok(FetchResult::NotModified);
        }
        if status != reqwest::StatusCode::OK {
            return Err(source_err(format!("unexpected HTTP status {status}")));
        }
        let mut raw = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| source_err(error_chain(&e)))?
        {
            if raw.len() + chunk.len() > MAX_LIST_BYTES {
                return Err(source_err(format!(
                    "body larger than {MAX_LIST_BYTES} bytes"
                )));
            }
            raw.extend_from_slice(&chunk);
        }
        Ok(FetchResult::Fetched(Download {
            format: PayloadFormat::detect(&raw),
            raw,
            modified: None,
        }))
    }
}

/// reqwest's top-level message hides the cause ("error sending request"); include it.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> Vec<u8> {
        std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/federation-list")
                .join(name),
        )
        .unwrap()
    }

    #[derive(Deserialize)]
    struct Expected {
        registration_service: Vec<ExpectedRs>,
    }

    #[derive(Deserialize)]
    struct ExpectedRs {
        file: String,
        version: i64,
        domain_count: usize,
    }

    #[test]
    fn registration_service_samples_parse_as_expected() {
        let expected: Expected = serde_json::from_slice(&data("expected.json")).unwrap();
        for case in expected.registration_service {
            let list = parse_list_json(&data(&case.file)).unwrap();
            assert_eq!(list.version, case.version, "{}", case.file);
            assert_eq!(list.entries.len(), case.domain_count, "{}", case.file);
            assert_eq!(list.insurance_count(), 3);
        }
    }

    #[test]
    fn parsing_ignores_unknown_fields_and_accepts_nulls_and_iks() {
        let body = br#"{"version":3,"extra":1,"domainList":[
            {"domain":"A.example","isInsurance":true,"telematikID":null,"timAnbieter":null,
             "iks":["123456789"],"redirectDomains":["x"]},
            {"domain":"b.example","isInsurance":false,"ik":null}]}"#;
        let list = parse_list_json(body).unwrap();
        assert_eq!(list.entries[0].domain, "a.example");
        assert_eq!(list.entries[0].ik, vec!["123456789"]);
        assert_eq!(list.entries[0].telematik_id, None);
        assert!(list.entries[1].ik.is_empty());
    }

    #[test]
    fn essential_fields_are_required() {
        for body in [
            &br#"{"domainList":[]}"#[..],
            br#"{"version":1}"#,
            br#"{"version":1,"domainList":[{"isInsurance":false}]}"#,
            br#"{"version":1,"domainList":[{"domain":"a","isInsurance":null}]}"#,
            br#"{"version":1,"domainList":[{"domain":" ","isInsurance":false}]}"#,
            b"not json",
        ] {
            assert!(
                parse_list_json(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn out_json_round_trips() {
        let list = parse_list_json(&data("registration-service-v2.json")).unwrap();
        let again = parse_list_json(&list.to_registration_json()).unwrap();
        assert_eq!(list, again);
    }

    #[test]
    fn format_is_detected_by_content() {
        assert_eq!(PayloadFormat::detect(b"  {\"a\":1}"), PayloadFormat::Json);
        assert_eq!(
            PayloadFormat::detect(&data("vzd-list.jws")),
            PayloadFormat::Jws
        );
    }

    #[test]
    fn vzd_source_refuses_unsigned_json() {
        let verifier = JwsVerifier::new(Default::default(), false);
        let err = decode(
            &data("registration-service-v1.json"),
            &verifier,
            true,
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(matches!(err, FederationError::Unsigned));
    }

    #[test]
    fn describe_never_contains_the_token() {
        let spec = SourceSpec::Vzd {
            url: Url::parse("https://vzd.example/federationList.jws").unwrap(),
            token: Some("s3cret".to_owned()),
        };
        assert!(!format!("{spec:?} {}", spec.describe()).contains("s3cret"));
    }
}
