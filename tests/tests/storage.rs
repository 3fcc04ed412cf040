//! Storage and audit-log tests, mounted once for SQLite and once for PostgreSQL.
#![allow(clippy::unwrap_used, unreachable_pub)]

use std::sync::Arc;

use eid_core::{
    Clock, Database, FixedClock,
    audit::{self, AuditError, AuditEvent},
};
use eid_hsm::{KeyLabel, KeyRole, KeySigner, KeySpec, KeyStore, SoftSecret, SoftStoreOptions};
use eid_tests::{TestBackend, TestDatabase, on_both_backends};
use sqlx::Row;

struct Fixture {
    db: Database,
    _test_db: TestDatabase,
    _keys_dir: tempfile::TempDir,
    clock: Arc<FixedClock>,
    signer: KeySigner,
}

async fn fixture(backend: TestBackend) -> Fixture {
    let test_db = TestDatabase::create(backend).await.unwrap();
    let db = test_db.connect().await.unwrap();
    let keys_dir = tempfile::tempdir().unwrap();
    let store = KeyStore::open_soft(SoftStoreOptions::new(
        keys_dir.path().join("keys"),
        SoftSecret::KeyFile {
            path: keys_dir.path().join("store.key"),
            create_if_missing: true,
        },
        true,
    ))
    .unwrap();
    let label = KeyLabel::new(audit::CHECKPOINT_KEY_LABEL).unwrap();
    store
        .generate(&label, KeySpec::EcP256, KeyRole::Service)
        .unwrap();
    let signer = store.signer(&label, None).unwrap();
    Fixture {
        db,
        _test_db: test_db,
        _keys_dir: keys_dir,
        clock: Arc::new(FixedClock::new(
            time::macros::datetime!(2026-11-21 09:00 UTC),
        )),
        signer,
    }
}

fn event(n: usize) -> AuditEvent {
    AuditEvent::new("operator:test", "thing.change", "thing", format!("T{n}"))
        .details(serde_json::json!({ "n": n }))
}

async fn append_events(f: &Fixture, count: usize) {
    for n in 0..count {
        audit::record(&f.db, f.clock.as_ref(), &event(n))
            .await
            .unwrap();
        f.clock.advance(time::Duration::seconds(1));
    }
}

async fn count(db: &Database, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(db.pool())
    .await
    .unwrap()
    .try_get("n")
    .unwrap()
}

/// Runs SQL as the database owner would, with the append-only triggers out of the way,
/// to play an attacker who has write access to the database.
async fn tamper(db: &Database, sql: &str) {
    let mut conn = db.pool().acquire().await.unwrap();
    match db.backend() {
        eid_core::Backend::Sqlite => {
            sqlx::raw_sql(
                "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete; \
                 DROP TRIGGER IF EXISTS audit_checkpoint_no_update; DROP TRIGGER IF EXISTS audit_checkpoint_no_delete;",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
        }
        _ => {
            sqlx::raw_sql(
                "ALTER TABLE audit_log DISABLE TRIGGER USER; ALTER TABLE audit_checkpoint DISABLE TRIGGER USER;",
            )
            .execute(&mut *conn)
            .await
            .unwrap();
        }
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut *conn)
        .await
        .unwrap();
}

async fn broken(f: &Fixture) -> String {
    match audit::verify(&f.db, f.signer.public_key()).await {
        Err(AuditError::Broken(why)) => why,
        other => panic!("expected a broken audit log, got {other:?}"),
    }
}

async fn migrations_are_idempotent(backend: TestBackend) {
    let f = fixture(backend).await;
    f.db.migrate().await.unwrap();
    f.db.migrate().await.unwrap();
    assert_eq!(count(&f.db, "audit_head").await, 1);
    assert_eq!(count(&f.db, "audit_log").await, 0);
}

async fn chain_verifies_and_checkpoints_cover_the_head(backend: TestBackend) {
    let f = fixture(backend).await;
    let report = audit::verify(&f.db, f.signer.public_key()).await.unwrap();
    assert_eq!(report.entries, 0);
    assert!(
        audit::checkpoint(&f.db, f.clock.as_ref(), &f.signer)
            .await
            .unwrap()
            .is_none()
    );

    append_events(&f, 5).await;
    let checkpoint = audit::checkpoint(&f.db, f.clock.as_ref(), &f.signer)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.upto_seq, 5);
    // Nothing new: no second checkpoint of the same head.
    assert!(
        audit::checkpoint(&f.db, f.clock.as_ref(), &f.signer)
            .await
            .unwrap()
            .is_none()
    );
    append_events(&f, 3).await;
    let report = audit::verify(&f.db, f.signer.public_key()).await.unwrap();
    assert_eq!(report.entries, 8);
    assert_eq!(report.checkpoints, 1);
    assert_eq!(report.last_checkpoint, Some(5));
    let tail = audit::tail(&f.db, 2).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7, 8]);
    assert_eq!(tail[1].object_id, "T2");
    assert_eq!(tail[0].recorded_at, "2026-11-21T09:00:06Z");
}

