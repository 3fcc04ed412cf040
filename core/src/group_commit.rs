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
        let mut tx = match db.begin_write().await {
            Ok(tx) => tx,
            Err(e) => {
                // The jobs never ran; dropping them closes their callers' channels, and
                // each caller reports that its write did not happen.
                tracing::warn!(error = %e, "cannot begin a group commit");
                drop(jobs);
                continue;
            }
        };
        let mut finishes = Vec::with_capacity(jobs.len());
        let mut events = Vec::new();
        let mut spoilt = false;
        for job in jobs {
            let (job_events, finish, job_spoilt) = job(&mut tx).await;
            events.extend(job_events);
            finishes.push(finish);
            spoilt |= job_spoilt;
        }
        let committed = if spoilt {
            // Dropping the transaction rolls it back.
            drop(tx);
            Err(DbError::Query {
                operation: "a group of writes",
                source: sqlx::Error::Protocol(
                    "another write of the same group failed without a savepoint, so the \
                     group was rolled back"
                        .into(),
                ),
            })
        } else {
            let appended: Result<(), AuditError> =
                audit::append_all(&mut tx, clock.as_ref(), &events)
                    .await
                    .map(|_| ());
            match appended {
                Ok(()) => tx.commit().await.map_err(|source| DbError::Query {
                    operation: "committing a group of writes",
                    source,
                }),
                // Without its audit entries nothing of the batch may commit.
                Err(e) => Err(DbError::Query {
                    operation: "appending a group's audit entries",
                    source: sqlx::Error::Protocol(e.to_string()),
                }),
            }
        };
        for finish in finishes {
            finish(committed.as_ref().map(|_| ()));
        }
    }
}
