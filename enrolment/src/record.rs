//! The sealed enrolment record: what was checked and decided, by whom, at which desk,
//! and which token and certificates came of it (never a PIN). Its canonical JSON is
//! hashed and the hash signed with the desk's own key in the key store; the clerk's and
//! supervisors' decisions are inside the hashed record, so they are bound to it.

use eid_hsm::KeyLabel;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{Enrolment, EnrolmentError, error::query, staff::DeskSession};

/// A record ready to store.
pub(crate) struct Sealed {
    pub(crate) record: String,
    pub(crate) sha256: String,
    pub(crate) signature: Vec<u8>,
}

/// What the citizen's printed receipt shows.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Receipt {
    pub(crate) reference: String,
    pub(crate) national_id: String,
    pub(crate) given_name: String,
    pub(crate) family_name: String,
    pub(crate) activated_at: String,
    pub(crate) centre: String,
    pub(crate) desk: String,
    pub(crate) carrier: String,
    pub(crate) token_id: String,
    pub(crate) certificates: Vec<String>,
    pub(crate) sha256: String,
}

/// The outcome of checking a stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordCheck {
    /// SHA-256 of the record, hex.
    pub sha256: String,
    /// The key that sealed it.
    pub seal_key: String,
    /// How many earlier records (of replaced cards, before remote credentials) were
    /// checked with it.
    pub superseded: usize,
    /// Whether every hash matches its record and every signature its record, and each
    /// record names the one it superseded.
    pub valid: bool,
}

/// A sealed record as stored.
struct StoredRecord {
    record: String,
    sha256: String,
    signature: Vec<u8>,
    seal_key: String,
}

fn read_stored(row: &sqlx::any::AnyRow) -> Result<StoredRecord, EnrolmentError> {
    let read = |e| query("reading a record")(e);
    Ok(StoredRecord {
        record: row.try_get("record").map_err(read)?,
        sha256: row.try_get("sha256").map_err(read)?,
        signature: row.try_get("signature").map_err(read)?,
        seal_key: row.try_get("seal_key").map_err(read)?,
    })
}

/// The hash of the record a record says it superseded.
fn previous_of(record: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(record)
        .ok()?
        .get("previous_record")?
        .as_str()
        .map(str::to_owned)
}

impl Enrolment {
    /// Builds and signs the record of a finished activation.
    pub(crate) async fn seal_record(
        &self,
        session: &DeskSession,
        application_id: &str,
        activation_id: &str,
    ) -> Result<Sealed, EnrolmentError> {
        let case = self.case(application_id).await?;
        let row = sqlx::query(
            "SELECT carrier, token_id, token_serials, auth_serial, sign_serial, clerk_id, created_at, \
             replaces FROM enrol_activation WHERE activation_id = $1",
        )
        .bind(activation_id)
        .fetch_one(self.ctx().db.pool())
        .await
        .map_err(query("reading an activation"))?;
        let read = |e| query("reading an activation")(e);
        let activation = serde_json::json!({
            "activation_id": activation_id,
            "carrier": row.try_get::<String, _>("carrier").map_err(read)?,
            "token_id": row.try_get::<String, _>("token_id").map_err(read)?,
            "token_serials": row.try_get::<Option<String>, _>("token_serials").map_err(read)?,
            "authentication_certificate": row.try_get::<Option<String>, _>("auth_serial").map_err(read)?,
            "signature_certificate": row.try_get::<Option<String>, _>("sign_serial").map_err(read)?,
            "clerk": row.try_get::<String, _>("clerk_id").map_err(read)?,
            "started_at": row.try_get::<i64, _>("created_at").map_err(read)?,
            "replaces": row.try_get::<Option<String>, _>("replaces").map_err(read)?,
        });
        // The identity's life so far (suspensions, replaced cards, unblocked PINs), and
        // the record this one supersedes, if any: a replacement card's record binds the
        // whole history.
        let lifecycle: Vec<serde_json::Value> = self
            .lifecycle_events(application_id)
            .await?
            .into_iter()
            .map(|e| {
                serde_json::json!({
                    "action": e.action,
                    "reason": e.reason,
                    "note": e.note,
                    "certificates": e.serials,
                    "token": e.token_id,
                    "clerk": e.clerk_id,
                    "supervisor": e.supervisor_id,
                    "desk": e.desk_id,
                    "at": e.created_at,
                })
            })
            .collect();
        let previous_record: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM enrol_record WHERE application_id = $1")
                .bind(application_id)
                .fetch_optional(self.ctx().db.pool())
                .await
                .map_err(query("reading the current record"))?;
        let a = &case.application;
        // serde_json's maps are ordered by key, so this serialisation is canonical.
        let record = serde_json::json!({
            "version": 2,
            "lifecycle": lifecycle,
            "previous_record": previous_record,
            "application": {
                "application_id": a.application_id,
                "reference": a.reference,
                "national_id": a.national_id,
                "given_name": a.given_name,
                "family_name": a.family_name,
                "birth_date": a.birth_date,
                "consent_at": a.consent_at,
                "duplicate_of": a.duplicate_of,
            },
            "documents": case.documents,
            "decisions": case.decisions,
            "exceptions": case.exceptions.iter().map(|(e, approved)| serde_json::json!({
                "key": e.key, "description": e.description, "approved": approved,
            })).collect::<Vec<_>>(),
            "photo_sha256": case.photo_sha256,
            "activation": activation,
            "desk": session.desk.desk_id,
            "centre": session.desk.centre_id,
            "sealed_by": session.staff_id,
            "sealed_at": self.ctx().clock.now().unix_timestamp(),
        });
        let record = serde_json::to_string(&record)
            .map_err(|e| EnrolmentError::internal("serialising the record")(e.to_string()))?;
        let digest = Sha256::digest(record.as_bytes());
        let signer = self
            .ctx()
            .keys
            .signer(&KeyLabel::new(&session.desk.seal_key)?, None)?;
        let signature = signer.sign_async(record.as_bytes().to_vec()).await?;
        Ok(Sealed {
            record,
            sha256: hex::encode(digest),
            signature: signature.into_bytes(),
        })
    }

