//! OCSP for the federation-list signer against a real responder: openssl's (`openssl ocsp
//! -index … -reqin … -respout …`, one process per request, so a changed index takes effect at
//! once) behind an HTTP endpoint on 127.0.0.1, over a test PKI made for each test by
//! `tests/data/federation-list/make-ocsp-pki.sh` with that endpoint in the signers'
//! authorityInfoAccess. Lists come from a file source as signed JWS (BP256R1, x5c = signer + CA).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use timproxy::config::{Config, FederationSource};
use timproxy::federation::ocsp::{CertId, CertStatus, Freshness, OcspError, verify_response};
use timproxy::federation::{FederationError, FederationHandle, FetchOutcome, Refresher};
use timproxy::metrics::Metrics;
use url::Url;

struct ResponderState {
    dir: PathBuf,
    /// Which certificate signs the answers (`responder`, `ca`, `rogue-responder`, …).
    signer: Mutex<&'static str>,
    /// `-nmin`: minutes to nextUpdate; `None` = answers without nextUpdate.
    next_update_minutes: Mutex<Option<u32>>,
    requests: AtomicUsize,
}

/// An OCSP responder on 127.0.0.1 and the PKI whose AIA names it.
struct Responder {
    state: Arc<ResponderState>,
    url: Url,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn answer(State(state): State<Arc<ResponderState>>, body: Bytes) -> Response {
    let n = state.requests.fetch_add(1, Ordering::SeqCst);
    let request = state.dir.join(format!("req-{n}.der"));
    let response = state.dir.join(format!("resp-{n}.der"));
    if std::fs::write(&request, &body).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let signer = *state.signer.lock().unwrap();
    let mut cmd = std::process::Command::new("openssl");
    cmd.current_dir(&state.dir)
        .args(["ocsp", "-index", "index.txt", "-CA", "ca.pem", "-rsigner"]);
    cmd.arg(format!("{signer}.pem"))
        .arg("-rkey")
        .arg(format!("{signer}.key"))
        .arg("-reqin")
        .arg(&request)
        .arg("-respout")
        .arg(&response);
    if let Some(minutes) = *state.next_update_minutes.lock().unwrap() {
        cmd.arg("-nmin").arg(minutes.to_string());
    }
    // std's process API on a blocking thread: the proxy's build leaves out tokio's process
    // driver, which would run on every park of the runtime.
    match tokio::task::spawn_blocking(move || cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => match std::fs::read(&response) {
            Ok(der) => ([("content-type", "application/ocsp-response")], der).into_response(),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        _ => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

impl Responder {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/federation-list/make-ocsp-pki.sh");
        let made = Command::new("bash")
            .arg(script)
            .arg(dir.path())
            .arg(url.as_str())
            .output()
            .expect("run make-ocsp-pki.sh (needs bash and openssl)");
        assert!(
            made.status.success(),
            "make-ocsp-pki.sh: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let state = Arc::new(ResponderState {
            dir: dir.path().to_owned(),
            signer: Mutex::new("responder"),
            next_update_minutes: Mutex::new(Some(10)),
            requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/", post(answer))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            state,
            url,
            task,
            _dir: dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.state.dir.join(name)
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn sign_with(&self, cert: &'static str) {
        *self.state.signer.lock().unwrap() = cert;
    }

    fn without_next_update(&self) {
        *self.state.next_update_minutes.lock().unwrap() = None;
    }

    /// Mark `serial` (hex) revoked in the responder's index from now on.
    fn revoke(&self, serial: &str) {
        let index = std::fs::read_to_string(self.path("index.txt")).unwrap();
        let revoked: String = index
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                if fields[3] == serial {
                    format!(
                        "R\t{}\t260101000000Z,keyCompromise\t{}\n",
                        fields[1],
                        fields[3..].join("\t")
                    )
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        std::fs::write(self.path("index.txt"), revoked).unwrap();
    }

    fn der(&self, name: &str) -> Vec<u8> {
        let pem = std::fs::read(self.path(&format!("{name}.pem"))).unwrap();
        x509_parser::pem::parse_x509_pem(&pem).unwrap().1.contents
    }

    /// A federation list of `version` signed by `signer`, as the VZD publishes it; written
    /// to `list.jws`, the file source of [`Responder::config`].
    fn publish(&self, signer: &str, version: i64) {
        let header = serde_json::json!({
            "alg": "BP256R1",
            "x5c": [STANDARD.encode(self.der(signer)), STANDARD.encode(self.der("ca"))],
        });
        let payload = serde_json::json!({
            "version": version,
            "domainList": [{"domain": "tim.example.org", "isInsurance": false}],
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let input_file = self.path("signing-input");
        std::fs::write(&input_file, &input).unwrap();
        let signed = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(self.path(&format!("{signer}.key")))
            .arg(&input_file)
            .output()
            .unwrap();
        assert!(signed.status.success());
        let signature = bp256::r1::ecdsa::Signature::from_der(&signed.stdout).unwrap();
        let jws = format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes().as_slice())
        );
        std::fs::write(self.path("list.jws"), jws).unwrap();
    }

    /// timproxy reading `list.jws` as a file source, trusting the test root, OCSP on.
    fn config(&self) -> Config {
        let mut config = Config::default();
        config.federation.source = FederationSource::File;
        config.federation.list_file = Some(self.path("list.jws"));
        config.federation.trust_anchors = vec![self.path("root.pem")];
        config.federation.ocsp.timeout = Duration::from_secs(5);
        config
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle() -> FederationHandle {
    FederationHandle::new(Duration::from_secs(72 * 3600))
}

fn ocsp_metric(metrics: &Metrics, outcome: &str) -> u64 {
    let text = metrics.encode();
    let prefix = format!("timproxy_federation_ocsp_checks_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_good_signer_lets_the_list_in_and_the_answer_is_reused_while_current() {
    let responder = Responder::start().await;
    responder.publish("signer-good", 1);
    let metrics = Metrics::new();
    let h = handle();
    let r = Refresher::new(&responder.config(), h.clone(), None, metrics.clone()).unwrap();
    let outcome = r.fetch_once().await.unwrap();
    assert_eq!(
        outcome,
        FetchOutcome::Updated {
            version: 1,
            domains: 1
        }
    );
    assert_eq!(
        responder.requests(),
        1,
        "the signer named in the AIA was asked"
    );
    assert_eq!(ocsp_metric(&metrics, "good"), 1);

    // A newer list from the same signer within nextUpdate: the answer is reused.
    responder.publish("signer-good", 2);
    assert!(matches!(
        r.fetch_once().await.unwrap(),
        FetchOutcome::Updated { version: 2, .. }
    ));
    assert_eq!(
        responder.requests(),
        1,
        "no second request while the answer is current"
    );
    assert_eq!(ocsp_metric(&metrics, "cached"), 1);
}

#[tokio::test]
async fn a_revoked_signer_is_refused_and_a_held_list_it_signed_is_withdrawn() {
    let responder = Responder::start().await;
    responder.publish("signer-revoked", 1);
    let h = handle();
    let r = Refresher::new(&responder.config(), h.clone(), None, Metrics::new()).unwrap();
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(err, FederationError::SignerRevoked { .. }),
        "{err}"
    );
    assert!(err.is_rejection());
    assert!(h.snapshot().is_none(), "no list from a revoked signer");

    // A signer revoked while its list is held: the list goes at once (fail closed), even
    // though the file did not change. Answers without nextUpdate and default_validity 0 make
    // every check ask the responder.
    responder.without_next_update();
    responder.publish("signer-good", 5);
    let mut config = responder.config();
    config.federation.ocsp.default_validity = Duration::ZERO;
    let h = handle();
    let r = Refresher::new(&config, h.clone(), None, Metrics::new()).unwrap();
    r.fetch_once().await.unwrap();
    assert_eq!(h.snapshot().unwrap().version, 5);
    responder.revoke("1001");
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(err, FederationError::SignerRevoked { .. }),
        "{err}"
    );
    assert!(h.snapshot().is_none(), "the held list is withdrawn");
    let state = h.state();
    assert!(!state.ready);
    assert!(
        state
            .reason
            .starts_with("federation list withdrawn: the list signer"),
        "{}",
        state.reason
    );
}

#[tokio::test]
async fn an_unknown_signer_is_refused_and_the_last_good_list_keeps_serving() {
    let responder = Responder::start().await;
    responder.publish("signer-good", 1);
    let h = handle();
    let r = Refresher::new(&responder.config(), h.clone(), None, Metrics::new()).unwrap();
    r.fetch_once().await.unwrap();
    responder.publish("signer-unknown", 2);
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(err, FederationError::SignerUnknown { .. }),
        "{err}"
    );
    assert_eq!(h.snapshot().unwrap().version, 1);
    assert!(h.state().ready);
}

#[tokio::test]
async fn an_unreachable_responder_refuses_new_lists_and_keeps_the_last_good_one() {
    let responder = Responder::start().await;
    responder.without_next_update();
    responder.publish("signer-good", 1);
    let mut config = responder.config();
    config.federation.ocsp.default_validity = Duration::ZERO;
    let metrics = Metrics::new();
    let h = handle();
    let r = Refresher::new(&config, h.clone(), None, metrics.clone()).unwrap();
    r.fetch_once().await.unwrap();
    let held_since = h.snapshot().unwrap().fetched_at;

    responder.task.abort();
    // Wait (bounded) until the listener is really gone.
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(responder.url.socket_addrs(|| None).unwrap()[0])
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    responder.publish("signer-good", 2);
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(err, FederationError::Ocsp(OcspError::Unreachable { .. })),
        "{err}"
    );
    assert!(
        !err.is_rejection(),
        "a source-side failure: tried again next round"
    );
    let held = h.snapshot().unwrap();
    assert_eq!(held.version, 1, "the last good list keeps serving");
    assert_eq!(held.fetched_at, held_since, "and it is not confirmed");
    assert_eq!(ocsp_metric(&metrics, "error"), 1);
}

#[tokio::test]
async fn a_signer_without_responder_fails_closed_unless_one_is_configured() {
    let responder = Responder::start().await;
    responder.publish("signer-no-aia", 1);
    let h = handle();
    let r = Refresher::new(&responder.config(), h.clone(), None, Metrics::new()).unwrap();
    let err = r.fetch_once().await.unwrap_err();
    assert!(
        matches!(err, FederationError::Ocsp(OcspError::NoResponder)),
        "{err}"
    );
    assert!(h.snapshot().is_none());

    let mut config = responder.config();
    config.federation.ocsp.responder_url = Some(responder.url.clone());
    let r = Refresher::new(&config, h.clone(), None, Metrics::new()).unwrap();
    r.fetch_once().await.unwrap();
    assert_eq!(h.snapshot().unwrap().version, 1);
    assert_eq!(responder.requests(), 1);
}

#[tokio::test]
async fn only_the_issuer_or_its_ocsp_signing_delegate_may_answer() {
    let responder = Responder::start().await;
    responder.publish("signer-good", 1);
    // The issuing CA itself signs: accepted.
    responder.sign_with("ca");
    let h = handle();
    let r = Refresher::new(&responder.config(), h.clone(), None, Metrics::new()).unwrap();
    r.fetch_once().await.unwrap();
    assert_eq!(h.snapshot().unwrap().version, 1);

    for (cert, why) in [
        (
            "responder-no-eku",
            "lacks extendedKeyUsage id-kp-OCSPSigning",
        ),
        (
            "rogue-responder",
            "signature does not verify with the key of",
        ),
    ] {
        responder.sign_with(cert);
        let h = handle();
        let r = Refresher::new(&responder.config(), h.clone(), None, Metrics::new()).unwrap();
        let err = r.fetch_once().await.unwrap_err();
        assert!(
            matches!(err, FederationError::Ocsp(OcspError::Invalid(_))),
            "{cert}: {err}"
        );
        assert!(err.to_string().contains(why), "{cert}: {err}");
        assert!(h.snapshot().is_none(), "{cert}");
    }
}

/// A real answer (openssl, responder cert, 10-minute nextUpdate) judged at other times.
#[test]
fn an_answer_is_current_from_this_update_to_next_update_within_the_clock_skew() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let responder = rt.block_on(Responder::start());
    let (signer_der, ca_der) = (responder.der("signer-good"), responder.der("ca"));
    let signer = x509_parser::parse_x509_certificate(&signer_der).unwrap().1;
    let ca = x509_parser::parse_x509_certificate(&ca_der).unwrap().1;
    let id = CertId::new(&signer, &ca);
    let request = responder.path("direct-req.der");
    std::fs::write(&request, id.request_der()).unwrap();
    let out = Command::new("openssl")
        .current_dir(responder.path(""))
        .args([
            "ocsp",
            "-index",
            "index.txt",
            "-CA",
            "ca.pem",
            "-rsigner",
            "responder.pem",
            "-rkey",
            "responder.key",
            "-nmin",
            "10",
            "-reqin",
            "direct-req.der",
            "-respout",
            "direct-resp.der",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = std::fs::read(responder.path("direct-resp.der")).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let at = |offset: time::Duration| Freshness {
        now: now + offset,
        default_validity: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(60),
    };
    let (status, this_update, valid_until) =
        verify_response(&answer, &id, &ca, at(time::Duration::ZERO)).unwrap();
    assert_eq!(status, CertStatus::Good);
    assert_eq!(valid_until - this_update, time::Duration::minutes(10));
    // Within nextUpdate + skew: still current; later: stale.
    assert!(verify_response(&answer, &id, &ca, at(time::Duration::minutes(10))).is_ok());
    let stale = verify_response(&answer, &id, &ca, at(time::Duration::minutes(12))).unwrap_err();
    assert!(stale.to_string().contains("stale"), "{stale}");
    // An answer about another certificate does not count.
    let other = x509_parser::parse_x509_certificate(&ca_der).unwrap().1;
    let other_id = CertId::new(&other, &ca);
    let wrong = verify_response(&answer, &other_id, &ca, at(time::Duration::ZERO)).unwrap_err();
    assert!(wrong.to_string().contains("no response about"), "{wrong}");
    // One changed second in the signed producedAt (the first GeneralizedTime) breaks the
    // signature.
    let mut tampered = answer.clone();
    let produced_at = tampered
        .windows(2)
        .position(|w| w == [0x18, 0x0f])
        .expect("a GeneralizedTime");
    let last_digit = produced_at + 2 + 13;
    tampered[last_digit] = if tampered[last_digit] == b'0' {
        b'1'
    } else {
        b'0'
    };
    let forged = verify_response(&tampered, &id, &ca, at(time::Duration::ZERO)).unwrap_err();
    assert!(
        forged.to_string().contains("signature does not verify"),
        "{forged}"
    );
}
