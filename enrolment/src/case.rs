//! A citizen's case at the desk: consent, the two identity documents (every MRZ check
//! digit, expiry, names and birth date compared with the application), an optional
//! photo, the exceptions that need a supervisor, and the clerk's decision.
//!
//! Every change is one transaction with its audit event, and every change that moves
//! the case on checks the version the clerk's page showed, so a double submission or a
//! second clerk's change is refused instead of applied twice.

use eid_core::{AuditEvent, audit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::{
    Application, ApplicationStatus, Enrolment, EnrolmentError,
    applications::birth_date,
    error::query,
    mrz::{self, MrzFormat},
    names, new_id,
    staff::DeskSession,
};

/// What the clerk types about a document.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct DocumentInput {
    /// Document type code (from `[[enrolment.document_type]]`).
    pub doc_type: String,
    /// Issuing state or authority.
    #[serde(default)]
    pub issuer: String,
    /// Document number.
    pub number: String,
    /// Expiry date, `YYYY-MM-DD`.
    pub expiry: String,
    /// The machine-readable zone, for documents that have one.
    #[serde(default)]
    pub mrz: String,
    /// Surname as printed (documents without a zone).
    #[serde(default)]
    pub surname: String,
    /// Given names as printed (documents without a zone).
    #[serde(default)]
    pub given_names: String,
    /// Date of birth as printed (documents without a zone), `YYYY-MM-DD`.
    #[serde(default)]
    pub birth_date: String,
}

/// A document recorded on a case.
#[derive(Clone, Debug, Serialize)]
pub struct Document {
    /// Id.
    pub document_id: String,
    /// Type code.
    pub doc_type: String,
    /// Issuer.
    pub issuer: String,
    /// Number.
    pub number: String,
    /// Expiry date.
    pub expiry: String,
    /// Whether it carried a zone (all of whose check digits were right).
    pub mrz_checked: bool,
    /// Surname on the document.
    pub surname: String,
    /// Given names on the document.
    pub given_names: String,
    /// Birth date on the document.
    pub birth_date: String,
    /// Whether the names match the application.
    pub name_matches: bool,
    /// Whether the birth date matches.
    pub birth_matches: bool,
    /// Who recorded it.
    pub recorded_by: String,
}

/// A decision on a case.
#[derive(Clone, Debug, Serialize)]
pub struct Decision {
    /// `exception`, `approve` or `reject`.
    pub kind: String,
    /// The clerk.
    pub clerk_id: String,
    /// The approving supervisor (exceptions).
    pub supervisor_id: Option<String>,
    /// The reason, or the exceptions approved.
    pub reason: Option<String>,
    /// When.
    pub created_at: i64,
}

/// Something a supervisor must approve before the case can go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exception {
    /// Stable key (what an approval covers).
    pub key: String,
    /// What the clerk and supervisor read.
    pub description: String,
}

/// Everything the desk shows about a case.
#[derive(Clone, Debug, Serialize)]
pub struct Case {
    /// The application.
    pub application: Application,
    /// Documents recorded.
    pub documents: Vec<Document>,
    /// Decisions taken.
    pub decisions: Vec<Decision>,
    /// Exceptions, each with whether a supervisor approved it.
    pub exceptions: Vec<(Exception, bool)>,
    /// SHA-256 of the photo, if one was captured.
    pub photo_sha256: Option<String>,
}

impl Case {
    /// Exceptions no supervisor has approved yet.
    pub fn open_exceptions(&self) -> Vec<&Exception> {
        self.exceptions
            .iter()
            .filter(|(_, approved)| !approved)
            .map(|(e, _)| e)
            .collect()
    }

    /// What still stands between the case and approval, for the page.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.application.consent_at.is_none() {
            missing.push("the citizen's consent".to_owned());
        }
        if self.documents.len() < 2 {
            missing.push(format!(
                "{} more identity document(s)",
                2 - self.documents.len()
            ));
        }
        let open = self.open_exceptions().len();
        if open > 0 {
            missing.push(format!("a supervisor's approval of {open} exception(s)"));
        }
        missing
    }
}