    /// Checks an identity's sealed records against their hashes and the desks'
    /// signatures: the current one and every one it superseded (an earlier card's),
    /// each of which the next names by its hash.
    pub async fn verify_record(&self, application_id: &str) -> Result<RecordCheck, EnrolmentError> {
        let row = sqlx::query(
            "SELECT record, sha256, signature, seal_key FROM enrol_record WHERE application_id = $1",
        )
        .bind(application_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a record"))?
        .ok_or_else(|| EnrolmentError::NotFound("no sealed record for this application".into()))?;
        let current = read_stored(&row)?;
        let earlier = sqlx::query(
            "SELECT record, sha256, signature, seal_key FROM enrol_record_history \
             WHERE application_id = $1",
        )
        .bind(application_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(query("reading superseded records"))?
        .iter()
        .map(read_stored)
        .collect::<Result<Vec<_>, _>>()?;
        let mut valid = true;
        for stored in std::iter::once(&current).chain(&earlier) {
            valid &= self.seal_holds(stored)?;
        }
        // The chain: from the current record back through each one it names.
        let mut named = previous_of(&current.record);
        let mut linked = 0;
        while let Some(hash) = named {
            match earlier.iter().find(|e| e.sha256 == hash) {
                Some(previous) if linked < earlier.len() => {
                    linked += 1;
                    named = previous_of(&previous.record);
                }
                _ => {
                    valid = false;
                    break;
                }
            }
        }
        valid &= linked == earlier.len();
        Ok(RecordCheck {
            sha256: current.sha256,
            seal_key: current.seal_key,
            superseded: earlier.len(),
            valid,
        })
    }

    /// Whether a stored record's hash matches it and the desk's signature the record.
    fn seal_holds(&self, stored: &StoredRecord) -> Result<bool, EnrolmentError> {
        let key = self
            .ctx()
            .keys
            .find(&KeyLabel::new(&stored.seal_key)?)?
            .ok_or_else(|| {
                EnrolmentError::NotFound(format!("the sealing key {} is gone", stored.seal_key))
            })?;
        let hash_ok = hex::encode(Sha256::digest(stored.record.as_bytes())) == stored.sha256;
        let signature_ok = key
            .public_key
            .verify(
                key.spec.default_scheme(),
                stored.record.as_bytes(),
                &stored.signature,
            )
            .is_ok();
        Ok(hash_ok && signature_ok)
    }

    /// The receipt of an active identity.
    pub(crate) async fn receipt(&self, application_id: &str) -> Result<Receipt, EnrolmentError> {
        let application = self.application(application_id).await?;
        let row = sqlx::query(
            "SELECT r.sha256, r.created_at, d.name AS desk, c.name AS centre, a.carrier, a.token_id, \
             a.auth_serial, a.sign_serial FROM enrol_record r \
             JOIN enrol_desk d ON d.desk_id = r.desk_id JOIN enrol_centre c ON c.centre_id = d.centre_id \
             JOIN enrol_activation a ON a.application_id = r.application_id AND a.state = 'done' \
             WHERE r.application_id = $1 ORDER BY a.updated_at DESC LIMIT 1",
        )
        .bind(application_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a receipt"))?
        .ok_or_else(|| EnrolmentError::NotFound("this identity is not activated yet".into()))?;
        let read = |e| query("reading a receipt")(e);
        let created_at: i64 = row.try_get("created_at").map_err(read)?;
        let activated_at = time::OffsetDateTime::from_unix_timestamp(created_at)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year]-[month]-[day] [hour]:[minute] UTC"
                ))
                .ok()
            })
            .unwrap_or_default();
        Ok(Receipt {
            reference: application.reference,
            national_id: application.national_id,
            given_name: application.given_name,
            family_name: application.family_name,
            activated_at,
            centre: row.try_get("centre").map_err(read)?,
            desk: row.try_get("desk").map_err(read)?,
            carrier: row.try_get("carrier").map_err(read)?,
            token_id: row.try_get("token_id").map_err(read)?,
            certificates: [
                row.try_get::<Option<String>, _>("auth_serial")
                    .map_err(read)?,
                row.try_get::<Option<String>, _>("sign_serial")
                    .map_err(read)?,
            ]
            .into_iter()
            .flatten()
            .collect(),
            sha256: row.try_get("sha256").map_err(read)?,
        })
    }
}
