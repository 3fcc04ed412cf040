//! Opening an eid instance: the key store, the database, the audit checkpoint key and
//! the instance record. First use creates them; later uses reuse them and change
//! nothing. A failure on first use removes what that attempt created.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use eid_hsm::{
    HsmError, KeyLabel, KeyRole, KeySigner, KeySpec, KeyStore, Pkcs11Options, SoftSecret,
    SoftStoreOptions,
};
use sqlx::Row;

use crate::{
    AuditError, Clock, Config, Database, DbError, KeysConfig, ServiceContext, SoftSecretConfig,
    audit::{self, AuditEvent, CHECKPOINT_KEY_LABEL},
};

/// Why an instance could not be opened or initialised.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstanceError {
    /// The key store could not be opened or a key could not be made.
    #[error("key store: {0}")]
    Keys(#[from] HsmError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// Writing the first audit records failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The command needs an initialised instance and there is none.
    #[error(
        "{what} is not initialised: run `eid init` (or `eid serve`, which initialises on first start)"
    )]
    NotInitialised {
        /// What is missing.
        what: String,
    },
    /// The database and the key store do not belong together.
    #[error("{0}")]
    Mismatch(String),
    /// A blocking task failed.
    #[error("start-up task failed: {0}")]
    Task(String),
}

/// Whether opening may create what is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Create the data folder, key store, schema and instance record if missing.
    CreateIfMissing,
    /// Everything must already exist.
    Existing,
}

/// An opened instance.
#[derive(Debug)]
pub struct Instance {
    /// What services need.
    pub ctx: ServiceContext,
    /// Signs audit checkpoints.
    pub checkpoint_signer: KeySigner,
    /// True when this call initialised the instance.
    pub created: bool,
}

/// Paths that did not exist before a first-run attempt; removed if it fails.
#[derive(Debug, Default)]
struct CreatedPaths(Vec<PathBuf>);

impl CreatedPaths {
    fn note_if_missing(&mut self, path: &Path) {
        if !path.exists() {
            self.0.push(path.to_path_buf());
        }
    }

    fn remove(&self) {
        for path in self.0.iter().rev() {
            let result = if path.is_dir() {
                std::fs::remove_dir_all(path)
            } else {
                std::fs::remove_file(path)
            };
            match result {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed after failed initialisation")
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove after failed initialisation")
                }
            }
        }
    }
}

/// Opens the instance that `config` describes.
pub async fn open(
    config: Config,
    clock: Arc<dyn Clock>,
    mode: OpenMode,
) -> Result<Instance, InstanceError> {
    let mut created = CreatedPaths::default();
    if mode == OpenMode::CreateIfMissing {
        created.note_if_missing(&config.data_dir);
        if let KeysConfig::Soft { dir, secret } = &config.keys {
            created.note_if_missing(dir);
            if let SoftSecretConfig::KeyFile {
                path,
                generated: true,
            } = secret
            {
                created.note_if_missing(path);
            }
        }
        if config.database.display_url.starts_with("sqlite:") {
            let path = sqlite_path(&config.database.display_url);
            for suffix in ["", "-wal", "-shm"] {
                created.note_if_missing(Path::new(&format!("{}{suffix}", path.display())));
            }
        }
    } else if !config.data_dir.exists() {
        return Err(InstanceError::NotInitialised {
            what: format!("the data folder {}", config.data_dir.display()),
        });
    } else if config.database.display_url.starts_with("sqlite:") {
        // Connecting would create an empty database file; say what is missing instead.
        let path = sqlite_path(&config.database.display_url);
        if !path.exists() {
            return Err(InstanceError::NotInitialised {
                what: format!("the database {}", path.display()),
            });
        }
    }
    match open_inner(config, clock, mode).await {
        Ok(instance) => Ok(instance),
        Err(e) => {
            created.remove();
            Err(e)
        }
    }
}

fn sqlite_path(url: &str) -> PathBuf {
    let rest = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    PathBuf::from(rest.split('?').next().unwrap_or_default())
}

