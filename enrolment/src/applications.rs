//! Applications: online pre-registration (each new person gets a national identity
//! number, status pending; nothing can log in yet), likely duplicates flagged for the
//! clerk, and the clerk's search.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

use eid_core::{AuditEvent, Outcome, audit};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::{
    Enrolment, EnrolmentError, error::query, names, national_id::NationalIdNumber, new_id,
};

/// Where an application stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum ApplicationStatus {
    /// Pre-registered; identity not yet verified in person.
    Pending,
    /// Verified at the desk; waiting for a token to be activated.
    Approved,
    /// Refused at the desk, with a reason.
    Rejected,
    /// A token is active: the citizen can log in and sign.
    Active,
    /// Certificates suspended (a lost card); a service point can resume them.
    Suspended,
    /// Permanently deactivated (death, with the reason).
    Deactivated,
}

impl ApplicationStatus {
    /// The stored name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deactivated => "deactivated",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "pending" => Self::Pending,
            "approved" => Self::Approved,
            "rejected" => Self::Rejected,
            "active" => Self::Active,
            "suspended" => Self::Suspended,
            "deactivated" => Self::Deactivated,
            _ => return None,
        })
    }
}

/// What a citizen submits online.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApplication {
    /// Given name(s).
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// E-mail address (optional).
    #[serde(default)]
    pub email: Option<String>,
    /// Phone number, international format (optional).
    #[serde(default)]
    pub phone: Option<String>,
    /// Postal address.
    pub address: String,
}

/// An application as the desk sees it.
#[derive(Clone, Debug, Serialize)]
pub struct Application {
    /// Internal id.
    pub application_id: String,
    /// The reference the citizen was given.
    pub reference: String,
    /// The national identity number.
    pub national_id: String,
    /// Given name(s).
    pub given_name: String,
    /// Family name.
    pub family_name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Postal address.
    pub address: String,
    /// Another application with the same normalised name and birth date, if any.
    pub duplicate_of: Option<String>,
    /// Status.
    pub status: ApplicationStatus,
    /// Why it is rejected, suspended or deactivated.
    pub status_reason: Option<String>,
    /// When the status last changed (unix seconds).
    pub status_since: i64,
    /// When the citizen's consent was recorded at the desk.
    pub consent_at: Option<i64>,
    /// Optimistic-concurrency version: every change increments it.
    pub version: i64,
    /// When it was submitted.
    pub created_at: i64,
}

/// The columns [`Application`] is read from.
pub(crate) const COLUMNS: &str = "application_id, reference, national_id, given_name, \
     family_name, birth_date, email, phone, address, duplicate_of, status, status_reason, \
     status_since, consent_at, version, created_at";

pub(crate) fn from_row(row: &sqlx::any::AnyRow) -> Result<Application, EnrolmentError> {
    let read = |e| query("reading an application")(e);
    let status: String = row.try_get("status").map_err(read)?;
    Ok(Application {
        application_id: row.try_get("application_id").map_err(read)?,
        reference: row.try_get("reference").map_err(read)?,
        national_id: row.try_get("national_id").map_err(read)?,
        given_name: row.try_get("given_name").map_err(read)?,
        family_name: row.try_get("family_name").map_err(read)?,
        birth_date: row.try_get("birth_date").map_err(read)?,
        email: row.try_get("email").map_err(read)?,
        phone: row.try_get("phone").map_err(read)?,
        address: row.try_get("address").map_err(read)?,
        duplicate_of: row.try_get("duplicate_of").map_err(read)?,
        status: ApplicationStatus::parse(&status).ok_or_else(|| EnrolmentError::Internal {
            operation: "reading an application",
            detail: format!("unknown status {status:?}"),
        })?,
        status_reason: row.try_get("status_reason").map_err(read)?,
        status_since: row
            .try_get::<Option<i64>, _>("status_since")
            .map_err(read)?
            .unwrap_or_default(),
        consent_at: row.try_get("consent_at").map_err(read)?,
        version: row.try_get("version").map_err(read)?,
        created_at: row.try_get("created_at").map_err(read)?,
    })
}

/// References: `R-` and ten characters from Crockford's base 32 (no I, L, O, U), easy to
/// read out over a counter.
fn new_reference() -> Result<String, EnrolmentError> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)
        .map_err(|e| EnrolmentError::internal("making a reference")(e.to_string()))?;
    let text: String = bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect();
    Ok(format!("R-{}-{}", &text[..5], &text[5..]))
}

