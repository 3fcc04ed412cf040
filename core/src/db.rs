//! The database: SQLite (embedded default) or PostgreSQL, chosen by the URL.
//!
//! Queries are written once, with `$1`-style parameters that both backends accept, and
//! run through sqlx's `Any` driver. Schema lives in per-backend migration folders
//! (`core/migrations/sqlite`, `core/migrations/postgres`), applied at start-up.

use std::{str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{
    Any, AnyPool, Connection, Transaction,
    any::{AnyConnectOptions, AnyPoolOptions},
    migrate::Migrator,
};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// Which database engine is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// SQLite: one file in the data folder.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Backend {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        }
    }

    /// The `VALUES` rows of a multi-row INSERT: `rows` rows of `columns` parameters,
    /// numbered from `$1` on PostgreSQL. On SQLite the parameters are anonymous (`?`):
    /// sqlx looks up every parameter's name to bind it, and SQLite finds a name by a
    /// linear scan of the statement's names, so `$N` costs the square of the parameter
    /// count (4% of a loaded TSA's time with batches of 64 records, measured with perf).
    /// A statement using these may not mix in `$N` parameters on SQLite.
    pub fn values_rows(self, rows: usize, columns: usize) -> String {
        let mut sql = String::with_capacity(rows * columns * 5);
        for row in 0..rows {
            sql.push_str(if row == 0 { "(" } else { ", (" });
            for column in 0..columns {
                if column > 0 {
                    sql.push_str(", ");
                }
                match self {
                    Self::Sqlite => sql.push('?'),
                    Self::Postgres => {
                        sql.push('$');
                        sql.push_str(&(row * columns + column + 1).to_string());
                    }
                }
            }
            sql.push(')');
        }
        sql
    }
}

/// Why a database operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The URL is not a database URL eid understands.
    #[error("database URL {url}: {message}")]
    Url {
        /// The URL without password.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the database at {url}: {source}")]
    Connect {
        /// The URL without password.
        url: String,
        /// The driver's error.
        source: sqlx::Error,
    },
    /// Applying the schema migrations failed.
    #[error("cannot apply database migrations ({backend}): {source}")]
    Migrate {
        /// The backend.
        backend: &'static str,
        /// The migrator's error.
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database {operation} failed: {source}")]
    Query {
        /// What was being done.
        operation: &'static str,
        /// The driver's error.
        source: sqlx::Error,
    },
}

impl DbError {
    /// Wraps a query error with what was being done.
    pub fn query(operation: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| Self::Query { operation, source }
    }
}

/// A connection pool with its backend.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    display_url: String,
    /// SQLite has one writer at a time; queueing writers here, instead of letting
    /// them contend for the file lock, avoids SQLite's busy handler, which sleeps in
    /// steps of up to 100 ms.
    writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The group-commit writer, started on first use.
    group: std::sync::Arc<std::sync::OnceLock<crate::group_commit::GroupCommit>>,
    /// Held by every clone: the WAL checkpointer stops once the last one is dropped.
    _alive: std::sync::Arc<()>,
}

/// A write transaction. On SQLite it also holds this process's writer turn.
/// Dereferences to the connection, so queries run on `&mut *tx`.
#[derive(Debug)]
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: WriteTurn,
}

