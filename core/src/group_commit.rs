//! Group commit: write operations from many concurrent requests run in one
//! transaction, each under a savepoint of its own, and every caller learns its outcome
//! only after the transaction commits.
//!
//! An operation returns the audit events of its change instead of appending them: the
//! batch appends every successful operation's events at its end, still inside the
//! same transaction, so the audit chain's head is held only for that last step and
//! several writers can work side by side (on PostgreSQL; SQLite has one writer).
//!
//! A database commit is the expensive part of a small write: SQLite serialises writers,
//! PostgreSQL flushes its WAL, and the audit log's single chain head serialises both.
//! Sharing the commit among the operations waiting at that moment keeps each one's
//! guarantees (its rows and its audit entry commit together or not at all; a failing
//! operation is rolled back to its savepoint without touching the others) at a fraction
//! of the cost.

use std::future::Future;
use std::pin::Pin;

use std::sync::Arc;

use sqlx::AnyConnection;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{AuditError, AuditEvent, Backend, Clock, Database, DbError, audit};

/// The future of one write operation, borrowing the batch's connection.
pub type WriteFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// What an operation produced: its value, and the audit events of its change.
#[derive(Debug)]
pub struct Written<T> {
    /// What the caller gets back.
    pub value: T,
    /// Appended to the audit log in the same transaction, after the batch's operations.
    pub audit: Vec<AuditEvent>,
}

/// What one job leaves behind: its audit events, how to tell its caller, and whether it
/// failed without a savepoint to roll back to (the batch's transaction is then spoilt).
type JobOutcome = (Vec<AuditEvent>, Finish, bool);

/// What the writer runs for one caller: the operation, which yields its audit events
/// and how to tell the caller.
type Job = Box<
    dyn for<'c> FnOnce(
            &'c mut AnyConnection,
        ) -> Pin<Box<dyn Future<Output = JobOutcome> + Send + 'c>>
        + Send,
>;

/// Tells the caller how it went, once the batch's fate is known: `Ok(())` when the
/// transaction committed, the commit's error otherwise.
type Finish = Box<dyn FnOnce(Result<(), &DbError>) + Send>;

/// The most operations one transaction carries.
const MAX_BATCH: usize = 64;

/// Writers per PostgreSQL database: they overlap their row writes and queue only for
/// the audit chain's head and the commit.
const POSTGRES_WRITERS: usize = 4;

/// A handle to a database's group-commit writers. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writers for `db` on the current runtime; batches append their audit
    /// entries with `clock`'s time.
    pub fn start(db: Database, clock: Arc<dyn Clock>) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>(1024);
        let receiver = Arc::new(Mutex::new(receiver));
        let writers = match db.backend() {
            Backend::Postgres => POSTGRES_WRITERS,
            Backend::Sqlite => 1,
        };
        for _ in 0..writers {
            tokio::spawn(run(db.clone(), clock.clone(), receiver.clone()));
        }
        Self { jobs }
    }

    /// Runs `operation` in the next batch. Its result is returned after the batch
    /// commits; if the operation fails, its writes are rolled back and the others'
    /// are not; if the commit fails, every operation of the batch fails.
    pub async fn write<T, E>(
        &self,
        operation: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, Written<T>, E>
        + Send
        + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.submit(true, operation).await
    }

    /// [`Self::write`] for an operation whose statements fail only when the database
    /// does (a refusal it can foresee, such as a duplicate or a credential already
    /// spent, it reports as a value, e.g. with `ON CONFLICT DO NOTHING` or a conditional
    /// update): it runs without a savepoint, which saves two round trips. If a statement
    /// fails after all, the transaction cannot go on, so every operation of the batch
    /// fails with it and nothing of the batch is written (not even this operation's
    /// earlier statements).
    pub async fn write_without_savepoint<T, E>(
        &self,
        operation: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, Written<T>, E>
        + Send
        + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        self.submit(false, operation).await
    }

    async fn submit<T, E>(
        &self,
        guarded: bool,
        operation: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, Written<T>, E>
        + Send
        + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = if guarded {
                    run_in_savepoint(conn, operation).await
                } else {
                    operation(conn).await
                };
                let spoilt = !guarded && result.is_err();
                let (events, result) = match result {
                    Ok(written) => (written.audit, Ok(written.value)),
                    Err(e) => (Vec::new(), Err(e)),
                };
                let finish: Finish = Box::new(move |committed| {
                    let delivered = match (result, committed) {
                        (Ok(value), Ok(())) => Ok(value),
                        (Ok(_), Err(e)) => Err(E::from(DbError::Query {
                            operation: "committing a group of writes",
                            source: sqlx::Error::Protocol(e.to_string()),
                        })),
                        (Err(e), _) => Err(e),
                    };
                    // The caller may have gone away; its writes stand regardless.
                    let _ = reply.send(delivered);
                });
                (events, finish, spoilt)
            })
        });
        self.jobs.send(job).await.map_err(|_| {
            E::from(DbError::Query {
                operation: "queueing a write",
                source: sqlx::Error::PoolClosed,
            })
        })?;
        outcome.await.unwrap_or_else(|_| {
            Err(E::from(DbError::Query {
                operation: "waiting for a group commit",
                source: sqlx::Error::WorkerCrashed,
            }))
        })
    }
}