fn clean(field: &str, value: &str, max: usize) -> Result<String, EnrolmentError> {
    let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
    if value.is_empty() {
        return Err(EnrolmentError::Invalid(format!("{field} is required")));
    }
    if value.chars().count() > max {
        return Err(EnrolmentError::Invalid(format!(
            "{field} has more than {max} characters"
        )));
    }
    if value.chars().any(char::is_control) {
        return Err(EnrolmentError::Invalid(format!(
            "{field} contains control characters"
        )));
    }
    Ok(value)
}

fn optional(value: Option<&str>) -> Option<&str> {
    value.map(str::trim).filter(|v| !v.is_empty())
}

/// Checks a date of birth: a real date, not in the future, at most 130 years ago.
pub(crate) fn birth_date(text: &str, today: time::Date) -> Result<time::Date, EnrolmentError> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(text.trim(), &format).map_err(|_| {
        EnrolmentError::Invalid(format!(
            "date of birth {:?} is not a date like 1990-01-31",
            text.trim()
        ))
    })?;
    if date > today {
        return Err(EnrolmentError::Invalid(
            "date of birth is in the future".into(),
        ));
    }
    if today.year() - date.year() > 130 {
        return Err(EnrolmentError::Invalid(
            "date of birth is more than 130 years ago".into(),
        ));
    }
    Ok(date)
}

#[derive(Debug)]
struct Checked {
    given_name: String,
    family_name: String,
    birth_date: String,
    email: Option<String>,
    phone: Option<String>,
    address: String,
}

fn check(new: &NewApplication, today: time::Date) -> Result<Checked, EnrolmentError> {
    let given_name = clean("given name", &new.given_name, 64)?;
    let family_name = clean("family name", &new.family_name, 64)?;
    let birth = birth_date(&new.birth_date, today)?;
    let email = match optional(new.email.as_deref()) {
        Some(email) => {
            let valid = email.len() <= 254
                && email.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                })
                && !email.chars().any(|c| c.is_whitespace() || c.is_control());
            if !valid {
                return Err(EnrolmentError::Invalid(format!(
                    "e-mail address {email:?} is not valid"
                )));
            }
            Some(email.to_owned())
        }
        None => None,
    };
    let phone = match optional(new.phone.as_deref()) {
        Some(phone) => {
            let compact: String = phone
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
                .collect();
            let digits = compact.strip_prefix('+').unwrap_or(&compact);
            if !(7..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(EnrolmentError::Invalid(format!(
                    "phone number {phone:?} is not valid: use the international format, like +1 868 555 0100"
                )));
            }
            Some(compact)
        }
        None => None,
    };
    let address = clean("address", &new.address, 300)?;
    Ok(Checked {
        given_name,
        family_name,
        birth_date: birth.to_string(),
        email,
        phone,
        address,
    })
}

/// The key likely duplicates share: normalised full name and birth date.
pub(crate) fn name_key(given_name: &str, family_name: &str, birth_date: &str) -> String {
    format!(
        "{}|{}|{birth_date}",
        names::key(family_name),
        names::key(given_name)
    )
}

/// A fixed-window limit per client address. Per process: a replica behind a load
/// balancer counts its own share.
#[derive(Debug)]
pub(crate) struct RateLimiter<K = IpAddr> {
    per_minute: u32,
    windows: Mutex<HashMap<K, (i64, u32)>>,
}

impl<K: std::hash::Hash + Eq> RateLimiter<K> {
    pub(crate) fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request from `client` at `now` (unix seconds); false when over.
    pub(crate) fn allow(&self, client: K, now: i64) -> bool {
        let minute = now / 60;
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        if windows.len() > 10_000 {
            windows.retain(|_, (m, _)| *m == minute);
        }
        let entry = windows.entry(client).or_insert((minute, 0));
        if entry.0 != minute {
            *entry = (minute, 0);
        }
        entry.1 += 1;
        entry.1 <= self.per_minute
    }
}