fn read_document(row: &sqlx::any::AnyRow) -> Result<Document, EnrolmentError> {
    let read = |e| query("reading a document")(e);
    let mrz: Option<String> = row.try_get("mrz").map_err(read)?;
    let name_matches: i64 = row.try_get("name_matches").map_err(read)?;
    let birth_matches: i64 = row.try_get("birth_matches").map_err(read)?;
    Ok(Document {
        document_id: row.try_get("document_id").map_err(read)?,
        doc_type: row.try_get("doc_type").map_err(read)?,
        issuer: row.try_get("issuer").map_err(read)?,
        number: row.try_get("number").map_err(read)?,
        expiry: row.try_get("expiry").map_err(read)?,
        mrz_checked: mrz.is_some(),
        surname: row
            .try_get::<Option<String>, _>("surname")
            .map_err(read)?
            .unwrap_or_default(),
        given_names: row
            .try_get::<Option<String>, _>("given_names")
            .map_err(read)?
            .unwrap_or_default(),
        birth_date: row
            .try_get::<Option<String>, _>("birth_date")
            .map_err(read)?
            .unwrap_or_default(),
        name_matches: name_matches != 0,
        birth_matches: birth_matches != 0,
        recorded_by: row.try_get("recorded_by").map_err(read)?,
    })
}

/// The exceptions a case raises.
fn exceptions_of(application: &Application, documents: &[Document]) -> Vec<Exception> {
    let mut out = Vec::new();
    if let Some(other) = &application.duplicate_of {
        out.push(Exception {
            key: format!("duplicate:{other}"),
            description:
                "another application has the same name and date of birth (possible duplicate)"
                    .into(),
        });
    }
    for d in documents {
        if !d.name_matches {
            out.push(Exception {
                key: format!("name:{}", d.document_id),
                description: format!(
                    "the name on the {} ({} {}) differs from the application ({} {})",
                    d.doc_type,
                    d.given_names,
                    d.surname,
                    application.given_name,
                    application.family_name
                ),
            });
        }
        if !d.birth_matches {
            out.push(Exception {
                key: format!("birth:{}", d.document_id),
                description: format!(
                    "the date of birth on the {} ({}) differs from the application ({})",
                    d.doc_type, d.birth_date, application.birth_date
                ),
            });
        }
    }
    out
}

