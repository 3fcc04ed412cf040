//! The audit log: append-only, hash-chained, with signed checkpoints.
//!
//! Every state change in eid appends an [`AuditEvent`] **in the same transaction** as
//! the change ([`append`]), so a change without its record (or a record without its
//! change) cannot be committed. Each entry's hash covers its fields and the previous
//! entry's hash. At intervals a service key signs the head of the chain
//! ([`checkpoint`]); [`verify`] recomputes the chain, checks the links, the head and
//! every checkpoint signature, and names the first entry that is wrong.
//!
//! There is no switch to turn any of this off.

use std::fmt;

use eid_hsm::{KeySigner, PublicKey, SignatureScheme};
use sha2::{Digest, Sha256};
use sqlx::Row;
use time::format_description::well_known::Rfc3339;

use crate::{Backend, Clock, Database, DbError};

/// The hash before the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The label of the service key that signs checkpoints.
pub const CHECKPOINT_KEY_LABEL: &str = "eid-audit-checkpoint";

/// How an audited operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The change was made.
    Success,
    /// The operation was refused by policy or authorisation.
    Denied,
    /// The operation failed.
    Failure,
}

impl Outcome {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Denied => "denied",
            Self::Failure => "failure",
        }
    }
}

/// One thing that happened: who did what to which object, with which outcome.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    /// Who: `operator:<name>`, `service:<name>`, `clerk:<id>`, `citizen:<id>`, `system`.
    pub actor: String,
    /// What, as `domain.verb`: `instance.initialise`, `certificate.revoke`, ...
    pub action: String,
    /// The kind of object acted on.
    pub object_type: String,
    /// The object's identifier.
    pub object_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Further facts (JSON object). Never secrets.
    pub details: serde_json::Value,
}

impl AuditEvent {
    /// A successful event with no details.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        object_type: impl Into<String>,
        object_id: impl Into<String>,
    ) -> Self {
        Self {
            actor: actor.into(),
            action: action.into(),
            object_type: object_type.into(),
            object_id: object_id.into(),
            outcome: Outcome::Success,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the details.
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

/// A stored entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// When it was recorded (RFC 3339, UTC).
    pub recorded_at: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// Kind of object.
    pub object_type: String,
    /// Object identifier.
    pub object_id: String,
    /// Outcome name.
    pub outcome: String,
    /// Details as JSON text.
    pub details: String,
    /// The previous entry's hash (hex).
    pub prev_hash: String,
    /// This entry's hash (hex).
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry's content and link should have.
    pub fn computed_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"eid-audit-entry-v1");
        let seq = self.seq.to_string();
        for field in [
            seq.as_str(),
            &self.recorded_at,
            &self.actor,
            &self.action,
            &self.object_type,
            &self.object_id,
            &self.outcome,
            &self.details,
            &self.prev_hash,
        ] {
            // Length-prefixed, so no two different field lists hash the same bytes.
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        hex::encode(hasher.finalize())
    }
}

impl fmt::Display for AuditEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "#{} {} {} {} {}:{} by {}",
            self.seq,
            self.recorded_at,
            self.action,
            self.outcome,
            self.object_type,
            self.object_id,
            self.actor
        )
    }
}

/// Why the audit log could not be written or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The key layer failed to sign or verify a checkpoint.
    #[error("audit checkpoint key: {0}")]
    Key(#[from] eid_hsm::HsmError),
    /// The audit log has been tampered with; the message names the entry.
    #[error("audit log broken: {0}")]
    Broken(String),
}

fn now_text(clock: &dyn Clock) -> String {
    let now = clock.now();
    now.format(&Rfc3339)
        .unwrap_or_else(|_| now.unix_timestamp().to_string())
}

/// Appends `event` inside `tx`, the transaction that makes the change it records.
/// Returns the new entry.
pub async fn append(
    tx: &mut sqlx::AnyConnection,
    clock: &dyn Clock,
    event: &AuditEvent,
) -> Result<AuditEntry, AuditError> {
    let mut entries = append_all(tx, clock, std::slice::from_ref(event)).await?;
    entries
        .pop()
        .ok_or_else(|| AuditError::Broken("appending one event produced no entry".into()))
}