impl Enrolment {
    /// Pre-registers a person: checks the fields, gives them a fresh national identity
    /// number and a reference, flags a likely duplicate. `client` is the caller's address
    /// (rate limit), `actor` the audit actor.
    pub async fn apply(
        &self,
        new: &NewApplication,
        client: IpAddr,
        actor: &str,
    ) -> Result<Application, EnrolmentError> {
        let ctx = self.ctx();
        let now = ctx.clock.now();
        if !self.inner.limiter.allow(client, now.unix_timestamp()) {
            return Err(EnrolmentError::RateLimited);
        }
        let checked = check(new, now.date())?;
        let key = name_key(
            &checked.given_name,
            &checked.family_name,
            &checked.birth_date,
        );
        // A clash of random numbers or references is rare; a few tries settle it.
        for _ in 0..5 {
            let national_id = NationalIdNumber::random()
                .map_err(|e| EnrolmentError::internal("making a national id")(e.to_string()))?;
            let reference = new_reference()?;
            let application_id = new_id("app");
            let mut tx = ctx.db.begin_write().await?;
            let duplicate_of: Option<String> = sqlx::query_scalar(
                "SELECT application_id FROM enrol_application WHERE name_key = $1 \
                 ORDER BY created_at LIMIT 1",
            )
            .bind(&key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("looking for duplicates"))?;
            let taken: Option<String> = sqlx::query_scalar(
                "SELECT application_id FROM enrol_application WHERE national_id = $1 \
                 OR reference = $2",
            )
            .bind(national_id.as_str())
            .bind(&reference)
            .fetch_optional(&mut *tx)
            .await
            .map_err(query("checking a new national id"))?;
            if taken.is_some() {
                tx.rollback()
                    .await
                    .map_err(query("abandoning a clashing number"))?;
                continue;
            }
            let stamp = now.unix_timestamp();
            sqlx::query(
                "INSERT INTO enrol_application (application_id, reference, national_id, \
                 given_name, family_name, birth_date, email, phone, address, name_key, \
                 duplicate_of, status, status_since, version, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'pending', $12, 1, $12, $12)",
            )
            .bind(&application_id)
            .bind(&reference)
            .bind(national_id.as_str())
            .bind(&checked.given_name)
            .bind(&checked.family_name)
            .bind(&checked.birth_date)
            .bind(checked.email.as_deref())
            .bind(checked.phone.as_deref())
            .bind(&checked.address)
            .bind(&key)
            .bind(duplicate_of.as_deref())
            .bind(stamp)
            .execute(&mut *tx)
            .await
            .map_err(query("storing an application"))?;
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &AuditEvent::new(
                    actor,
                    "enrolment.application.create",
                    "application",
                    &application_id,
                )
                .details(serde_json::json!({
                    "reference": reference,
                    "national_id": national_id.as_str(),
                    "duplicate_of": duplicate_of,
                })),
            )
            .await?;
            tx.commit().await.map_err(query("storing an application"))?;
            return Ok(Application {
                application_id,
                reference,
                national_id: national_id.as_str().to_owned(),
                given_name: checked.given_name,
                family_name: checked.family_name,
                birth_date: checked.birth_date,
                email: checked.email,
                phone: checked.phone,
                address: checked.address,
                duplicate_of,
                status: ApplicationStatus::Pending,
                status_reason: None,
                status_since: stamp,
                consent_at: None,
                version: 1,
                created_at: stamp,
            });
        }
        Err(EnrolmentError::Internal {
            operation: "pre-registering",
            detail: "five clashing national ids or references in a row".into(),
        })
    }

    /// The application with this internal id.
    pub async fn application(&self, application_id: &str) -> Result<Application, EnrolmentError> {
        let sql = format!("SELECT {COLUMNS} FROM enrol_application WHERE application_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(application_id)
            .fetch_optional(self.ctx().db.pool())
            .await
            .map_err(query("reading an application"))?
            .ok_or_else(|| EnrolmentError::NotFound("no such application".into()))?;
        from_row(&row)
    }

    /// The latest applications, newest first.
    pub async fn recent_applications(
        &self,
        limit: i64,
    ) -> Result<Vec<Application>, EnrolmentError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM enrol_application ORDER BY updated_at DESC, application_id LIMIT $1"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.ctx().db.pool())
            .await
            .map_err(query("listing applications"))?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Finds an application by its reference or the national identity number.
    pub async fn find(&self, text: &str) -> Result<Option<Application>, EnrolmentError> {
        let text = text.trim();
        let reference = text.to_ascii_uppercase();
        let national_id = NationalIdNumber::parse(text)
            .map(|n| n.as_str().to_owned())
            .unwrap_or_default();
        let sql = format!(
            "SELECT {COLUMNS} FROM enrol_application WHERE reference = $1 OR national_id = $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&reference)
            .bind(&national_id)
            .fetch_optional(self.ctx().db.pool())
            .await
            .map_err(query("finding an application"))?
            .map(|row| from_row(&row))
            .transpose()
    }

    /// The status of the identity with this national identity number, asked by relying
    /// service `caller`: at most `status_queries_per_minute` a minute per caller, and
    /// each answer audited (who asked about whom, and what they learnt).
    pub async fn identity_status_for(
        &self,
        caller: &str,
        national_id: &NationalIdNumber,
    ) -> Result<Option<crate::IdentityStatus>, EnrolmentError> {
        let ctx = self.ctx();
        if !self
            .inner
            .status_limiter
            .allow(caller.to_owned(), ctx.clock.now().unix_timestamp())
        {
            return Err(EnrolmentError::RateLimited);
        }
        let status = self.identity_status(national_id).await?;
        let event = AuditEvent::new(
            format!("service:{caller}"),
            "enrolment.identity.status",
            "identity",
            national_id.as_str(),
        )
        .outcome(if status.is_some() {
            Outcome::Success
        } else {
            Outcome::Denied
        })
        .details(serde_json::json!({
            "status": status.as_ref().map(|s| s.status),
        }));
        audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
        Ok(status)
    }

    /// The status of the identity with this national identity number, as relying
    /// services see it (`None` if there is none).
    pub async fn identity_status(
        &self,
        national_id: &NationalIdNumber,
    ) -> Result<Option<crate::IdentityStatus>, EnrolmentError> {
        let sql = format!("SELECT {COLUMNS} FROM enrol_application WHERE national_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(national_id.as_str())
            .fetch_optional(self.ctx().db.pool())
            .await
            .map_err(query("reading an identity's status"))?
            .map(|row| from_row(&row).map(|a| crate::IdentityStatus::of(&a)))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn new(given: &str, birth: &str) -> NewApplication {
        NewApplication {
            given_name: given.into(),
            family_name: "Eriksson".into(),
            birth_date: birth.into(),
            email: Some("anna@example.org".into()),
            phone: Some("+1 868 555 0100".into()),
            address: "1 Frederick Street, Port of Spain".into(),
        }
    }

    #[test]
    fn fields_are_checked_with_specific_messages() {
        let today = time::macros::date!(2026 - 11 - 21);
        assert!(check(&new("Anna Maria", "1974-08-12"), today).is_ok());
        let error = check(&new("", "1974-08-12"), today).unwrap_err();
        assert_eq!(error.to_string(), "given name is required");
        let error = check(&new("Anna", "1974-02-30"), today).unwrap_err();
        assert!(error.to_string().contains("not a date"), "{error}");
        let error = check(&new("Anna", "2030-01-01"), today).unwrap_err();
        assert!(error.to_string().contains("future"), "{error}");
        let mut bad = new("Anna", "1974-08-12");
        bad.email = Some("anna@".into());
        assert!(
            check(&bad, today)
                .unwrap_err()
                .to_string()
                .contains("e-mail")
        );
        bad.email = None;
        bad.phone = Some("12".into());
        assert!(
            check(&bad, today)
                .unwrap_err()
                .to_string()
                .contains("phone")
        );
        let checked = check(&new("  Anna   Maria ", "1974-08-12"), today).unwrap();
        assert_eq!(checked.given_name, "Anna Maria");
        assert_eq!(checked.phone.as_deref(), Some("+18685550100"));
    }

    #[test]
    fn duplicates_share_a_key_across_spelling() {
        assert_eq!(
            name_key("Ánna  María", "ERIKSSON", "1974-08-12"),
            name_key("anna maria", "Eriksson", "1974-08-12")
        );
        assert_ne!(
            name_key("Anna", "Eriksson", "1974-08-12"),
            name_key("Anna", "Eriksson", "1974-08-13")
        );
    }

    #[test]
    fn the_limiter_counts_per_address_and_minute() {
        let limiter = RateLimiter::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(limiter.allow(a, 60));
        assert!(limiter.allow(a, 61));
        assert!(!limiter.allow(a, 62));
        assert!(limiter.allow(b, 62));
        assert!(limiter.allow(a, 120));
    }

    #[test]
    fn references_are_readable() {
        let r = new_reference().unwrap();
        assert_eq!(r.len(), 13);
        assert!(r.starts_with("R-"));
        assert!(!r.contains(['I', 'L', 'O', 'U']));
    }
}