fn normalise_number(number: &str) -> String {
    number
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// What the checks of one document concluded.
struct CheckedDocument {
    doc_type: String,
    issuer: String,
    number: String,
    expiry: String,
    mrz: Option<String>,
    surname: String,
    given_names: String,
    birth_date: String,
}

impl Enrolment {
    /// The case: application, documents, decisions, exceptions.
    pub async fn case(&self, application_id: &str) -> Result<Case, EnrolmentError> {
        let application = self.application(application_id).await?;
        let pool = self.ctx().db.pool();
        let documents = sqlx::query(
            "SELECT document_id, doc_type, issuer, number, expiry, mrz, surname, given_names, \
             birth_date, name_matches, birth_matches, recorded_by FROM enrol_document \
             WHERE application_id = $1 ORDER BY created_at, document_id",
        )
        .bind(application_id)
        .fetch_all(pool)
        .await
        .map_err(query("reading documents"))?
        .iter()
        .map(read_document)
        .collect::<Result<Vec<_>, _>>()?;
        let decisions = sqlx::query(
            "SELECT kind, clerk_id, supervisor_id, reason, created_at FROM enrol_decision \
             WHERE application_id = $1 ORDER BY created_at, decision_id",
        )
        .bind(application_id)
        .fetch_all(pool)
        .await
        .map_err(query("reading decisions"))?
        .iter()
        .map(|row| {
            let read = |e| query("reading a decision")(e);
            Ok(Decision {
                kind: row.try_get("kind").map_err(read)?,
                clerk_id: row.try_get("clerk_id").map_err(read)?,
                supervisor_id: row.try_get("supervisor_id").map_err(read)?,
                reason: row.try_get("reason").map_err(read)?,
                created_at: row.try_get("created_at").map_err(read)?,
            })
        })
        .collect::<Result<Vec<_>, EnrolmentError>>()?;
        let approved: Vec<String> = decisions
            .iter()
            .filter(|d| d.kind == "exception")
            .filter_map(|d| d.reason.as_deref())
            .filter_map(|r| serde_json::from_str::<Vec<String>>(r).ok())
            .flatten()
            .collect();
        let exceptions = exceptions_of(&application, &documents)
            .into_iter()
            .map(|e| {
                let ok = approved.contains(&e.key);
                (e, ok)
            })
            .collect();
        let photo_sha256: Option<String> =
            sqlx::query_scalar("SELECT sha256 FROM enrol_photo WHERE application_id = $1")
                .bind(application_id)
                .fetch_optional(pool)
                .await
                .map_err(query("reading a photo"))?;
        Ok(Case {
            application,
            documents,
            decisions,
            exceptions,
            photo_sha256,
        })
    }

    /// Moves the application's version on, refusing if it is not `version` any more
    /// (a double submission or another clerk's change) or not in one of `states`.
    pub(crate) async fn advance(
        &self,
        tx: &mut eid_core::WriteTx,
        application: &Application,
        version: i64,
        states: &[ApplicationStatus],
        set_status: Option<(ApplicationStatus, Option<&str>)>,
    ) -> Result<(), EnrolmentError> {
        if !states.contains(&application.status) {
            return Err(EnrolmentError::Conflict(format!(
                "the application is {}; this step is not possible now",
                application.status.name()
            )));
        }
        let now = self.ctx().clock.now().unix_timestamp();
        let (status, reason) = set_status.map(|(s, r)| (s.name(), r)).unwrap_or((
            application.status.name(),
            application.status_reason.as_deref(),
        ));
        // `since` moves only when the status does (relying services ask since when).
        let changed = sqlx::query(
            "UPDATE enrol_application SET version = version + 1, updated_at = $1, \
             status_since = CASE WHEN status = $2 THEN status_since ELSE $1 END, status = $2, \
             status_reason = $3 WHERE application_id = $4 AND version = $5",
        )
        .bind(now)
        .bind(status)
        .bind(reason)
        .bind(&application.application_id)
        .bind(version)
        .execute(&mut **tx)
        .await
        .map_err(query("updating an application"))?
        .rows_affected();
        if changed == 0 {
            return Err(EnrolmentError::Conflict(
                "the application changed since this page was shown (submitted twice?): reload it"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Records that the citizen consents to the processing of their data.
    pub(crate) async fn record_consent(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
    ) -> Result<(), EnrolmentError> {
        let application = self.application(application_id).await?;
        if application.consent_at.is_some() {
            return Err(EnrolmentError::Conflict(
                "the citizen's consent is already recorded".into(),
            ));
        }
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        self.advance(
            &mut tx,
            &application,
            version,
            &[ApplicationStatus::Pending],
            None,
        )
        .await?;
        sqlx::query(
            "UPDATE enrol_application SET consent_at = $1, consent_by = $2 WHERE application_id = $3",
        )
        .bind(ctx.clock.now().unix_timestamp())
        .bind(&session.staff_id)
        .bind(application_id)
        .execute(&mut *tx)
        .await
        .map_err(query("recording consent"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.consent.record",
                "application",
                application_id,
            )
            .details(serde_json::json!({ "centre": session.desk.centre_id, "notice": "v1" })),
        )
        .await?;
        tx.commit().await.map_err(query("recording consent"))?;
        Ok(())
    }

    fn check_document(
        &self,
        input: &DocumentInput,
        application: &Application,
    ) -> Result<CheckedDocument, EnrolmentError> {
        let config = &self.ctx().config.enrolment;
        let today = self.ctx().clock.now().date();
        let doc_type = config
            .document_types
            .iter()
            .find(|t| t.code == input.doc_type)
            .ok_or_else(|| {
                EnrolmentError::Invalid(format!(
                    "document type {:?} is not one this desk accepts",
                    input.doc_type
                ))
            })?;
        let number = normalise_number(&input.number);
        if number.is_empty() || number.len() > 30 {
            return Err(EnrolmentError::Invalid(
                "document number: 1 to 30 letters and digits".into(),
            ));
        }
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let expiry = time::Date::parse(input.expiry.trim(), &format).map_err(|_| {
            EnrolmentError::Invalid(format!(
                "expiry date {:?} is not a date like 2031-12-31",
                input.expiry.trim()
            ))
        })?;
        if expiry < today {
            return Err(EnrolmentError::Invalid(format!(
                "the {} expired on {expiry}: expired documents are not accepted",
                doc_type.name
            )));
        }
        let issuer = input.issuer.trim().to_uppercase();
        if let Some(layout) = &doc_type.mrz {
            if input.mrz.trim().is_empty() {
                return Err(EnrolmentError::Invalid(format!(
                    "a {} has a machine-readable zone: type or scan it",
                    doc_type.name
                )));
            }
            let zone =
                mrz::parse(&input.mrz).map_err(|e| EnrolmentError::Invalid(e.to_string()))?;
            let expected = match layout.as_str() {
                "td1" => MrzFormat::Td1,
                "td2" => MrzFormat::Td2,
                _ => MrzFormat::Td3,
            };
            if zone.format != expected {
                return Err(EnrolmentError::Invalid(format!(
                    "a {} carries a {} zone, but this one is {}",
                    doc_type.name,
                    expected.name(),
                    zone.format.name()
                )));
            }
            if normalise_number(&zone.document_number) != number {
                return Err(EnrolmentError::Invalid(format!(
                    "the document number typed ({number}) differs from the zone's ({})",
                    zone.document_number
                )));
            }
            let zone_expiry = zone.expiry_date.as_expiry_date(today).ok_or_else(|| {
                EnrolmentError::Invalid("the zone's expiry date is not a date".into())
            })?;
            if zone_expiry != expiry {
                return Err(EnrolmentError::Invalid(format!(
                    "the expiry date typed ({expiry}) differs from the zone's ({zone_expiry})"
                )));
            }
            if !issuer.is_empty() && issuer != zone.issuing_state {
                return Err(EnrolmentError::Invalid(format!(
                    "the issuer typed ({issuer}) differs from the zone's issuing state ({})",
                    zone.issuing_state
                )));
            }
            let birth = zone
                .birth_date
                .as_birth_date(today)
                .map(|d| d.to_string())
                .unwrap_or_else(|| zone.birth_date.to_string());
            Ok(CheckedDocument {
                doc_type: doc_type.code.clone(),
                issuer: zone.issuing_state.clone(),
                number,
                expiry: expiry.to_string(),
                mrz: Some(
                    input
                        .mrz
                        .lines()
                        .map(|l| l.trim().to_ascii_uppercase())
                        .filter(|l| !l.is_empty())
                        .collect::<Vec<_>>()
                        .join("\n"),
                ),
                surname: zone.surname,
                given_names: zone.given_names,
                birth_date: birth,
            })
        } else {
            if issuer.is_empty() || issuer.chars().count() > 80 {
                return Err(EnrolmentError::Invalid(
                    "issuer: who issued the document (1 to 80 characters)".into(),
                ));
            }
            let surname = input
                .surname
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let given_names = input
                .given_names
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            if surname.is_empty() || given_names.is_empty() {
                return Err(EnrolmentError::Invalid(
                    "type the surname and given names as printed on the document".into(),
                ));
            }
            let birth = if input.birth_date.trim().is_empty() {
                application.birth_date.clone()
            } else {
                birth_date(&input.birth_date, today)?.to_string()
            };
            Ok(CheckedDocument {
                doc_type: doc_type.code.clone(),
                issuer,
                number,
                expiry: expiry.to_string(),
                mrz: None,
                surname,
                given_names,
                birth_date: birth,
            })
        }
    }

    /// Records an identity document after every check; returns whether it matches the
    /// application (a mismatch becomes an exception for a supervisor).
    pub(crate) async fn record_document(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        input: &DocumentInput,
    ) -> Result<Document, EnrolmentError> {
        let application = self.application(application_id).await?;
        let checked = self.check_document(input, &application)?;
        let name_matches = names::same(&checked.surname, &application.family_name)
            && names::same(&checked.given_names, &application.given_name);
        let birth_matches = checked.birth_date == application.birth_date;
        let ctx = self.ctx();
        let document_id = new_id("doc");
        let mut tx = ctx.db.begin_write().await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT document_id FROM enrol_document WHERE application_id = $1 AND doc_type = $2 \
             AND number = $3",
        )
        .bind(application_id)
        .bind(&checked.doc_type)
        .bind(&checked.number)
        .fetch_optional(&mut *tx)
        .await
        .map_err(query("checking documents"))?;
        if exists.is_some() {
            return Err(EnrolmentError::Conflict(format!(
                "this {} ({}) is already recorded on the case",
                checked.doc_type, checked.number
            )));
        }
        self.advance(
            &mut tx,
            &application,
            version,
            &[ApplicationStatus::Pending],
            None,
        )
        .await?;
        sqlx::query(
            "INSERT INTO enrol_document (document_id, application_id, doc_type, issuer, number, \
             expiry, mrz, surname, given_names, birth_date, name_matches, birth_matches, \
             recorded_by, desk_id, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&document_id)
        .bind(application_id)
        .bind(&checked.doc_type)
        .bind(&checked.issuer)
        .bind(&checked.number)
        .bind(&checked.expiry)
        .bind(checked.mrz.as_deref())
        .bind(&checked.surname)
        .bind(&checked.given_names)
        .bind(&checked.birth_date)
        .bind(i64::from(name_matches))
        .bind(i64::from(birth_matches))
        .bind(&session.staff_id)
        .bind(&session.desk.desk_id)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("storing a document"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.document.record",
                "application",
                application_id,
            )
            .details(serde_json::json!({
                "document_id": document_id,
                "type": checked.doc_type,
                "issuer": checked.issuer,
                "number": checked.number,
                "expiry": checked.expiry,
                "mrz_checked": checked.mrz.is_some(),
                "name_matches": name_matches,
                "birth_matches": birth_matches,
                "centre": session.desk.centre_id,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("storing a document"))?;
        Ok(Document {
            document_id,
            doc_type: checked.doc_type,
            issuer: checked.issuer,
            number: checked.number,
            expiry: checked.expiry,
            mrz_checked: checked.mrz.is_some(),
            surname: checked.surname,
            given_names: checked.given_names,
            birth_date: checked.birth_date,
            name_matches,
            birth_matches,
            recorded_by: session.staff_id.clone(),
        })
    }

    /// Records a document that failed its checks, so the audit log shows the attempt
    /// (nothing is stored on the case).
    pub(crate) async fn record_refused_document(
        &self,
        session: &DeskSession,
        application_id: &str,
        input: &DocumentInput,
        reason: &str,
    ) -> Result<(), EnrolmentError> {
        self.append_refusal(
            session,
            "enrolment.document.record",
            application_id,
            serde_json::json!({ "type": input.doc_type, "reason": reason }),
        )
        .await
    }

    pub(crate) async fn append_refusal(
        &self,
        session: &DeskSession,
        action: &str,
        application_id: &str,
        details: serde_json::Value,
    ) -> Result<(), EnrolmentError> {
        audit::record(
            &self.ctx().db,
            self.ctx().clock.as_ref(),
            &AuditEvent::new(session.actor(), action, "application", application_id)
                .outcome(eid_core::Outcome::Denied)
                .details(details),
        )
        .await?;
        Ok(())
    }

    /// Stores the photo captured at the desk (JPEG or PNG, at most 2 MB) with its hash.
    pub(crate) async fn record_photo(
        &self,
        session: &DeskSession,
        application_id: &str,
        image: &[u8],
    ) -> Result<String, EnrolmentError> {
        let media_type = if image.starts_with(&[0xff, 0xd8, 0xff]) {
            "image/jpeg"
        } else if image.starts_with(b"\x89PNG\r\n\x1a\n") {
            "image/png"
        } else {
            return Err(EnrolmentError::Invalid(
                "the photo must be a JPEG or PNG image".into(),
            ));
        };
        if image.len() > 2 * 1024 * 1024 {
            return Err(EnrolmentError::Invalid(
                "the photo is larger than 2 MB".into(),
            ));
        }
        let application = self.application(application_id).await?;
        if application.status != ApplicationStatus::Pending {
            return Err(EnrolmentError::Conflict(format!(
                "the application is {}; the photo can no longer change",
                application.status.name()
            )));
        }
        let sha256 = hex::encode(Sha256::digest(image));
        let ctx = self.ctx();
        let now = ctx.clock.now().unix_timestamp();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query("DELETE FROM enrol_photo WHERE application_id = $1")
            .bind(application_id)
            .execute(&mut *tx)
            .await
            .map_err(query("replacing a photo"))?;
        sqlx::query(
            "INSERT INTO enrol_photo (application_id, image, media_type, sha256, recorded_by, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(application_id)
        .bind(image.to_vec())
        .bind(media_type)
        .bind(&sha256)
        .bind(&session.staff_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(query("storing a photo"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                "enrolment.photo.record",
                "application",
                application_id,
            )
            .details(serde_json::json!({ "sha256": sha256, "media_type": media_type })),
        )
        .await?;
        tx.commit().await.map_err(query("storing a photo"))?;
        Ok(sha256)
    }

    /// The stored photo and its media type.
    pub(crate) async fn photo(
        &self,
        application_id: &str,
    ) -> Result<Option<(Vec<u8>, String)>, EnrolmentError> {
        let row =
            sqlx::query("SELECT image, media_type FROM enrol_photo WHERE application_id = $1")
                .bind(application_id)
                .fetch_optional(self.ctx().db.pool())
                .await
                .map_err(query("reading a photo"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |e| query("reading a photo")(e);
        Ok(Some((
            row.try_get("image").map_err(read)?,
            row.try_get("media_type").map_err(read)?,
        )))
    }

    /// Checks that `supervisor` may approve this case's exceptions: a supervisor, not the
    /// clerk, and not someone who recorded any of its evidence.
    pub(crate) fn may_approve(
        session: &DeskSession,
        case: &Case,
        supervisor_id: &str,
        role: crate::Role,
    ) -> Result<(), EnrolmentError> {
        if supervisor_id == session.staff_id
            || case
                .documents
                .iter()
                .any(|d| d.recorded_by == supervisor_id)
        {
            return Err(EnrolmentError::Forbidden(
                "nobody approves their own case: another supervisor must authenticate".into(),
            ));
        }
        if !role.approves() {
            return Err(EnrolmentError::Forbidden(format!(
                "`{supervisor_id}` is not a supervisor"
            )));
        }
        Ok(())
    }

    /// Records a supervisor's approval of the case's open exceptions (the supervisor has
    /// just authenticated separately at this desk).
    pub(crate) async fn approve_exceptions(
        &self,
        session: &DeskSession,
        application_id: &str,
        supervisor_id: &str,
        role: crate::Role,
        version: i64,
    ) -> Result<usize, EnrolmentError> {
        let case = self.case(application_id).await?;
        if let Err(e) = Self::may_approve(session, &case, supervisor_id, role) {
            self.append_refusal(
                session,
                "enrolment.exception.approve",
                application_id,
                serde_json::json!({ "supervisor": supervisor_id, "reason": e.to_string() }),
            )
            .await?;
            return Err(e);
        }
        let open: Vec<String> = case
            .open_exceptions()
            .iter()
            .map(|e| e.key.clone())
            .collect();
        if open.is_empty() {
            return Err(EnrolmentError::Conflict(
                "there is no exception to approve".into(),
            ));
        }
        let ctx = self.ctx();
        let mut tx = ctx.db.begin_write().await?;
        self.advance(
            &mut tx,
            &case.application,
            version,
            &[ApplicationStatus::Pending],
            None,
        )
        .await?;
        let keys = serde_json::to_string(&open)
            .map_err(|e| EnrolmentError::internal("recording an approval")(e.to_string()))?;
        sqlx::query(
            "INSERT INTO enrol_decision (decision_id, application_id, kind, clerk_id, \
             supervisor_id, desk_id, reason, created_at) \
             VALUES ($1, $2, 'exception', $3, $4, $5, $6, $7)",
        )
        .bind(new_id("dec"))
        .bind(application_id)
        .bind(&session.staff_id)
        .bind(supervisor_id)
        .bind(&session.desk.desk_id)
        .bind(&keys)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("recording an approval"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                format!("staff:{supervisor_id}@desk:{}", session.desk.desk_id),
                "enrolment.exception.approve",
                "application",
                application_id,
            )
            .details(serde_json::json!({
                "clerk": session.staff_id,
                "supervisor": supervisor_id,
                "exceptions": open,
                "centre": session.desk.centre_id,
            })),
        )
        .await?;
        tx.commit().await.map_err(query("recording an approval"))?;
        Ok(open.len())
    }

    /// The clerk approves a complete case: consent, two documents, no open exception.
    pub(crate) async fn approve_case(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
    ) -> Result<(), EnrolmentError> {
        let case = self.case(application_id).await?;
        let missing = case.missing();
        if !missing.is_empty() && case.application.status == ApplicationStatus::Pending {
            return Err(EnrolmentError::Conflict(format!(
                "the case still needs {}",
                missing.join(", ")
            )));
        }
        self.decide(session, &case.application, version, "approve", None)
            .await
    }

    /// The clerk rejects the application, with a reason.
    pub(crate) async fn reject_case(
        &self,
        session: &DeskSession,
        application_id: &str,
        version: i64,
        reason: &str,
    ) -> Result<(), EnrolmentError> {
        let reason = reason.split_whitespace().collect::<Vec<_>>().join(" ");
        if reason.is_empty() {
            return Err(EnrolmentError::Invalid("a rejection needs a reason".into()));
        }
        if reason.chars().count() > 500 {
            return Err(EnrolmentError::Invalid(
                "the reason has more than 500 characters".into(),
            ));
        }
        let application = self.application(application_id).await?;
        self.decide(session, &application, version, "reject", Some(&reason))
            .await
    }

    async fn decide(
        &self,
        session: &DeskSession,
        application: &Application,
        version: i64,
        kind: &str,
        reason: Option<&str>,
    ) -> Result<(), EnrolmentError> {
        let ctx = self.ctx();
        let (from, to) = match kind {
            "approve" => (
                &[ApplicationStatus::Pending][..],
                ApplicationStatus::Approved,
            ),
            _ => (
                &[ApplicationStatus::Pending, ApplicationStatus::Approved][..],
                ApplicationStatus::Rejected,
            ),
        };
        let mut tx = ctx.db.begin_write().await?;
        self.advance(&mut tx, application, version, from, Some((to, reason)))
            .await?;
        sqlx::query(
            "INSERT INTO enrol_decision (decision_id, application_id, kind, clerk_id, desk_id, \
             reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(new_id("dec"))
        .bind(&application.application_id)
        .bind(kind)
        .bind(&session.staff_id)
        .bind(&session.desk.desk_id)
        .bind(reason)
        .bind(ctx.clock.now().unix_timestamp())
        .execute(&mut *tx)
        .await
        .map_err(query("recording a decision"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                session.actor(),
                if kind == "approve" {
                    "enrolment.application.approve"
                } else {
                    "enrolment.application.reject"
                },
                "application",
                &application.application_id,
            )
            .details(serde_json::json!({ "reason": reason, "centre": session.desk.centre_id })),
        )
        .await?;
        tx.commit().await.map_err(query("recording a decision"))?;
        Ok(())
    }
}