/// Runs one operation between SAVEPOINT and RELEASE, or ROLLBACK TO on failure.
async fn run_in_savepoint<T, E>(
    conn: &mut AnyConnection,
    operation: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, T, E>,
) -> Result<T, E>
where
    E: From<DbError>,
{
    sqlx::raw_sql("SAVEPOINT eid_write")
        .execute(&mut *conn)
        .await
        .map_err(|source| {
            E::from(DbError::Query {
                operation: "opening a savepoint",
                source,
            })
        })?;
    match operation(&mut *conn).await {
        Ok(value) => {
            sqlx::raw_sql("RELEASE SAVEPOINT eid_write")
                .execute(&mut *conn)
                .await
                .map_err(|source| {
                    E::from(DbError::Query {
                        operation: "releasing a savepoint",
                        source,
                    })
                })?;
            Ok(value)
        }
        Err(e) => {
            // If even the rollback fails, the whole transaction is unusable; the commit
            // below then fails and every operation of the batch is told so.
            if let Err(rollback) =
                sqlx::raw_sql("ROLLBACK TO SAVEPOINT eid_write; RELEASE SAVEPOINT eid_write")
                    .execute(&mut *conn)
                    .await
            {
                tracing::warn!(error = %rollback, "rolling back a failed write");
            }
            Err(e)
        }
    }
}

async fn run(db: Database, clock: Arc<dyn Clock>, receiver: Arc<Mutex<mpsc::Receiver<Job>>>) {
    let mut own = None;
    loop {
        let jobs = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            jobs
        };
        if db.backend() == Backend::Sqlite {
            run_batch_sqlite(&db, clock.as_ref(), &mut own, jobs).await;
        } else {
            run_batch(&db, clock.as_ref(), jobs).await;
        }
    }
}

/// Runs `jobs` on `conn`, inside the batch's open transaction: each job's audit events,
/// how to tell its caller, and whether one spoilt the transaction.
async fn run_jobs(
    conn: &mut AnyConnection,
    jobs: Vec<Job>,
) -> (Vec<AuditEvent>, Vec<Finish>, bool) {
    let mut finishes = Vec::with_capacity(jobs.len());
    let mut events = Vec::new();
    let mut spoilt = false;
    for job in jobs {
        let (job_events, finish, job_spoilt) = job(&mut *conn).await;
        events.extend(job_events);
        finishes.push(finish);
        spoilt |= job_spoilt;
    }
    (events, finishes, spoilt)
}

