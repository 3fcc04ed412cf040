//! Shared harness for the workspace integration tests: databases on both backends and
//! the `eid` binary.
//!
//! PostgreSQL tests need `EID_TEST_POSTGRES_URL`, an account that may create
//! databases (`deploy/test.sh` sets it up); each test gets a database of its own.
// One audited exception: softhsm::softhsm_environment sets SOFTHSM2_CONF once.
#![deny(unsafe_code)]
#![allow(clippy::print_stdout)] // test harness output

use secrecy::SecretString;
use sqlx::{Connection, Executor};

pub mod mrz;
pub mod pdf;
pub mod sim;
pub mod softhsm;

/// Which database a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestBackend {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database.
    Postgres,
}

/// A database made for one test; a PostgreSQL database is dropped when this is.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to connect to (the test password included for PostgreSQL).
    pub url: String,
    /// Which backend.
    pub backend: TestBackend,
    /// Holds the SQLite file's folder.
    _dir: Option<tempfile::TempDir>,
    admin_url: Option<String>,
    name: String,
}

fn random_suffix() -> String {
    let mut bytes = [0u8; 6];
    // invariant: the OS random source is available on every machine tests run on.
    getrandom::fill(&mut bytes).expect("system random source");
    hex::encode(bytes)
}

/// The PostgreSQL URL tests use to create their databases.
pub fn postgres_admin_url() -> String {
    std::env::var("EID_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "EID_TEST_POSTGRES_URL is not set: the PostgreSQL half of the suite needs a server. \
             Run deploy/test.sh, which installs and starts PostgreSQL and sets it."
        )
    })
}

impl TestDatabase {
    /// Creates a fresh database on `backend`.
    pub async fn create(backend: TestBackend) -> anyhow::Result<Self> {
        let name = format!("eid_test_{}", random_suffix());
        match backend {
            TestBackend::Sqlite => {
                let dir = tempfile::tempdir()?;
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("eid.sqlite").display()
                );
                Ok(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    admin_url: None,
                    name,
                })
            }
            TestBackend::Postgres => {
                let admin_url = postgres_admin_url();
                let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                admin
                    .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await?;
                let (base, _) = admin_url
                    .rsplit_once('/')
                    .ok_or_else(|| anyhow::anyhow!("EID_TEST_POSTGRES_URL has no database part"))?;
                Ok(Self {
                    url: format!("{base}/{name}"),
                    backend,
                    _dir: None,
                    admin_url: Some(admin_url),
                    name,
                })
            }
        }
    }

    /// The URL as a secret, for `Database::connect`.
    pub fn secret_url(&self) -> SecretString {
        SecretString::from(self.url.clone())
    }

    /// Connects with the eid-core pool and applies migrations.
    pub async fn connect(&self) -> anyhow::Result<eid_core::Database> {
        let db = eid_core::Database::connect(&self.secret_url(), &self.url, 8).await?;
        db.migrate().await?;
        Ok(db)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(admin_url) = self.admin_url.take() {
            let name = self.name.clone();
            // Dropping runs outside the test's runtime, on a thread of its own.
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async move {
                    let mut admin = sqlx::PgConnection::connect(&admin_url).await?;
                    admin
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await?;
                    anyhow::Ok(())
                })
            })
            .join();
        }
    }
}

/// Mounts async test functions taking a [`TestBackend`] once per backend, in modules
/// `sqlite` and `postgres`, as rustls mounts its tests once per crypto provider.
#[macro_export]
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::TestBackend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::TestBackend::Postgres).await;
                }
            )*
        }
    };
}
