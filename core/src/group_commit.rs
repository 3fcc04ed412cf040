//! Group commit: write operations from many concurrent requests run in one
//! transaction, each under a savepoint of its own, and every caller learns its outcome
//! only after the transaction commits.
//!
//! A database commit is the expensive part of a small write: SQLite serialises writers,
//! PostgreSQL flushes its WAL, and the audit log's single chain head serialises both.
//! Sharing the commit among the operations waiting at that moment keeps each one's
//! guarantees (its rows and its audit entry commit together or not at all; a failing
//! operation is rolled back to its savepoint without touching the others) at a fraction
//! of the cost.

use std::future::Future;
use std::pin::Pin;

use sqlx::AnyConnection;
use tokio::sync::{mpsc, oneshot};

use crate::{Database, DbError};

/// The future of one write operation, borrowing the batch's connection.
pub type WriteFuture<'c, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>;

/// What the writer runs for one caller: the operation, and how to tell the caller.
type Job = Box<
    dyn for<'c> FnOnce(&'c mut AnyConnection) -> Pin<Box<dyn Future<Output = Finish> + Send + 'c>>
        + Send,
>;

/// Tells the caller how it went, once the batch's fate is known: `Ok(())` when the
/// transaction committed, the commit's error otherwise.
type Finish = Box<dyn FnOnce(Result<(), &DbError>) + Send>;

/// The most operations one transaction carries.
const MAX_BATCH: usize = 64;

/// A handle to a database's group-commit writer. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupCommit {
    jobs: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer for `db` on the current runtime.
    pub fn start(db: Database) -> Self {
        let (jobs, receiver) = mpsc::channel::<Job>(1024);
        tokio::spawn(run(db, receiver));
        Self { jobs }
    }

    /// Runs `operation` in the next batch. Its result is returned after the batch
    /// commits; if the operation fails, its writes are rolled back and the others'
    /// are not; if the commit fails, every operation of the batch fails.
    pub async fn write<T, E>(
        &self,
        operation: impl for<'c> FnOnce(&'c mut AnyConnection) -> WriteFuture<'c, T, E> + Send + 'static,
    ) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let (reply, outcome) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = run_in_savepoint(conn, operation).await;
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
                finish
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

async fn run(db: Database, mut receiver: mpsc::Receiver<Job>) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
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
        for job in jobs {
            finishes.push(job(&mut tx).await);
        }
        let committed = tx.commit().await.map_err(|source| DbError::Query {
            operation: "committing a group of writes",
            source,
        });
        for finish in finishes {
            finish(committed.as_ref().map(|_| ()));
        }
    }
}