async fn open_inner(
    config: Config,
    clock: Arc<dyn Clock>,
    mode: OpenMode,
) -> Result<Instance, InstanceError> {
    let create = mode == OpenMode::CreateIfMissing;
    if create {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            InstanceError::Keys(HsmError::Io {
                operation: "creating the data folder",
                path: config.data_dir.clone(),
                source: e,
            })
        })?;
    }
    let keys = open_key_store(&config.keys, create).await?;
    let db = Database::connect(
        &config.database.url,
        &config.database.display_url,
        config.database.max_connections,
    )
    .await?;
    // Pending migrations are applied on every start, so a new binary brings an older
    // database up to date (migrations only ever add).
    db.migrate().await?;
    let label = KeyLabel::new(CHECKPOINT_KEY_LABEL)?;
    let initialised = sqlx::query("SELECT instance_id, audit_key FROM instance WHERE id = 1")
        .fetch_optional(db.pool())
        .await;
    let record = match initialised {
        Ok(record) => record,
        // No schema yet: the database was never initialised.
        Err(_) if !create => None,
        Err(e) => {
            return Err(DbError::Query {
                operation: "reading the instance record",
                source: e,
            }
            .into());
        }
    };
    let (created, signer) = match record {
        Some(row) => {
            let recorded_key: String = row
                .try_get("audit_key")
                .map_err(DbError::query("reading the instance record"))?;
            let signer = checkpoint_signer(&keys, &label).await.map_err(|e| match e {
                InstanceError::Keys(HsmError::KeyNotFound { .. }) => InstanceError::Mismatch(format!(
                    "the database {} was initialised with an audit checkpoint key that {} does not hold; \
                     point --data/--config at the key store that belongs to it",
                    db.display_url(),
                    keys.description()
                )),
                other => other,
            })?;
            if hex::encode(signer.public_key().to_der()?) != recorded_key {
                return Err(InstanceError::Mismatch(format!(
                    "the audit checkpoint key in {} is not the one the database {} was initialised with",
                    keys.description(),
                    db.display_url()
                )));
            }
            (false, signer)
        }
        None if create => (true, initialise(&db, &keys, &label, clock.as_ref()).await?),
        None => {
            return Err(InstanceError::NotInitialised {
                what: format!("the database {}", db.display_url()),
            });
        }
    };
    let ctx = ServiceContext {
        config: Arc::new(config),
        db,
        keys,
        clock,
    };
    if created {
        audit::checkpoint(&ctx.db, ctx.clock.as_ref(), &signer).await?;
    }
    Ok(Instance {
        ctx,
        checkpoint_signer: signer,
        created,
    })
}

async fn initialise(
    db: &Database,
    keys: &KeyStore,
    label: &KeyLabel,
    clock: &dyn Clock,
) -> Result<KeySigner, InstanceError> {
    let store = keys.clone();
    let key_label = label.clone();
    let info =
        blocking(move || store.ensure(&key_label, KeySpec::EcP256, KeyRole::Service)).await?;
    let signer = checkpoint_signer(keys, label).await?;
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).map_err(|e| InstanceError::Task(e.to_string()))?;
    let instance_id = hex::encode(id);
    let public_key = hex::encode(info.public_key.to_der()?);
    let mut tx = db.begin_write().await?;
    let now = clock
        .now()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| InstanceError::Task(e.to_string()))?;
    sqlx::query(
        "INSERT INTO instance (id, instance_id, created_at, audit_key) VALUES (1, $1, $2, $3)",
    )
    .bind(&instance_id)
    .bind(&now)
    .bind(&public_key)
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("writing the instance record"))?;
    audit::append(
        &mut tx,
        clock,
        &AuditEvent::new("system", "instance.initialise", "instance", &instance_id).details(
            serde_json::json!({
                "database": db.backend().name(),
                "key_store": keys.description(),
                "token_class": keys.class().name(),
                "audit_checkpoint_key": label.as_str(),
                "version": env!("CARGO_PKG_VERSION"),
            }),
        ),
    )
    .await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing the instance record"))?;
    tracing::info!(instance_id, "initialised a new eid instance");
    Ok(signer)
}

async fn checkpoint_signer(keys: &KeyStore, label: &KeyLabel) -> Result<KeySigner, InstanceError> {
    let store = keys.clone();
    let label = label.clone();
    blocking(move || store.signer(&label, None)).await
}

/// Opens the key store `keys` describes (creating a soft store only when `create`).
pub async fn open_key_store(keys: &KeysConfig, create: bool) -> Result<KeyStore, InstanceError> {
    match keys {
        KeysConfig::Soft { dir, secret } => {
            let secret = match secret {
                SoftSecretConfig::Passphrase(p) => SoftSecret::Passphrase(p.clone()),
                SoftSecretConfig::KeyFile { path, generated } => SoftSecret::KeyFile {
                    path: path.clone(),
                    create_if_missing: *generated && create,
                },
            };
            let options = SoftStoreOptions::new(dir.clone(), secret, create);
            blocking(move || KeyStore::open_soft(options)).await
        }
        KeysConfig::Pkcs11 {
            module,
            token,
            pin,
            sessions,
            class,
        } => {
            let options = Pkcs11Options {
                module: module.clone(),
                token: token.clone(),
                pin: pin.clone(),
                sessions: *sessions,
                class: *class,
            };
            blocking(move || KeyStore::open_pkcs11(options)).await
        }
    }
}

/// Runs blocking key-store work off the async executor.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HsmError> + Send + 'static,
) -> Result<T, InstanceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| InstanceError::Task(e.to_string()))?
        .map_err(InstanceError::Keys)
}