/// The statement that takes the chain head's lock and reserves positions for the
/// entries about to be appended (bind the count, an `i64`, as parameter `$n`); its one
/// row is the input of [`chain_after`]. Taking the head row's lock serialises
/// appenders, so the chain stays linear. Both engines. With `n` = 1 it may follow
/// statements without parameters in one SQLite query (`BEGIN IMMEDIATE; ...`); with a
/// higher `n`, PostgreSQL statements of its own may go in front (a data-modifying
/// `WITH`).
pub fn advance_head_sql(n: usize) -> String {
    format!("UPDATE audit_head SET seq = seq + ${n} WHERE id = 1 RETURNING seq, hash")
}

/// The entries for `events`, chained after the head row that [`advance_head_sql`] returned
/// when it reserved `events.len()` positions, timed now by `clock`. The last entry's
/// hash is the chain's new head: store it with [`SET_HEAD_HASH`]. The events are
/// borrowed, so a caller holding them inside its own records need not copy them.
pub fn chain_after<'a>(
    head: &sqlx::any::AnyRow,
    clock: &dyn Clock,
    events: impl ExactSizeIterator<Item = &'a AuditEvent>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let last_seq: i64 = head
        .try_get("seq")
        .map_err(DbError::query("reading the audit head"))?;
    // The head's hash is the previous entry's until it is set to the last new one.
    let prev_hash: String = head
        .try_get("hash")
        .map_err(DbError::query("reading the audit head"))?;
    chain_from(last_seq, prev_hash, clock, events)
}

/// The entries for `events`, chained after the entry whose hash is `prev_hash`, the
/// last of them at position `last_seq`, timed now by `clock`.
pub fn chain_from<'a>(
    last_seq: i64,
    mut prev_hash: String,
    clock: &dyn Clock,
    events: impl ExactSizeIterator<Item = &'a AuditEvent>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let count = i64::try_from(events.len())
        .map_err(|_| AuditError::Broken("too many events in one append".into()))?;
    let recorded_at = now_text(clock);
    let mut entries = Vec::with_capacity(events.len());
    for (offset, event) in (0..count).rev().zip(events) {
        let mut entry = AuditEntry {
            seq: last_seq - offset,
            recorded_at: recorded_at.clone(),
            actor: event.actor.clone(),
            action: event.action.clone(),
            object_type: event.object_type.clone(),
            object_id: event.object_id.clone(),
            outcome: event.outcome.name().to_owned(),
            details: event.details.to_string(),
            prev_hash,
            hash: String::new(),
        };
        entry.hash = entry.computed_hash();
        prev_hash = entry.hash.clone();
        entries.push(entry);
    }
    Ok(entries)
}

/// SQLite's statement that moves the chain head's hash to the last appended entry's
/// (bind that hash). Its parameter is anonymous, so it can follow [`insert_sql`]'s in
/// one multi-statement query; PostgreSQL does this inside the insert (`append_all`).
pub const SET_HEAD_HASH: &str = "UPDATE audit_head SET hash = ? WHERE id = 1";

/// The INSERT of `rows` entries into the log, parameters as [`Backend::values_rows`]
/// writes them; bind them with [`bind_entries`].
pub fn insert_sql(backend: Backend, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO audit_log (seq, recorded_at, actor, action, object_type, object_id, \
         outcome, details, prev_hash, hash) VALUES ",
    );
    sql.push_str(&backend.values_rows(rows, 10));
    sql
}

/// Binds `entries` to a query holding [`insert_sql`]'s parameters, in its order.
pub fn bind_entries<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    entries: &[AuditEntry],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    for entry in entries {
        query = query
            .bind(entry.seq)
            .bind(entry.recorded_at.clone())
            .bind(entry.actor.clone())
            .bind(entry.action.clone())
            .bind(entry.object_type.clone())
            .bind(entry.object_id.clone())
            .bind(entry.outcome.clone())
            .bind(entry.details.clone())
            .bind(entry.prev_hash.clone())
            .bind(entry.hash.clone());
    }
    query
}

/// Appends `events`, in order, inside `tx`: one lock and one update of the chain head
/// for all of them, and one insert. Returns the new entries.
pub async fn append_all(
    tx: &mut sqlx::AnyConnection,
    clock: &dyn Clock,
    events: &[AuditEvent],
) -> Result<Vec<AuditEntry>, AuditError> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let count = i64::try_from(events.len())
        .map_err(|_| AuditError::Broken("too many events in one append".into()))?;
    let head = sqlx::query(sqlx::AssertSqlSafe(advance_head_sql(1)))
        .bind(count)
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError::query("locking the audit head"))?;
    append_after(tx, &head, clock, events.iter()).await
}