async fn entry_is_written_with_its_change_or_not_at_all(backend: TestBackend) {
    let f = fixture(backend).await;
    {
        let mut tx = f.db.begin_write().await.unwrap();
        audit::append(&mut tx, f.clock.as_ref(), &event(1))
            .await
            .unwrap();
        tx.rollback().await.unwrap();
    }
    assert_eq!(count(&f.db, "audit_log").await, 0);
    let head: i64 = sqlx::query("SELECT seq FROM audit_head WHERE id = 1")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .try_get("seq")
        .unwrap();
    assert_eq!(head, 0, "a rolled-back append must not advance the head");
    append_events(&f, 1).await;
    assert_eq!(
        audit::verify(&f.db, f.signer.public_key())
            .await
            .unwrap()
            .entries,
        1
    );
}

async fn concurrent_appends_keep_one_linear_chain(backend: TestBackend) {
    let f = fixture(backend).await;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let db = f.db.clone();
        let clock: Arc<dyn Clock> = f.clock.clone();
        tasks.spawn(async move {
            for n in 0..20 {
                audit::record(&db, clock.as_ref(), &event(worker * 100 + n))
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let report = audit::verify(&f.db, f.signer.public_key()).await.unwrap();
    assert_eq!(report.entries, 160);
}

async fn append_only_in_the_database(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 2).await;
    let update = sqlx::query("UPDATE audit_log SET actor = 'x' WHERE seq = 1")
        .execute(f.db.pool())
        .await;
    assert!(update.is_err(), "UPDATE on audit_log must be refused");
    let delete = sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(f.db.pool())
        .await;
    assert!(delete.is_err(), "DELETE on audit_log must be refused");
    assert_eq!(count(&f.db, "audit_log").await, 2);
}

async fn modified_entry_is_named(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 4).await;
    tamper(
        &f.db,
        "UPDATE audit_log SET object_id = 'T99' WHERE seq = 3",
    )
    .await;
    let why = broken(&f).await;
    assert!(why.contains("#3") && why.contains("modified"), "{why}");
}

async fn modified_entry_with_recomputed_hash_is_named(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 4).await;
    // Rewrite entry 2 and give it a correct hash of its new content: its successor's
    // link gives it away.
    let mut entry = audit::tail(&f.db, 4).await.unwrap().remove(1);
    entry.actor = "operator:mallory".into();
    let hash = entry.computed_hash();
    tamper(
        &f.db,
        &format!("UPDATE audit_log SET actor = 'operator:mallory', hash = '{hash}' WHERE seq = 2"),
    )
    .await;
    let why = broken(&f).await;
    assert!(why.contains("#3") && why.contains("entry #2"), "{why}");
}

async fn deleted_entry_is_named(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 5).await;
    tamper(&f.db, "DELETE FROM audit_log WHERE seq = 3").await;
    let why = broken(&f).await;
    assert!(why.contains("#3 is missing"), "{why}");
}

async fn deleted_tail_is_found(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 5).await;
    tamper(&f.db, "DELETE FROM audit_log WHERE seq = 5").await;
    let why = broken(&f).await;
    assert!(why.contains("#5 is missing"), "{why}");
}

