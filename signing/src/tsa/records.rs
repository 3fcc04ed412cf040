//! The record of issued tokens: their `tsa.timestamp.issue` audit entries, written by
//! one task in batches (gathered while other requests are being signed: see
//! [`gather`]).
//!
//! The audit entry is the record (serial, genTime, policy, imprint, nonce, TSU): the
//! chained log is what an auditor trusts, and a table of its own repeating each
//! entry's facts cost a row, a key and seven parameters a token (its INSERT left out:
//! 25.7k -> 26.9k tokens/s, three interleaved runs each, README). A partial unique
//! index on the entries' serials (`audit_log_tsa_serial`) is the final guard that no
//! serial repeats across restarts and replicas; the view `timestamp_token` reads them
//! as a table.
//!
//! The shared group commit (`eid_core::group_commit`) runs each operation under a
//! savepoint of its own, which is what failure isolation between unrelated writes
//! needs; measured here it held the TSA to about 3,000 tokens/s on SQLite and 2,000 on
//! PostgreSQL while HTTP and signing alone reached over 6,000. A token record has one
//! way to fail on its own (a serial clash, never seen with 72 random bits per
//! millisecond), so the TSA writes the waiting records with one append, in one
//! transaction; on a clash the whole batch fails and every caller signs again with a
//! new serial (none of the batch's tokens was released).

use eid_core::{AuditEvent, Backend, DbError, ServiceContext, audit};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};

use crate::TsaError;

/// The most records one transaction carries (10 parameters each: well inside SQLite's
/// and PostgreSQL's parameter limits).
const MAX_BATCH: usize = 256;

/// The unique index that keeps token serials unique (migration 0026).
const SERIAL_INDEX: &str = "audit_log_tsa_serial";

#[derive(Clone, Debug)]
enum BatchError {
    Duplicate,
    Failed(String),
}

type Job = (AuditEvent, oneshot::Sender<Result<(), BatchError>>);

/// Hands records to the writer task. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct RecordWriter {
    jobs: mpsc::Sender<Job>,
}

impl RecordWriter {
    /// Starts the writer on the current runtime; it stops when every handle is gone.
    pub(crate) fn start(ctx: ServiceContext) -> Self {
        let (jobs, receiver) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(ctx, receiver));
        Self { jobs }
    }

    /// Records a token's audit entry; returns once its transaction committed.
    pub(crate) async fn write(&self, record: AuditEvent) -> Result<(), TsaError> {
        let (reply, outcome) = oneshot::channel();
        self.jobs
            .send((record, reply))
            .await
            .map_err(|_| TsaError::Task("the token record writer has stopped".into()))?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(BatchError::Duplicate)) => Err(TsaError::DuplicateSerial),
            Ok(Err(BatchError::Failed(e))) => {
                Err(TsaError::Task(format!("recording time-stamp tokens: {e}")))
            }
            Err(_) => Err(TsaError::Task("the token record writer has stopped".into())),
        }
    }
}

async fn run(ctx: ServiceContext, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut own = None;
    let mut last_head = None;
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        gather(&mut receiver, &mut batch).await;
        let (records, replies): (Vec<AuditEvent>, Vec<_>) = batch.drain(..).unzip();
        let result = if ctx.db.backend() == Backend::Sqlite {
            write_batch_sqlite(&ctx, &mut own, &records).await
        } else {
            write_batch_postgres(&ctx, &mut own, &mut last_head, &records).await
        };
        if let Err(BatchError::Failed(e)) = &result {
            tracing::error!(error = %e, count = records.len(), "cannot record time-stamp tokens");
        }
        for reply in replies {
            // A caller that went away loses nothing: its token was never released.
            let _ = reply.send(result.clone());
        }
    }
}