/// A writer's turn ([`Database::write_turn`]); the next one's begins when it is dropped.
#[derive(Debug)]
pub struct WriteTurn {
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl WriteTx {
    /// Commits the transaction.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    /// Rolls the transaction back (dropping it does too).
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = sqlx::AnyConnection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

impl Database {
    /// Connects (creating the SQLite file when the URL says `mode=rwc`). Does not migrate.
    pub async fn connect(
        url: &SecretString,
        display_url: &str,
        max_connections: u32,
    ) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let url_text = url.expose_secret();
        let backend = if url_text.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url_text.starts_with("postgres:") || url_text.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::Url {
                url: display_url.to_owned(),
                message: "use sqlite:// or postgres://".into(),
            });
        };
        if backend == Backend::Sqlite {
            ensure_sqlite_parent(url_text, display_url)?;
        }
        let options = AnyConnectOptions::from_str(url_text).map_err(|e| DbError::Url {
            url: display_url.to_owned(),
            message: e.to_string(),
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // No ping before each use: it is a round trip per query on PostgreSQL, and a
            // connection can die just after it anyway. A broken connection fails its
            // query and is dropped from the pool; idle ones are recycled.
            .test_before_acquire(false)
            .idle_timeout(Duration::from_secs(300))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; the busy timeout makes
                        // concurrent writers queue instead of failing; foreign keys are
                        // off by default in SQLite. No checkpoint inside a commit: the
                        // checkpointer below does them (an automatic one, every 1,000
                        // pages, copied and synced the WAL while a writer waited: the TSA's
                        // p99 went from 2.3 to 11.5 ms).
                        sqlx::raw_sql(
                            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000; \
                             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; \
                             PRAGMA wal_autocheckpoint = 0;",
                        )
                        .execute(conn)
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|source| DbError::Connect {
                url: display_url.to_owned(),
                source,
            })?;
        let alive = std::sync::Arc::new(());
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoint_wal(
                pool.clone(),
                std::sync::Arc::downgrade(&alive),
            ));
        }
        Ok(Self {
            _alive: alive,
            pool,
            backend,
            display_url: display_url.to_owned(),
            writer: std::sync::Arc::new(tokio::sync::Mutex::new(())),
            group: std::sync::Arc::new(std::sync::OnceLock::new()),
        })
    }

    /// Applies pending migrations for this backend.
    pub async fn migrate(&self) -> Result<(), DbError> {
        let migrator = match self.backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|source| DbError::Migrate {
                backend: self.backend.name(),
                source,
            })
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A connection a writer keeps for itself, out of the pool (which may open another
    /// in its place): the one in `own`, or a new one at first use or after
    /// [`Self::close_own`].
    pub async fn own_connection<'c>(
        &self,
        own: &'c mut Option<sqlx::AnyConnection>,
    ) -> Result<&'c mut sqlx::AnyConnection, DbError> {
        match own {
            Some(conn) => Ok(conn),
            None => {
                let conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err(DbError::query("opening a writer's own connection"))?;
                Ok(own.insert(conn.detach()))
            }
        }
    }

    /// Closes a writer's own connection after a failure: the database rolls back the
    /// transaction left open on it, and [`Self::own_connection`] opens another.
    pub async fn close_own(own: &mut Option<sqlx::AnyConnection>) {
        if let Some(conn) = own.take() {
            use sqlx::Connection;
            let _ = conn.close().await;
        }
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL without password.
    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up
    /// front (`BEGIN IMMEDIATE`), so two writers queue on the busy timeout instead of
    /// one failing when it upgrades a read lock.
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        let turn = self.write_turn().await;
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(DbError::query("beginning a transaction"))?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// This process's turn to write, for a writer that manages its own transaction on a
    /// connection of its own (see [`Self::begin_write`], which takes it for a pooled
    /// one). SQLite admits one writer at a time: waiting here, in order, is cheaper than
    /// SQLite's busy timeout, which sleeps. PostgreSQL needs no turn.
    pub async fn write_turn(&self) -> WriteTurn {
        WriteTurn {
            _turn: match self.backend {
                Backend::Sqlite => Some(self.writer.clone().lock_owned().await),
                Backend::Postgres => None,
            },
        }
    }

    /// The group-commit writers of this database (see [`crate::group_commit`]),
    /// started on the current runtime at first use; `clock` times the audit entries.
    pub fn group_commit(
        &self,
        clock: &std::sync::Arc<dyn crate::Clock>,
    ) -> &crate::group_commit::GroupCommit {
        self.group
            .get_or_init(|| crate::group_commit::GroupCommit::start(self.clone(), clock.clone()))
    }

    /// Checks the database answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(DbError::query("acquiring a connection"))?;
        conn.ping().await.map_err(DbError::query("ping"))
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// How often the SQLite write-ahead log is copied into the database. Often, so that
/// each checkpoint has little to copy and sync: with one a second, the TSA under load
/// stalled for 20-35 ms at every checkpoint (its writer's appends to the log waited on
/// the checkpoint's fsync), which made the p99 at half load 22-26 ms; with one every
/// 100 ms it was 6 ms, and 3.9 ms with none at all (`cargo bench --bench tsa_load`).
/// A checkpoint with nothing to copy costs a query and no sync.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Copies the SQLite write-ahead log into the database every [`CHECKPOINT_EVERY`],
/// beside the writers (PASSIVE: it waits for no reader or writer), until the pool
/// closes or the last handle of the database is dropped. The last connection to close
/// checkpoints what is left, as SQLite always does.
async fn checkpoint_wal(pool: AnyPool, alive: std::sync::Weak<()>) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() || alive.strong_count() == 0 {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::debug!(error = %e, "WAL checkpoint failed; the next one retries");
        }
    }
}

/// SQLite creates the database file but not its folder.
fn ensure_sqlite_parent(url: &str, display_url: &str) -> Result<(), DbError> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" {
        return Ok(());
    }
    if let Some(parent) = std::path::Path::new(path).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|e| DbError::Url {
            url: display_url.to_owned(),
            message: format!("cannot create folder {}: {e}", parent.display()),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Backend;

    #[test]
    fn values_rows_number_postgres_parameters_and_leave_sqlite_ones_anonymous() {
        assert_eq!(
            Backend::Postgres.values_rows(2, 3),
            "($1, $2, $3), ($4, $5, $6)"
        );
        assert_eq!(Backend::Sqlite.values_rows(2, 2), "(?, ?), (?, ?)");
        assert_eq!(Backend::Sqlite.values_rows(0, 2), "");
    }
}
