//! `timproxy gen-ca` and `gen-ca leaf` as operators run them, checked with openssl and a
//! rustls client.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn timproxy(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_timproxy"))
        .args(args)
        .current_dir(cwd)
        .env_remove("TIMPROXY_LOG")
        .output()
        .expect("run timproxy")
}

fn openssl(args: &[&str]) -> String {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl must be installed for these tests");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit code, and exactly one stderr line starting with `error:` (plus an optional hint).
fn assert_cli_error(output: &Output, code: i32, contains: &str) {
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(
        first.contains(contains),
        "expected `{contains}` in: {stderr}"
    );
    assert!(
        stderr.lines().skip(1).all(|l| l.starts_with("hint: ")),
        "{stderr}"
    );
}

fn make_ca(dir: &Path) -> Output {
    let output = timproxy(&["gen-ca", "--out", "ca", "--org", "Test Org"], dir);
    assert!(output.status.success(), "{}", text(&output.stderr));
    output
}

#[test]
fn ca_and_leaf_pass_openssl_verify_with_the_expected_extensions() {
    let dir = tempfile::tempdir().unwrap();
    let output = make_ca(dir.path());
    let stdout = text(&output.stdout);
    let ca_dir = std::fs::canonicalize(dir.path().join("ca")).unwrap();
    let ca_crt = ca_dir.join("ca.crt");
    let ca_key = ca_dir.join("ca.key");
    assert!(
        stdout.contains(&format!(
            "federation_custom_ca_list: [{}]",
            ca_crt.display()
        )),
        "{stdout}"
    );
    let fingerprint = openssl(&[
        "x509",
        "-in",
        ca_crt.to_str().unwrap(),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap().to_owned();
    assert!(
        stdout.contains(&format!("SHA-256 fingerprint: {fingerprint}")),
        "{stdout}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&ca_key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    assert!(
        std::fs::read_to_string(&ca_key)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let ca_text = openssl(&["x509", "-in", ca_crt.to_str().unwrap(), "-noout", "-text"]);
    assert!(ca_text.contains("CA:TRUE"), "{ca_text}");
    assert!(ca_text.contains("Certificate Sign, CRL Sign"), "{ca_text}");
    assert!(ca_text.contains("ASN1 OID: prime256v1"), "{ca_text}");
    assert!(ca_text.contains("O = Test Org"), "{ca_text}");

    let output = timproxy(
        &[
            "gen-ca",
            "leaf",
            "--ca",
            "ca",
            "--host",
            "hs1.test",
            "--host",
            "localhost",
            "--ip",
            "127.0.0.1",
            "--out",
            "leaf",
            "--days",
            "30",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let leaf_crt = dir.path().join("leaf/leaf.crt");
    let verified = openssl(&[
        "verify",
        "-CAfile",
        ca_crt.to_str().unwrap(),
        leaf_crt.to_str().unwrap(),
    ]);
    assert!(verified.trim().ends_with(": OK"), "{verified}");
    let leaf_text = openssl(&["x509", "-in", leaf_crt.to_str().unwrap(), "-noout", "-text"]);
    assert!(
        leaf_text.contains("DNS:hs1.test, DNS:localhost, IP Address:127.0.0.1"),
        "{leaf_text}"
    );
    assert!(
        leaf_text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{leaf_text}"
    );
    assert!(leaf_text.contains("CA:FALSE"), "{leaf_text}");
}

#[tokio::test]
async fn rustls_client_accepts_the_leaf_with_the_ca_as_its_only_root() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "ca", "--host", "hs1.test", "--out", "ca",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let read = |name: &str| std::fs::read(dir.path().join("ca").join(name)).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(&read("leaf.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(&read("leaf.key")).unwrap();
    let server = rustls::ServerConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(&read("ca.crt")).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(timproxy::tls::crypto_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let server_task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(stream).await.unwrap();
        tls.write_all(b"hello").await.unwrap();
        tls.shutdown().await.unwrap();
    });
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(ServerName::try_from("hs1.test").unwrap(), stream)
            .await
            .expect("the leaf must verify against the CA");
        let mut got = Vec::new();
        tls.read_to_end(&mut got).await.unwrap();
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .unwrap();
    assert_eq!(got, b"hello");
    tokio::time::timeout(Duration::from_secs(20), server_task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn existing_ca_is_kept_without_force_and_replaced_with_it() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let before = std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap();
    let output = timproxy(&["gen-ca", "--out", "ca"], dir.path());
    assert_cli_error(&output, 2, "already exists");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap(),
        before
    );
    let output = timproxy(
        &["gen-ca", "--out", "ca", "--force", "--format", "json"],
        dir.path(),
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["key_type"], "EC P-256");
    assert_ne!(
        std::fs::read_to_string(dir.path().join("ca/ca.crt")).unwrap(),
        before
    );
    assert!(
        report["synapse_trust"]
            .as_str()
            .unwrap()
            .starts_with("federation_custom_ca_list: [/")
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("ca")).unwrap().collect();
    assert_eq!(leftovers.len(), 2, "no temporary files may remain");
}

#[test]
fn other_key_types_are_generated() {
    let dir = tempfile::tempdir().unwrap();
    for (key_type, marker) in [("p384", "secp384r1"), ("ed25519", "ED25519")] {
        let out = format!("ca-{key_type}");
        let output = timproxy(
            &["gen-ca", "--out", &out, "--key-type", key_type],
            dir.path(),
        );
        assert!(output.status.success(), "{}", text(&output.stderr));
        let crt = dir.path().join(&out).join("ca.crt");
        let text = openssl(&["x509", "-in", crt.to_str().unwrap(), "-noout", "-text"]);
        assert!(text.contains(marker), "{key_type}: {text}");
        let output = timproxy(
            &[
                "gen-ca", "leaf", "--ca", &out, "--host", "hs1.test", "--out", &out,
            ],
            dir.path(),
        );
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let leaf = dir.path().join(&out).join("leaf.crt");
        let verified = openssl(&[
            "verify",
            "-CAfile",
            crt.to_str().unwrap(),
            leaf.to_str().unwrap(),
        ]);
        assert!(verified.trim().ends_with(": OK"));
    }
}

#[test]
fn bad_leaf_inputs_fail_with_one_error_line_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path());
    let out = dir.path().join("out");

    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "missing", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 3, "missing/ca.crt");

    let output = timproxy(
        &[
            "gen-ca",
            "leaf",
            "--ca",
            "ca",
            "--host",
            "bad_host!",
            "--out",
            "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "invalid host name `bad_host!`");

    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "ca", "--host", "10.0.0.1", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "use --ip");

    // A key file that holds no key.
    let garbage = dir.path().join("garbage");
    std::fs::create_dir(&garbage).unwrap();
    std::fs::copy(dir.path().join("ca/ca.crt"), garbage.join("ca.crt")).unwrap();
    std::fs::write(garbage.join("ca.key"), "not a key\n").unwrap();
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "garbage", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "no PEM private key");

    // A key of a type ring cannot sign with (brainpool), and a SEC1 ("EC PRIVATE KEY") key.
    let wrong = dir.path().join("wrong");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::copy(dir.path().join("ca/ca.crt"), wrong.join("ca.crt")).unwrap();
    let key = wrong.join("ca.key");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:brainpoolP256r1",
        "-out",
        key.to_str().unwrap(),
    ]);
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "wrong", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "unsupported key type");
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        key.to_str().unwrap(),
    ]);
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "wrong", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "not PKCS#8");

    // The key of another CA.
    let other = tempfile::tempdir().unwrap();
    make_ca(other.path());
    std::fs::copy(other.path().join("ca/ca.key"), wrong.join("ca.key")).unwrap();
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "wrong", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "does not match");

    // A leaf certificate is not a CA.
    timproxy(
        &[
            "gen-ca", "leaf", "--ca", "ca", "--host", "hs1.test", "--out", "leafdir",
        ],
        dir.path(),
    );
    let notca = dir.path().join("notca");
    std::fs::create_dir(&notca).unwrap();
    std::fs::copy(dir.path().join("leafdir/leaf.crt"), notca.join("ca.crt")).unwrap();
    std::fs::copy(dir.path().join("leafdir/leaf.key"), notca.join("ca.key")).unwrap();
    let output = timproxy(
        &[
            "gen-ca", "leaf", "--ca", "notca", "--host", "hs1.test", "--out", "out",
        ],
        dir.path(),
    );
    assert_cli_error(&output, 2, "not a CA certificate");

    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing may be written"
    );
}