async fn reordered_entries_are_found(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 4).await;
    // Swap the content of entries 2 and 3, keeping their positions.
    tamper(
        &f.db,
        "UPDATE audit_log SET seq = -2 WHERE seq = 2; UPDATE audit_log SET seq = 2 WHERE seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE seq = -2;",
    )
    .await;
    let why = broken(&f).await;
    assert!(why.contains("#2"), "{why}");
}

async fn rewritten_chain_is_caught_by_the_signed_checkpoint(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 3).await;
    audit::checkpoint(&f.db, f.clock.as_ref(), &f.signer)
        .await
        .unwrap()
        .unwrap();
    // Rebuild the whole chain with entry 1 changed and every hash recomputed, head too.
    let mut entries = audit::tail(&f.db, 3).await.unwrap();
    entries[0].actor = "operator:mallory".into();
    let mut prev = audit::GENESIS_HASH.to_owned();
    let mut sql = String::new();
    for entry in &mut entries {
        entry.prev_hash = prev.clone();
        entry.hash = entry.computed_hash();
        sql.push_str(&format!(
            "UPDATE audit_log SET actor = '{}', prev_hash = '{}', hash = '{}' WHERE seq = {};",
            entry.actor, entry.prev_hash, entry.hash, entry.seq
        ));
        prev = entry.hash.clone();
    }
    sql.push_str(&format!(
        "UPDATE audit_head SET hash = '{prev}' WHERE id = 1;"
    ));
    tamper(&f.db, &sql).await;
    let why = broken(&f).await;
    assert!(why.contains("#3") && why.contains("rewritten"), "{why}");
}

async fn forged_checkpoint_is_refused(backend: TestBackend) {
    let f = fixture(backend).await;
    append_events(&f, 2).await;
    let checkpoint = audit::checkpoint(&f.db, f.clock.as_ref(), &f.signer)
        .await
        .unwrap()
        .unwrap();
    let mut signature = hex::decode(&checkpoint.signature).unwrap();
    let last = signature.len() - 1;
    signature[last] ^= 1;
    tamper(
        &f.db,
        &format!(
            "UPDATE audit_checkpoint SET signature = '{}' WHERE upto_seq = 2",
            hex::encode(signature)
        ),
    )
    .await;
    let why = broken(&f).await;
    assert!(why.contains("checkpoint at entry #2"), "{why}");
}

