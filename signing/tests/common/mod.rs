//! A whole eid instance for the signing tests: a fresh database (SQLite or
//! PostgreSQL), a key store (the soft store or a SoftHSM2 token), the real CA hierarchy
//! made by eid-ca (its TSU certificate included) with the CA's HTTP surface (OCSP)
//! served at the URL its certificates name, the TSA and the signature API started on
//! it, and the signing router served on a loopback port. Plus citizen cards on
//! SoftHSM2, openssl as the judge and a tiny SNTP server.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

pub mod pdf;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use eid_core::{
    Config, SystemClock,
    config::{Environment, Overrides},
    instance::{self, OpenMode},
};
use eid_signing::{
    Signatures, TimeStampAuthority, TimeStampUnit,
    cades::{timestamp::TimeStampSource, trust::TrustedCas},
    tsa::OsStatusSource,
};
use eid_tests::{TestBackend, TestDatabase};
use tokio_util::sync::CancellationToken;
use x509_cert::der::{EncodePem, pem::LineEnding};

/// Which key store the instance uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// The soft key store in the data folder.
    Soft,
    /// A SoftHSM2 token.
    SoftHsm,
}

struct TestEnv(Vec<(String, String)>);

impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

use eid_tests::softhsm::softhsm_environment;

fn pkcs11_module() -> String {
    eid_tests::softhsm::pkcs11_module().display().to_string()
}

/// A running TSA.
pub struct Tsa {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub tsa: TimeStampAuthority,
    pub ctx: eid_core::ServiceContext,
    /// The root CA certificate (PEM file): openssl's -CAfile.
    pub root: PathBuf,
    /// The TSU certificate (PEM file): openssl's -untrusted when the token lacks it.
    pub tsu: PathBuf,
    /// The audit checkpoint key, to verify the audit chain.
    pub checkpoint_key: eid_hsm::PublicKey,
    /// The time-stamping unit the TSA signs with.
    pub unit: TimeStampUnit,
    /// The certificate authority (issues card certificates, revokes them).
    pub ca: eid_ca::CertificateAuthority,
    /// The signature API.
    pub signatures: Signatures,
    /// The bearer token of the API client `test-rp`.
    pub api_token: String,
    /// The bearer token of another API client, `other-rp`.
    pub other_api_token: String,
    shutdown: CancellationToken,
    /// Stops the CA's HTTP surface (OCSP) alone.
    ca_shutdown: CancellationToken,
    _db: TestDatabase,
}