/// The error every operation of a batch gets when one of them spoilt its transaction.
fn spoilt_batch() -> DbError {
    DbError::Query {
        operation: "a group of writes",
        source: sqlx::Error::Protocol(
            "another write of the same group failed without a savepoint, so the group was \
             rolled back"
                .into(),
        ),
    }
}

/// Without its audit entries nothing of the batch may commit.
fn unaudited(e: &AuditError) -> DbError {
    DbError::Query {
        operation: "appending a group's audit entries",
        source: sqlx::Error::Protocol(e.to_string()),
    }
}

/// Runs `jobs` as one batch, in a transaction of the pool's (PostgreSQL).
async fn run_batch(db: &Database, clock: &dyn Clock, jobs: Vec<Job>) {
    let mut tx = match db.begin_write().await {
        Ok(tx) => tx,
        Err(e) => {
            // The jobs never ran; dropping them closes their callers' channels, and
            // each caller reports that its write did not happen.
            tracing::warn!(error = %e, "cannot begin a group commit");
            return;
        }
    };
    let (events, finishes, spoilt) = run_jobs(&mut tx, jobs).await;
    let committed = if spoilt {
        // Dropping the transaction rolls it back.
        drop(tx);
        Err(spoilt_batch())
    } else {
        match audit::append_all(&mut tx, clock, &events).await {
            Ok(_) => tx.commit().await.map_err(|source| DbError::Query {
                operation: "committing a group of writes",
                source,
            }),
            Err(e) => Err(unaudited(&e)),
        }
    };
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()));
    }
}

/// SQLite: `jobs` as one batch on a connection the writer keeps for itself, its
/// transaction begun and ended by hand so that the audit entries, the head's move and
/// `COMMIT` go to SQLite's connection thread in one round trip
/// ([`audit::append_and_commit_sqlite`]): a batch takes its jobs' round trips and three
/// more (`BEGIN IMMEDIATE`, the head's advance, that one) instead of five. After a
/// failure the connection is closed, which rolls back what is open, and the next batch
/// opens another.
async fn run_batch_sqlite(
    db: &Database,
    clock: &dyn Clock,
    own: &mut Option<AnyConnection>,
    jobs: Vec<Job>,
) {
    let _turn = db.write_turn().await;
    let conn = match db.own_connection(own).await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "cannot begin a group commit");
            return;
        }
    };
    if let Err(e) = sqlx::raw_sql("BEGIN IMMEDIATE").execute(&mut *conn).await {
        tracing::warn!(error = %e, "cannot begin a group commit");
        Database::close_own(own).await;
        return;
    }
    let (events, finishes, spoilt) = run_jobs(conn, jobs).await;
    let committed = if spoilt {
        Err(spoilt_batch())
    } else {
        append_and_commit_sqlite(conn, clock, &events).await
    };
    if committed.is_err() {
        Database::close_own(own).await;
    }
    for finish in finishes {
        finish(committed.as_ref().map(|_| ()));
    }
}

/// Appends `events` and commits, on SQLite.
async fn append_and_commit_sqlite(
    conn: &mut AnyConnection,
    clock: &dyn Clock,
    events: &[AuditEvent],
) -> Result<(), DbError> {
    let commit_failed = |source| DbError::Query {
        operation: "committing a group of writes",
        source,
    };
    if events.is_empty() {
        return sqlx::raw_sql("COMMIT")
            .execute(&mut *conn)
            .await
            .map(|_| ())
            .map_err(commit_failed);
    }
    let count = i64::try_from(events.len())
        .map_err(|_| unaudited(&AuditError::Broken("too many events in one append".into())))?;
    let head = sqlx::query(sqlx::AssertSqlSafe(audit::advance_head_sql(1)))
        .bind(count)
        .fetch_one(&mut *conn)
        .await
        .map_err(DbError::query("locking the audit head"))?;
    let entries = audit::chain_after(&head, clock, events.iter()).map_err(|e| unaudited(&e))?;
    audit::append_and_commit_sqlite(&entries)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(commit_failed)
}