async fn group_commit_keeps_each_operation_whole(backend: TestBackend) {
    let f = fixture(backend).await;
    let clock: Arc<dyn Clock> = f.clock.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..60_i64 {
        let db = f.db.clone();
        let clock = clock.clone();
        tasks.spawn(async move {
            db.group_commit(&clock)
                .write(move |conn| {
                    Box::pin(async move {
                        // A real write, then (every third operation) a failure: the
                        // write must be rolled back and its audit event never appended.
                        sqlx::query("UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1")
                            .execute(&mut *conn)
                            .await
                            .map_err(eid_core::DbError::query("counting"))?;
                        if n % 3 == 0 {
                            sqlx::query("INSERT INTO no_such_table (x) VALUES (1)")
                                .execute(&mut *conn)
                                .await
                                .map_err(eid_core::DbError::query("failing on purpose"))?;
                        }
                        Ok::<_, AuditError>(eid_core::group_commit::Written {
                            value: n,
                            audit: vec![event(n as usize)],
                        })
                    })
                })
                .await
        });
    }
    let mut succeeded = 0;
    let mut failed = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(n) => {
                assert_ne!(n % 3, 0);
                succeeded += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert_eq!((succeeded, failed), (40, 20));
    let epoch: i64 = sqlx::query("SELECT epoch FROM revocation_epoch WHERE id = 1")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .try_get("epoch")
        .unwrap();
    assert_eq!(epoch, 40, "only the successful operations' writes remain");
    let report = audit::verify(&f.db, f.signer.public_key()).await.unwrap();
    assert_eq!(
        report.entries, 40,
        "only the successful operations' entries were appended"
    );
    let ids: Vec<String> = audit::tail(&f.db, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.object_id)
        .collect();
    assert!(
        ids.iter()
            .all(|id| id[1..].parse::<usize>().unwrap() % 3 != 0),
        "{ids:?}"
    );
}

/// Operations without a savepoint: one that fails takes its whole group down with it
/// (on PostgreSQL the transaction cannot go on), and exactly the callers told "done"
/// have their writes and audit entries stored.
async fn group_commit_without_savepoints_fails_whole_groups(backend: TestBackend) {
    let f = fixture(backend).await;
    let clock: Arc<dyn Clock> = f.clock.clone();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..60_i64 {
        let db = f.db.clone();
        let clock = clock.clone();
        tasks.spawn(async move {
            db.group_commit(&clock)
                .write_without_savepoint(move |conn| {
                    Box::pin(async move {
                        let sql = if n % 20 == 7 {
                            "UPDATE no_such_table SET x = 1"
                        } else {
                            "UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1"
                        };
                        sqlx::query(sql)
                            .execute(&mut *conn)
                            .await
                            .map_err(eid_core::DbError::query("counting"))?;
                        Ok::<_, AuditError>(eid_core::group_commit::Written {
                            value: n,
                            audit: vec![event(n as usize)],
                        })
                    })
                })
                .await
        });
    }
    let mut succeeded = 0;
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            Ok(n) => {
                assert_ne!(n % 20, 7);
                succeeded += 1;
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    assert!(succeeded <= 57, "the three failing operations failed");
    let epoch: i64 = sqlx::query("SELECT epoch FROM revocation_epoch WHERE id = 1")
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .try_get("epoch")
        .unwrap();
    assert_eq!(epoch, succeeded, "exactly the reported writes are stored");
    let report = audit::verify(&f.db, f.signer.public_key()).await.unwrap();
    assert_eq!(report.entries, succeeded);
}

on_both_backends!(
    expired_login_rows_are_purged,
    group_commit_keeps_each_operation_whole,
    group_commit_without_savepoints_fails_whole_groups,
    migrations_are_idempotent,
    chain_verifies_and_checkpoints_cover_the_head,
    entry_is_written_with_its_change_or_not_at_all,
    concurrent_appends_keep_one_linear_chain,
    append_only_in_the_database,
    modified_entry_is_named,
    modified_entry_with_recomputed_hash_is_named,
    deleted_entry_is_named,
    deleted_tail_is_found,
    reordered_entries_are_found,
    rewritten_chain_is_caught_by_the_signed_checkpoint,
    forged_checkpoint_is_refused,
);

/// The identity provider's short-lived rows go a day after they expire; younger ones
/// stay.
async fn expired_login_rows_are_purged(backend: TestBackend) {
    let f = fixture(backend).await;
    let now = f.clock.now().unix_timestamp();
    for (id, expires_at) in [("old", now - 2 * 86_400), ("young", now - 3_600)] {
        sqlx::query(
            "INSERT INTO idp_interaction (interaction_id, browser_sha256, client_id, request, \
             state, created_at, expires_at) VALUES ($1, 'b', 'c', '{}', 'login', $2, $2)",
        )
        .bind(id)
        .bind(expires_at)
        .execute(f.db.pool())
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO idp_mobile_auth (auth_id, purpose, phone_number, national_id, hash, \
             gateway_session, state, created_at, expires_at) \
             VALUES ($1, 'login', '+18685550100', '1', 'h', 's', 'failed', $2, $2)",
        )
        .bind(id)
        .bind(expires_at)
        .execute(f.db.pool())
        .await
        .unwrap();
    }
    let purged = eid_idp::flow::purge_expired(&f.db, now).await.unwrap();
    assert_eq!(purged, 2);
    for table in ["idp_interaction", "idp_mobile_auth"] {
        let left: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table}"
        )))
        .fetch_one(f.db.pool())
        .await
        .unwrap()
        .get("n");
        assert_eq!(left, 1, "{table}");
    }
}