/// SQLite: the statements that append `entries` (chained after the head row
/// [`advance_head_sql`] returned in the transaction open on the connection), move the
/// head's hash to the last of them and commit, bound, as one multi-statement query: one
/// round trip to the connection's thread instead of three. SQLite stops at the first
/// statement that fails and leaves the transaction open; the caller then closes the
/// connection (SQLite rolls the transaction back) or rolls back itself.
pub fn append_and_commit_sqlite(
    entries: &[AuditEntry],
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
    let head_hash = entries.last().map(|e| e.hash.clone()).unwrap_or_default();
    let sql = format!(
        "{}; {SET_HEAD_HASH}; COMMIT",
        insert_sql(Backend::Sqlite, entries.len())
    );
    bind_entries(sqlx::query(sqlx::AssertSqlSafe(sql)), entries).bind(head_hash)
}

/// Appends `events`, in order, inside `tx`, after `head`: the row [`advance_head_sql`]
/// returned when it reserved their positions in this transaction. Returns the new
/// entries.
pub async fn append_after<'a>(
    tx: &mut sqlx::AnyConnection,
    head: &sqlx::any::AnyRow,
    clock: &dyn Clock,
    events: impl ExactSizeIterator<Item = &'a AuditEvent>,
) -> Result<Vec<AuditEntry>, AuditError> {
    let entries = chain_after(head, clock, events)?;
    let head_hash = entries
        .last()
        .map(|entry| entry.hash.clone())
        .ok_or_else(|| AuditError::Broken("appending produced no entry".into()))?;
    // PostgreSQL advances the head in the same statement (one round trip less for every
    // group commit); SQLite, without data-modifying WITH, in a second one below.
    let backend = if tx.backend_name() == "PostgreSQL" {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    if backend == Backend::Postgres {
        let sql = format!(
            "WITH appended AS ({}) UPDATE audit_head SET hash = ${} WHERE id = 1",
            insert_sql(backend, entries.len()),
            entries.len() * 10 + 1
        );
        bind_entries(sqlx::query(sqlx::AssertSqlSafe(sql)), &entries)
            .bind(head_hash)
            .execute(&mut *tx)
            .await
            .map_err(DbError::query("appending to the audit log"))?;
        return Ok(entries);
    }
    bind_entries(
        sqlx::query(sqlx::AssertSqlSafe(insert_sql(backend, entries.len()))),
        &entries,
    )
    .execute(&mut *tx)
    .await
    .map_err(DbError::query("appending to the audit log"))?;
    sqlx::query(SET_HEAD_HASH)
        .bind(head_hash)
        .execute(&mut *tx)
        .await
        .map_err(DbError::query("advancing the audit head"))?;
    Ok(entries)
}

/// Records `event` in a transaction of its own (for events that change nothing else,
/// such as a refused request).
pub async fn record(
    db: &Database,
    clock: &dyn Clock,
    event: &AuditEvent,
) -> Result<AuditEntry, AuditError> {
    let mut tx = db.begin_write().await?;
    let entry = append(&mut tx, clock, event).await?;
    tx.commit()
        .await
        .map_err(DbError::query("committing an audit event"))?;
    Ok(entry)
}

/// A signed statement that the chain up to `upto_seq` has head hash `head_hash`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last entry covered.
    pub upto_seq: i64,
    /// That entry's hash.
    pub head_hash: String,
    /// When it was signed.
    pub signed_at: String,
    /// Label of the signing key.
    pub key_label: String,
    /// Signature scheme name.
    pub scheme: String,
    /// The signing key's public key (SPKI DER, hex).
    pub public_key: String,
    /// The signature (hex).
    pub signature: String,
}

impl Checkpoint {
    /// The bytes that are signed.
    pub fn signed_message(&self) -> Vec<u8> {
        format!(
            "eid-audit-checkpoint-v1\n{}\n{}\n{}\n{}",
            self.upto_seq, self.head_hash, self.signed_at, self.key_label
        )
        .into_bytes()
    }
}