/// Adds to `batch` the records of the requests that were ready to run when the writer
/// woke: it steps back once behind them (requests being parsed and signed) and takes
/// what they queued. On a loaded server batches grow from about 5 to 50 records at 128
/// clients and each token's share of a transaction shrinks; on an idle one nothing new
/// arrives and the batch is written at once, so a lone request waits no longer.
///
/// Once, not until a round brings nothing: gathering on until no request was left
/// ready to run (batches of about 90) started every transaction just when the cores had
/// nothing else to do, and they stayed idle through it (12% of the time at full load);
/// one step back leaves requests to sign while the batch is written. Measured with
/// `wrk` at 128 connections on this machine, interleaved runs: 18.8-20.0k tokens/s with
/// one round, 16.9-17.7k until nothing new, 16.8-17.4k without gathering.
async fn gather(receiver: &mut mpsc::Receiver<Job>, batch: &mut Vec<Job>) {
    tokio::task::yield_now().await;
    while batch.len() < MAX_BATCH {
        match receiver.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
}

/// A failed append: a clash of serials (the serial index's unique violation) or another
/// failure.
fn insert_failed(e: sqlx::Error) -> BatchError {
    match e {
        sqlx::Error::Database(e)
            if e.is_unique_violation()
                && (e.constraint() == Some(SERIAL_INDEX)
                    || e.message().contains("audit_log.object_id")) =>
        {
            BatchError::Duplicate
        }
        e => BatchError::Failed(
            DbError::Query {
                operation: "recording time-stamp tokens",
                source: e,
            }
            .to_string(),
        ),
    }
}

/// SQLite: the batch in two round trips to the connection's thread instead of five
/// (begin, lock the audit head, insert the entries, move the head, commit), on a
/// connection the writer keeps for itself. Each round trip waits for
/// that thread and then for this task to be scheduled again among the requests being
/// signed: a transaction of about 50 records took 1.7 ms in six, 1.0 ms in two
/// (measured under `wrk`, 128 connections). SQLite runs the statements of one query in
/// order and stops at the first that fails; the transaction is then still open, so the
/// connection is closed (SQLite rolls it back) and the next batch opens another.
/// Nothing of a failed batch stays.
async fn write_batch_sqlite(
    ctx: &ServiceContext,
    own: &mut Option<sqlx::AnyConnection>,
    records: &[AuditEvent],
) -> Result<(), BatchError> {
    let failed = |e: &dyn std::fmt::Display| BatchError::Failed(e.to_string());
    let _turn = ctx.db.write_turn().await;
    let conn = ctx
        .db
        .own_connection(own)
        .await
        .map_err(|e| BatchError::Failed(e.to_string()))?;
    let result = async {
        let count = i64::try_from(records.len()).map_err(|e| failed(&e))?;
        let head = sqlx::query(sqlx::AssertSqlSafe(format!(
            "BEGIN IMMEDIATE; {}",
            audit::advance_head_sql(1)
        )))
        .bind(count)
        // Not fetch_one: through the Any driver that reads only the first result,
        // which is BEGIN's.
        .fetch_all(&mut *conn)
        .await
        .map_err(DbError::query("locking the audit head"))
        .map_err(|e| failed(&e))?;
        let head = head
            .first()
            .ok_or_else(|| BatchError::Failed("the audit head row is missing".into()))?;
        let entries =
            audit::chain_after(head, ctx.clock.as_ref(), records.iter()).map_err(|e| failed(&e))?;
        audit::append_and_commit_sqlite(&entries)
            .execute(&mut *conn)
            .await
            .map_err(insert_failed)?;
        Ok(())
    }
    .await;
    if result.is_err() {
        eid_core::Database::close_own(own).await;
    }
    result
}

/// The head as the writer last left it: the last entry's position and hash.
type Head = (i64, String);

/// PostgreSQL's append when the chain head is still `$3`/`$4` (the writer's last): the
/// head moves to `$1`/`$2` and the entries in `$5` (a JSON array of rows) go in, in one
/// statement that commits on its own. When another writer appended meanwhile the head
/// does not match, nothing is written and no row comes back from `head`. The text
/// never changes, so the connection prepares it once.
const APPEND_IF_HEAD: &str = "WITH head AS (\
        UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1 AND seq = $3 AND hash = $4 \
        RETURNING seq), \
    appended AS (INSERT INTO audit_log (seq, recorded_at, actor, action, object_type, \
        object_id, outcome, details, prev_hash, hash) \
        SELECT e.seq, e.recorded_at, e.actor, e.action, e.object_type, e.object_id, \
        e.outcome, e.details, e.prev_hash, e.hash \
        FROM json_populate_recordset(NULL::audit_log, $5::json) AS e \
        WHERE EXISTS (SELECT 1 FROM head)) \
    SELECT COUNT(*) AS moved FROM head";

/// The entries in `$2` (a JSON array of rows), the head's hash moved to `$1`, inside
/// the transaction that advanced the head.
const APPEND_LOCKED: &str = "WITH appended AS (INSERT INTO audit_log (seq, recorded_at, \
        actor, action, object_type, object_id, outcome, details, prev_hash, hash) \
        SELECT e.seq, e.recorded_at, e.actor, e.action, e.object_type, e.object_id, \
        e.outcome, e.details, e.prev_hash, e.hash \
        FROM json_populate_recordset(NULL::audit_log, $2::json) AS e) \
    UPDATE audit_head SET hash = $1 WHERE id = 1";

/// `entries` as the JSON array of rows the statements above take.
fn entries_json(entries: &[audit::AuditEntry]) -> String {
    serde_json::Value::Array(
        entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "seq": e.seq,
                    "recorded_at": e.recorded_at,
                    "actor": e.actor,
                    "action": e.action,
                    "object_type": e.object_type,
                    "object_id": e.object_id,
                    "outcome": e.outcome,
                    "details": e.details,
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                })
            })
            .collect(),
    )
    .to_string()
}

