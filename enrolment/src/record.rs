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
    /// Whether the hash matches the record and the signature the hash.
    pub valid: bool,
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
            "SELECT carrier, token_id, token_serials, auth_serial, sign_serial, clerk_id, created_at \
             FROM enrol_activation WHERE activation_id = $1",
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
        });
        let a = &case.application;
        // serde_json's maps are ordered by key, so this serialisation is canonical.
        let record = serde_json::json!({
            "version": 1,
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

    /// Checks a stored record against its hash and the desk's signature.
    pub async fn verify_record(&self, application_id: &str) -> Result<RecordCheck, EnrolmentError> {
        let row = sqlx::query(
            "SELECT record, sha256, signature, seal_key FROM enrol_record WHERE application_id = $1",
        )
        .bind(application_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(query("reading a record"))?
        .ok_or_else(|| EnrolmentError::NotFound("no sealed record for this application".into()))?;
        let read = |e| query("reading a record")(e);
        let record: String = row.try_get("record").map_err(read)?;
        let sha256: String = row.try_get("sha256").map_err(read)?;
        let signature: Vec<u8> = row.try_get("signature").map_err(read)?;
        let seal_key: String = row.try_get("seal_key").map_err(read)?;
        let key = self
            .ctx()
            .keys
            .find(&KeyLabel::new(&seal_key)?)?
            .ok_or_else(|| {
                EnrolmentError::NotFound(format!("the sealing key {seal_key} is gone"))
            })?;
        let hash_ok = hex::encode(Sha256::digest(record.as_bytes())) == sha256;
        let signature_ok = key
            .public_key
            .verify(key.spec.default_scheme(), record.as_bytes(), &signature)
            .is_ok();
        Ok(RecordCheck {
            sha256,
            seal_key,
            valid: hash_ok && signature_ok,
        })
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
