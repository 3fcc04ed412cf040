//! Stale rows of the signature services go a day after they expire: signature
//! authorisations of the CSC API (spent or not) and pending signatures that were never
//! finished; finished signatures and younger rows stay. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use common::{Keys, Tsa, os_silent};
use eid_tests::{TestBackend, on_both_backends};
use sqlx::Row;

async fn count(tsa: &Tsa, table: &str) -> i64 {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) AS n FROM {table}"
    )))
    .fetch_one(tsa.ctx.db.pool())
    .await
    .unwrap()
    .get("n")
}

async fn expired_rows_are_purged(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let now = tsa.ctx.clock.now().unix_timestamp();
    let db = tsa.ctx.db.pool();
    sqlx::query(
        "INSERT INTO csc_credential (credential_id, national_id, key_label, certificate, \
         serial, status, pin_hash, pin_failures, created_by, created_at, updated_at) \
         VALUES ('csc-1', '3900101123456', 'csc-1', $1, '01', 'active', 'h', 0, 't', $2, $2)",
    )
    .bind(vec![0x30u8, 0x00])
    .bind(now)
    .execute(db)
    .await
    .unwrap();
    let old = now - 2 * 86_400;
    let young = now - 3_600;
    for (key, expires_at) in [("old", old), ("young", young)] {
        sqlx::query(
            "INSERT INTO csc_authorization (sad_sha256, credential_id, client_id, \
             hash_algorithm, hashes, created_at, expires_at) \
             VALUES ($1, 'csc-1', 'c', '2.16.840.1.101.3.4.2.1', '[]', $2, $2)",
        )
        .bind(key)
        .bind(expires_at)
        .execute(db)
        .await
        .unwrap();
    }
    for (id, expires_at, state) in [
        ("old-pending", old, "pending"),
        ("old-refused", old, "refused"),
        ("old-completed", old, "completed"),
        ("young-pending", young, "pending"),
    ] {
        sqlx::query(
            "INSERT INTO pending_signature (id, client, level, signer_serial, signer_issuer, \
             certificate, digest_algorithm, document_digest, signature_scheme, \
             signed_attributes, created_at, expires_at, state, format) \
             VALUES ($1, 'portal', 'LT', '01', 'ca', 'pem', 'sha256', 'd', 'ecdsa-sha256', \
             'a', 'now', $2, $3, 'cades')",
        )
        .bind(id)
        .bind(expires_at)
        .bind(state)
        .execute(db)
        .await
        .unwrap();
    }
    let purged = eid_signing::csc::purge_expired(&tsa.ctx.db, now)
        .await
        .unwrap();
    assert_eq!(purged, 3);
    assert_eq!(count(&tsa, "csc_authorization").await, 1);
    let left: Vec<String> = sqlx::query("SELECT id FROM pending_signature ORDER BY id")
        .fetch_all(db)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id"))
        .collect();
    assert_eq!(left, ["old-completed", "young-pending"]);
}

on_both_backends!(expired_rows_are_purged);