/// PostgreSQL: the batch in one round trip while this writer is the chain's only
/// appender, on a connection it keeps for itself: the entries are chained after the
/// head it left last time and [`APPEND_IF_HEAD`] writes them and moves the head if it
/// is still there, committing as it goes. Otherwise (the first batch, or another
/// writer appended meanwhile) in four: `BEGIN`, the head's advance under its lock, the
/// entries, `COMMIT`. Each statement's text is fixed (the rows travel as one JSON
/// parameter), so none is parsed again. A batch of 66 records took 3.8 ms in five
/// round trips, with a new statement for most batch sizes (README). On any failure the
/// connection is closed (an open transaction rolls back) and the head forgotten.
async fn write_batch_postgres(
    ctx: &ServiceContext,
    own: &mut Option<sqlx::AnyConnection>,
    last: &mut Option<Head>,
    records: &[AuditEvent],
) -> Result<(), BatchError> {
    let failed = |e: &dyn std::fmt::Display| BatchError::Failed(e.to_string());
    let conn = ctx
        .db
        .own_connection(own)
        .await
        .map_err(|e| BatchError::Failed(e.to_string()))?;
    let result = async {
        let count = i64::try_from(records.len()).map_err(|e| failed(&e))?;
        if let Some((seq, hash)) = last.take() {
            let entries = audit::chain_from(
                seq + count,
                hash.clone(),
                ctx.clock.as_ref(),
                records.iter(),
            )
            .map_err(|e| failed(&e))?;
            let new_head = last_head(&entries)?;
            let moved: i64 = sqlx::query(APPEND_IF_HEAD)
                .bind(new_head.0)
                .bind(new_head.1.clone())
                .bind(seq)
                .bind(hash)
                .bind(entries_json(&entries))
                .fetch_one(&mut *conn)
                .await
                .map_err(insert_failed)?
                .try_get("moved")
                .map_err(|e| failed(&e))?;
            if moved == 1 {
                return Ok(new_head);
            }
        }
        use sqlx::Connection;
        let mut tx = conn.begin().await.map_err(|e| failed(&e))?;
        let head = sqlx::query(sqlx::AssertSqlSafe(audit::advance_head_sql(1)))
            .bind(count)
            .fetch_one(&mut *tx)
            .await
            .map_err(DbError::query("locking the audit head"))
            .map_err(|e| failed(&e))?;
        let entries = audit::chain_after(&head, ctx.clock.as_ref(), records.iter())
            .map_err(|e| failed(&e))?;
        let new_head = last_head(&entries)?;
        sqlx::query(APPEND_LOCKED)
            .bind(new_head.1.clone())
            .bind(entries_json(&entries))
            .execute(&mut *tx)
            .await
            .map_err(insert_failed)?;
        tx.commit().await.map_err(|e| failed(&e))?;
        Ok(new_head)
    }
    .await;
    match result {
        Ok(head) => {
            *last = Some(head);
            Ok(())
        }
        Err(e) => {
            eid_core::Database::close_own(own).await;
            Err(e)
        }
    }
}

/// The head `entries` leave: the last one's position and hash.
fn last_head(entries: &[audit::AuditEntry]) -> Result<Head, BatchError> {
    entries
        .last()
        .map(|e| (e.seq, e.hash.clone()))
        .ok_or_else(|| BatchError::Failed("an empty batch".into()))
}