/// Signs the current head unless the last checkpoint already covers it. Returns the new
/// checkpoint, if one was made.
pub async fn checkpoint(
    db: &Database,
    clock: &dyn Clock,
    signer: &KeySigner,
) -> Result<Option<Checkpoint>, AuditError> {
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .map_err(DbError::query("reading the audit head"))?;
    let upto_seq: i64 = head
        .try_get("seq")
        .map_err(DbError::query("reading the audit head"))?;
    let head_hash: String = head
        .try_get("hash")
        .map_err(DbError::query("reading the audit head"))?;
    let last: Option<i64> = sqlx::query("SELECT MAX(upto_seq) AS last FROM audit_checkpoint")
        .fetch_one(db.pool())
        .await
        .and_then(|row| row.try_get("last"))
        .map_err(DbError::query("reading the last checkpoint"))?;
    if upto_seq == 0 || last.is_some_and(|last| last >= upto_seq) {
        return Ok(None);
    }
    let mut checkpoint = Checkpoint {
        upto_seq,
        head_hash,
        signed_at: now_text(clock),
        key_label: signer.info().label.to_string(),
        scheme: signer.scheme().name().to_owned(),
        public_key: hex::encode(signer.public_key().to_der()?),
        signature: String::new(),
    };
    let signature = signer.sign_async(checkpoint.signed_message()).await?;
    checkpoint.signature = hex::encode(signature.as_bytes());
    let inserted = sqlx::query(
        "INSERT INTO audit_checkpoint (upto_seq, head_hash, signed_at, key_label, scheme, \
         public_key, signature) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (upto_seq) DO NOTHING",
    )
    .bind(checkpoint.upto_seq)
    .bind(&checkpoint.head_hash)
    .bind(&checkpoint.signed_at)
    .bind(&checkpoint.key_label)
    .bind(&checkpoint.scheme)
    .bind(&checkpoint.public_key)
    .bind(&checkpoint.signature)
    .execute(db.pool())
    .await
    .map_err(DbError::query("storing an audit checkpoint"))?;
    // Another process may have checkpointed the same head a moment earlier.
    Ok((inserted.rows_affected() == 1).then_some(checkpoint))
}

/// What a successful verification found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// Entries checked.
    pub entries: i64,
    /// Checkpoints whose signatures verified.
    pub checkpoints: usize,
    /// The last checkpoint's position, if any.
    pub last_checkpoint: Option<i64>,
    /// The head hash.
    pub head_hash: String,
}

fn entry_from_row(row: &sqlx::any::AnyRow) -> Result<AuditEntry, DbError> {
    let get = |name: &str| -> Result<String, DbError> {
        row.try_get::<String, _>(name)
            .map_err(DbError::query("reading an audit entry"))
    };
    Ok(AuditEntry {
        seq: row
            .try_get("seq")
            .map_err(DbError::query("reading an audit entry"))?,
        recorded_at: get("recorded_at")?,
        actor: get("actor")?,
        action: get("action")?,
        object_type: get("object_type")?,
        object_id: get("object_id")?,
        outcome: get("outcome")?,
        details: get("details")?,
        prev_hash: get("prev_hash")?,
        hash: get("hash")?,
    })
}