impl Drop for Tsa {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Tsa {
    /// Starts an instance with `extra` TOML appended to its config (e.g. a
    /// `[signing.tsa]` section) and `os` as the OS clock status source.
    pub async fn start(backend: TestBackend, keys: Keys, extra: &str, os: OsStatusSource) -> Self {
        let db = TestDatabase::create(backend).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::new();
        if keys == Keys::SoftHsm {
            softhsm_environment();
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let label = format!(
                "eid-tsa-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            eid_hsm::initialize_token(
                Path::new(&pkcs11_module()),
                &label,
                &secrecy::SecretString::from("5678".to_owned()),
                &secrecy::SecretString::from("1234".to_owned()),
            )
            .unwrap();
            std::fs::write(dir.path().join("pin"), "1234\n").unwrap();
            text.push_str(&format!(
                "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{label}\"\npin_file = \"pin\"\nsessions = 2\n",
                pkcs11_module()
            ));
        }
        // The CA's HTTP surface listens where its certificates' OCSP URLs point.
        let ca_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ca_address = ca_listener.local_addr().unwrap();
        let api_token = "test-rp-token-0123456789abcdefghijklmnop".to_owned();
        let other_api_token = "other-rp-token-0123456789abcdefghijklmnop".to_owned();
        std::fs::write(dir.path().join("api-token"), &api_token).unwrap();
        std::fs::write(dir.path().join("other-api-token"), &other_api_token).unwrap();
        text.push_str(&format!(
            "[ca]\npublic_url = \"http://{ca_address}\"\n\
             [[signing.api_client]]\nname = \"test-rp\"\ntoken_file = \"api-token\"\n\
             [[signing.api_client]]\nname = \"other-rp\"\ntoken_file = \"other-api-token\"\n"
        ));
        text.push_str(extra);
        let file = dir.path().join("eid.toml");
        std::fs::write(&file, text).unwrap();
        let env = TestEnv(vec![("EID_DATABASE_URL".into(), db.url.clone())]);
        let config = Config::load(
            Some(&file),
            &env,
            &Overrides {
                data_dir: Some(dir.path().join("data")),
            },
        )
        .unwrap();
        let instance = instance::open(config, Arc::new(SystemClock), OpenMode::CreateIfMissing)
            .await
            .unwrap();
        let ctx = instance.ctx.clone();
        let ca = eid_ca::CertificateAuthority::open(&ctx).await.unwrap();
        let hierarchy = ca.hierarchy();
        let tsu = hierarchy.get(eid_ca::CaRole::TimeStamping).unwrap();
        let root = hierarchy.get(eid_ca::CaRole::Root).unwrap();
        let root_pem = dir.path().join("root.pem");
        std::fs::write(&root_pem, root.certificate.to_pem(LineEnding::LF).unwrap()).unwrap();
        let tsu_pem = dir.path().join("tsu.pem");
        std::fs::write(&tsu_pem, tsu.certificate.to_pem(LineEnding::LF).unwrap()).unwrap();
        let unit = TimeStampUnit {
            signer: tsu.signer.clone(),
            certificate: tsu.certificate.clone(),
            chain: Vec::new(),
            status: None,
        };
        let shutdown = CancellationToken::new();
        let ca_shutdown = shutdown.child_token();
        let tsa = TimeStampAuthority::start_with(&ctx, unit.clone(), os, shutdown.clone())
            .await
            .unwrap();
        tokio::spawn(eid_core::http::serve(
            "ca",
            ca_listener,
            eid_ca::router(&ca),
            ca_shutdown.clone(),
        ));
        let signing_ca = hierarchy.get(eid_ca::CaRole::CitizenSigningCa).unwrap();
        let signatures = Signatures::new(
            &ctx,
            TrustedCas {
                signer_issuers: vec![signing_ca.certificate.clone()],
                known: vec![root.certificate.clone(), signing_ca.certificate.clone()],
            },
            TimeStampSource::InProcess(tsa.clone()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(eid_core::http::serve(
            "signing",
            listener,
            eid_signing::router(&ctx, &tsa, &signatures, None, None),
            shutdown.clone(),
        ));
        Self {
            dir,
            url: format!("http://{address}"),
            tsa,
            ctx,
            root: root_pem,
            tsu: tsu_pem,
            checkpoint_key: instance.checkpoint_signer.public_key().clone(),
            unit,
            ca: ca.clone(),
            signatures,
            api_token,
            other_api_token,
            shutdown,
            ca_shutdown,
            _db: db,
        }
    }

    /// Stops the CA's HTTP surface: its OCSP responder no longer answers, so a judge
    /// can only use the revocation data a signature carries.
    pub async fn stop_ca(&self) {
        self.ca_shutdown.cancel();
        // The listener closes once the server task sees the cancellation.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    /// A path in the test's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// POSTs `body` to /tsa with `content_type`; returns the status, content type and body.
    pub async fn post(&self, content_type: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
        let answer = self.request("/tsa", content_type, None, "*/*", body).await;
        (answer.status, answer.kind, answer.body)
    }

    /// POSTs JSON `body` to the signature API at `path` with `token` as the bearer.
    pub async fn api(
        &self,
        path: &str,
        token: Option<&str>,
        accept: &str,
        body: Vec<u8>,
    ) -> Answer {
        self.request(path, "application/json", token, accept, body)
            .await
    }

    async fn request(
        &self,
        path: &str,
        content_type: &str,
        token: Option<&str>,
        accept: &str,
        body: Vec<u8>,
    ) -> Answer {
        let mut request = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .header("content-type", content_type)
            .header("accept", accept)
            .body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        Answer {
            status,
            kind,
            body: response.bytes().await.unwrap().to_vec(),
        }
    }

    /// POSTs a time-stamp query file and writes the reply to `reply`.
    pub async fn stamp(&self, query: &Path, reply: &str) -> PathBuf {
        let (status, kind, body) = self
            .post("application/timestamp-query", std::fs::read(query).unwrap())
            .await;
        assert_eq!(status, 200);
        assert_eq!(kind, "application/timestamp-reply");
        let path = self.path(reply);
        std::fs::write(&path, body).unwrap();
        path
    }
}

/// An HTTP answer.
pub struct Answer {
    pub status: u16,
    pub kind: String,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// Asserts a problem+json with this status and type.
    pub fn assert_problem(&self, status: u16, kind: &str) {
        assert_eq!(
            (self.status, self.kind.as_str()),
            (status, "application/problem+json"),
            "{}",
            self.text()
        );
        assert_eq!(
            self.json()["type"],
            format!("urn:eid:problem:{kind}"),
            "{}",
            self.text()
        );
    }
}

/// A citizen's card: a SoftHSM2 token of class smartcard with the two citizen key
/// pairs generated on it, and a qualified signature certificate for its signing key.
pub struct Card {
    pub store: eid_hsm::KeyStore,
    pub certificate: x509_cert::Certificate,
    pub certificate_pem: String,
}

/// The card's PIN2 (the signing PIN).
pub const CARD_PIN: &str = "48213";

impl Card {
    /// Makes a card with P-256 keys and has `instance`'s CA certify its signing key.
    pub async fn issue(instance: &Tsa, national_id: &str) -> Self {
        Self::issue_with(instance, national_id, eid_hsm::KeySpec::EcP256).await
    }

    /// Makes a card with keys of `spec` and has `instance`'s CA certify its signing key.
    pub async fn issue_with(instance: &Tsa, national_id: &str, spec: eid_hsm::KeySpec) -> Self {
        use x509_cert::builder::{Builder, RequestBuilder};
        softhsm_environment();
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let label = format!(
            "card-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let module = PathBuf::from(pkcs11_module());
        let pin = secrecy::SecretString::from(CARD_PIN.to_owned());
        let store = tokio::task::spawn_blocking(move || {
            eid_hsm::initialize_token(
                &module,
                &label,
                &secrecy::SecretString::from("5678".to_owned()),
                &pin,
            )
            .unwrap();
            let store = eid_hsm::KeyStore::open_pkcs11(eid_hsm::Pkcs11Options {
                module,
                token: eid_hsm::TokenSelector::Label(label),
                pin,
                sessions: 1,
                class: eid_hsm::TokenClass::Smartcard,
            })
            .unwrap();
            store.generate_citizen_key_pairs(spec).unwrap();
            store
        })
        .await
        .unwrap();
        let signing = eid_hsm::KeyLabel::new(eid_hsm::CITIZEN_SIGNING_LABEL).unwrap();
        let signer = store
            .signer(&signing, None)
            .unwrap()
            .with_pin(secrecy::SecretString::from(CARD_PIN.to_owned()));
        let csr = {
            let signer = signer.clone();
            tokio::task::spawn_blocking(move || {
                let subject: x509_cert::name::Name = "CN=card".parse().unwrap();
                let request = RequestBuilder::new(subject)
                    .unwrap()
                    .build::<_, eid_hsm::Signature>(&signer)
                    .unwrap();
                der::Encode::to_der(&request).unwrap()
            })
            .await
            .unwrap()
        };
        let evidence = eid_ca::KeyEvidence {
            public_key: signer.public_key().clone(),
            qscd: store.qscd_evidence(&signing).unwrap(),
        };
        let issued = instance
            .ca
            .issue(eid_ca::IssueRequest {
                profile: eid_ca::Profile::CitizenSigning,
                csr,
                holder: eid_ca::Holder::Citizen {
                    national_id: eid_ca::NationalId::new(national_id).unwrap(),
                    name: eid_ca::PersonName::new("Mari", "Maasikas").unwrap(),
                },
                requested_by: "operator:test".into(),
                key_evidence: Some(evidence),
            })
            .await
            .unwrap();
        let certificate = <x509_cert::Certificate as der::Decode>::from_der(&issued.der).unwrap();
        let certificate_pem = certificate.to_pem(LineEnding::LF).unwrap();
        Self {
            store,
            certificate,
            certificate_pem,
        }
    }

    /// A signer for one of the card's keys, with the PIN for this signature (an
    /// always-authenticate key asks for it every time, as a card does).
    pub fn signer(&self, label: &str) -> eid_hsm::KeySigner {
        self.store
            .signer(&eid_hsm::KeyLabel::new(label).unwrap(), None)
            .unwrap()
            .with_pin(secrecy::SecretString::from(CARD_PIN.to_owned()))
    }

    /// Suspends or revokes the card's signing certificate at `instance`'s CA.
    pub async fn change_status(&self, instance: &Tsa, change: eid_ca::StatusChange) {
        let serial = eid_ca::CertificateSerial::from_certificate(
            self.certificate.tbs_certificate().serial_number(),
        );
        instance
            .ca
            .change_status(&serial, change, "operator:test")
            .await
            .unwrap();
    }

    /// Revokes the card's signing certificate (key compromise).
    pub async fn revoke(&self, instance: &Tsa) {
        self.change_status(
            instance,
            eid_ca::StatusChange::Revoke(eid_ca::reason::ReasonCode::KeyCompromise),
        )
        .await;
    }

    /// Signs `data` on the card with its signing key, as the card's middleware would.
    pub async fn sign(&self, data: Vec<u8>) -> Vec<u8> {
        self.signer(eid_hsm::CITIZEN_SIGNING_LABEL)
            .sign_async(data)
            .await
            .unwrap()
            .into_bytes()
    }
}

/// An OS status source that says nothing (no command, no flag file).
pub fn os_silent() -> OsStatusSource {
    OsStatusSource {
        command: Vec::new(),
        flag_file: PathBuf::from("/nonexistent/eid-test-flag"),
    }
}

/// An OS status source whose command prints `answer`.
pub fn os_says(answer: &str) -> OsStatusSource {
    OsStatusSource {
        command: vec!["echo".into(), answer.into()],
        flag_file: PathBuf::from("/nonexistent/eid-test-flag"),
    }
}

/// The output of a judge.
pub struct Judged {
    pub success: bool,
    pub text: String,
}

/// Runs openssl. A missing judge fails the test: a skipped judgement would pass silently.
pub fn openssl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Judged {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("openssl could not be run ({e}); these tests never skip a judge")
        });
    Judged {
        success: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// A loopback SNTP server whose clock is the system clock plus `offset_millis`.
pub struct SntpServer {
    pub address: SocketAddr,
    pub offset_millis: Arc<AtomicI64>,
}

impl SntpServer {
    pub async fn start() -> Self {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let offset_millis = Arc::new(AtomicI64::new(0));
        let offset = offset_millis.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 512];
            while let Ok((len, peer)) = socket.recv_from(&mut buffer).await {
                if len < 48 {
                    continue;
                }
                let now = time::OffsetDateTime::now_utc()
                    + time::Duration::milliseconds(offset.load(Ordering::SeqCst));
                let stamp = eid_signing::tsa::sntp::unix_to_ntp(now);
                let mut answer = [0u8; 48];
                answer[0] = 0b00_100_100; // no leap warning, version 4, mode 4 (server)
                answer[1] = 1; // stratum 1
                answer[12..16].copy_from_slice(b"TEST");
                answer[16..24].copy_from_slice(&stamp); // reference
                answer[24..32].copy_from_slice(&buffer[40..48]); // originate = client's transmit
                answer[32..40].copy_from_slice(&stamp); // receive
                answer[40..48].copy_from_slice(&stamp); // transmit
                let _ = socket.send_to(&answer, peer).await;
            }
        });
        Self {
            address,
            offset_millis,
        }
    }

    pub fn set_offset(&self, millis: i64) {
        self.offset_millis.store(millis, Ordering::SeqCst);
    }
}

/// A loopback UDP port that never answers.
pub async fn silent_udp() -> (tokio::net::UdpSocket, SocketAddr) {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    (socket, address)
}

pub const SHORT: Duration = Duration::from_millis(300);
