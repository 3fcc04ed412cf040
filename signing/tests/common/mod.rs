//! A whole eid instance for the TSA tests: a fresh database (SQLite or PostgreSQL), a
//! key store (the soft store or a SoftHSM2 token), the real CA hierarchy made by
//! eid-ca (its TSU certificate included), the TSA started on it, and the signing
//! router served on a loopback port. Plus openssl as the judge and a tiny SNTP server.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicI64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use eid_core::{
    Config, SystemClock,
    config::{Environment, Overrides},
    instance::{self, OpenMode},
};
use eid_signing::{TimeStampAuthority, TimeStampUnit, tsa::OsStatusSource};
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

/// Points SoftHSM2 at a private token folder, once per test process, before anything
/// loads the module (the module reads SOFTHSM2_CONF when it initialises).
fn softhsm_environment() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )
        .unwrap();
        // SAFETY: runs once, before any test loads the module (every SoftHSM path goes
        // through here first); other threads touch the environment only through std,
        // which serialises access with its own lock.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("SOFTHSM2_CONF", &conf);
        }
        dir
    })
    .path()
}

fn pkcs11_module() -> String {
    std::env::var("EID_TEST_PKCS11_MODULE")
        .unwrap_or_else(|_| "/usr/lib/softhsm/libsofthsm2.so".into())
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
    shutdown: CancellationToken,
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
        };
        let shutdown = CancellationToken::new();
        let tsa = TimeStampAuthority::start_with(&ctx, unit.clone(), os, shutdown.clone())
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(eid_core::http::serve(
            "signing",
            listener,
            eid_signing::router(&ctx, &tsa),
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
            shutdown,
            _db: db,
        }
    }

    /// A path in the test's folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// POSTs `body` to /tsa with `content_type`; returns the status, content type and body.
    pub async fn post(&self, content_type: &str, body: Vec<u8>) -> (u16, String, Vec<u8>) {
        let response = reqwest::Client::new()
            .post(format!("{}/tsa", self.url))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let kind = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, kind, response.bytes().await.unwrap().to_vec())
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