/// Checks the whole chain and every checkpoint. `trusted_key` is the checkpoint key's
/// public key from the key store; checkpoints signed by any other key are rejected.
///
/// Returns [`AuditError::Broken`] naming the first entry found wrong.
pub async fn verify(db: &Database, trusted_key: &PublicKey) -> Result<VerifyReport, AuditError> {
    let rows = sqlx::query(
        "SELECT seq, recorded_at, actor, action, object_type, object_id, outcome, details, \
         prev_hash, hash FROM audit_log ORDER BY seq",
    )
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("reading the audit log"))?;
    let checkpoints = load_checkpoints(db).await?;
    let mut checkpoint_iter = checkpoints.iter().peekable();

    let mut expected_seq = 1_i64;
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut previous: Option<AuditEntry> = None;
    let mut verified_checkpoints = 0;
    for row in &rows {
        let entry = entry_from_row(row)?;
        if entry.seq != expected_seq {
            let after = previous
                .as_ref()
                .map_or_else(|| "the start".to_owned(), |p| format!("entry {p}"));
            return Err(AuditError::Broken(format!(
                "entry #{expected_seq} is missing (deleted): after {after} the next entry is #{}",
                entry.seq
            )));
        }
        if entry.computed_hash() != entry.hash {
            return Err(AuditError::Broken(format!(
                "entry {entry} was modified: its content does not match its stored hash"
            )));
        }
        if entry.prev_hash != prev_hash {
            let culprit = previous
                .as_ref()
                .map_or_else(|| "the first entry".to_owned(), |p| format!("entry {p}"));
            return Err(AuditError::Broken(format!(
                "entry {entry} does not link to {culprit}: that entry was modified or replaced, \
                 or the entries were reordered"
            )));
        }
        while let Some(checkpoint) = checkpoint_iter.next_if(|c| c.upto_seq == entry.seq) {
            if checkpoint.head_hash != entry.hash {
                return Err(AuditError::Broken(format!(
                    "entry {entry} differs from what the checkpoint signed at {} covers: the \
                     chain up to it was rewritten",
                    checkpoint.signed_at
                )));
            }
            verify_checkpoint(checkpoint, trusted_key)?;
            verified_checkpoints += 1;
        }
        prev_hash = entry.hash.clone();
        expected_seq += 1;
        previous = Some(entry);
    }
    if let Some(checkpoint) = checkpoint_iter.next() {
        return Err(AuditError::Broken(format!(
            "entry #{} is missing (deleted): a checkpoint signed at {} covers the log up to it, \
             but the log ends at #{}",
            checkpoint.upto_seq,
            checkpoint.signed_at,
            expected_seq - 1
        )));
    }
    let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
        .fetch_one(db.pool())
        .await
        .map_err(DbError::query("reading the audit head"))?;
    let head_seq: i64 = head
        .try_get("seq")
        .map_err(DbError::query("reading the audit head"))?;
    let head_hash: String = head
        .try_get("hash")
        .map_err(DbError::query("reading the audit head"))?;
    if head_seq != expected_seq - 1 {
        return Err(AuditError::Broken(format!(
            "entry #{} is missing (deleted): the chain head says entry #{head_seq} is last, but \
             the log ends at #{}",
            expected_seq,
            expected_seq - 1
        )));
    }
    if head_hash != prev_hash {
        let last = previous.map_or_else(|| "#0".to_owned(), |p| p.to_string());
        return Err(AuditError::Broken(format!(
            "entry {last} was modified or replaced: it no longer matches the chain head"
        )));
    }
    Ok(VerifyReport {
        entries: expected_seq - 1,
        checkpoints: verified_checkpoints,
        last_checkpoint: checkpoints.last().map(|c| c.upto_seq),
        head_hash,
    })
}

async fn load_checkpoints(db: &Database) -> Result<Vec<Checkpoint>, AuditError> {
    let rows = sqlx::query(
        "SELECT upto_seq, head_hash, signed_at, key_label, scheme, public_key, signature \
         FROM audit_checkpoint ORDER BY upto_seq",
    )
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("reading audit checkpoints"))?;
    rows.iter()
        .map(|row| {
            let get = |name: &str| -> Result<String, DbError> {
                row.try_get::<String, _>(name)
                    .map_err(DbError::query("reading an audit checkpoint"))
            };
            Ok(Checkpoint {
                upto_seq: row
                    .try_get("upto_seq")
                    .map_err(DbError::query("reading an audit checkpoint"))?,
                head_hash: get("head_hash")?,
                signed_at: get("signed_at")?,
                key_label: get("key_label")?,
                scheme: get("scheme")?,
                public_key: get("public_key")?,
                signature: get("signature")?,
            })
        })
        .collect()
}

fn verify_checkpoint(checkpoint: &Checkpoint, trusted_key: &PublicKey) -> Result<(), AuditError> {
    let broken = |why: String| {
        AuditError::Broken(format!(
            "checkpoint at entry #{} (signed {}): {why}",
            checkpoint.upto_seq, checkpoint.signed_at
        ))
    };
    let stated_key = hex::decode(&checkpoint.public_key)
        .map_err(|_| broken("its public key is not hex".into()))?;
    if stated_key != trusted_key.to_der()? {
        return Err(broken(format!(
            "it was signed by a key other than the audit checkpoint key `{}`",
            checkpoint.key_label
        )));
    }
    let scheme = SignatureScheme::parse(&checkpoint.scheme).map_err(|e| broken(e.to_string()))?;
    let signature = hex::decode(&checkpoint.signature)
        .map_err(|_| broken("its signature is not hex".into()))?;
    trusted_key
        .verify(scheme, &checkpoint.signed_message(), &signature)
        .map_err(|e| broken(format!("the signature does not verify ({e})")))
}

/// The last `limit` entries, newest last.
pub async fn tail(db: &Database, limit: i64) -> Result<Vec<AuditEntry>, AuditError> {
    let rows = sqlx::query(
        "SELECT seq, recorded_at, actor, action, object_type, object_id, outcome, details, \
         prev_hash, hash FROM audit_log ORDER BY seq DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(db.pool())
    .await
    .map_err(DbError::query("reading the audit log"))?;
    let mut entries = rows
        .iter()
        .map(entry_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    entries.reverse();
    Ok(entries)
}
