//! Remote qualified signing by the Cloud Signature Consortium API v2 (`/csc/v2/`).
//!
//! A *credential* is a citizen's signing key on the signing service's HSM with its
//! qualified certificate, created by the registration authority
//! ([`Csc::create_credential`]) after the citizen's identity was verified; the key is
//! generated on the token and never leaves it, and the CA certifies it only on the
//! key layer's evidence that the token is a QSCD.
//!
//! Callers are relying-party applications holding an OAuth access token from our
//! identity provider, issued for the citizen (checked in [`token`]):
//! - scope `service`: `credentials/list`, `credentials/info`, `credentials/authorize`;
//! - `credentials/authorize` takes the citizen's signing PIN (the second factor, with
//!   a lockout after `[signing.csc] pin_attempts` wrong ones) and the exact hashes to
//!   be signed, and returns signature activation data (SAD): bound to that credential,
//!   client and those hashes, single-use, alive `sad_ttl_secs` (SCAL2);
//! - `signatures/signHash` signs hashes that a SAD (or an access token carrying
//!   `authorization_details` of type `credential`, authorised at the identity
//!   provider by a fresh login) covers, after asking our OCSP responder that the
//!   certificate is good;
//! - `signatures/timestamp` returns an RFC 3161 token from our TSA.
//!
//! Every credential creation, authorisation (with wrong PINs and locks) and signature
//! is an audit event naming the citizen, the client and the hashes — never a document
//! or a PIN.

mod error;
pub(crate) mod http;
pub mod token;

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use base64ct::{Base64, Base64Unpadded, Base64Url, Base64UrlUnpadded, Encoding};
use der::{Decode, Encode};
use eid_core::{AuditEvent, Outcome, ServiceContext, audit, group_commit::Written};
use eid_hsm::{KeyLabel, PinKind, PinPolicy, PublicKey, QscdEvidence};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use x509_cert::Certificate;

pub use error::CscError;
use token::{Access, AccessTokens};

use crate::{
    Signatures,
    cades::{build::DigestAlgorithm, revocation},
    service_keys::{self, KeyTaskError, NewKey},
};

/// A port's answer.
pub type PortFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, CscError>> + Send + 'a>>;

/// What the identity provider's register says about a token: whether its grant is
/// still in force, and who its subject is (the provider's internal citizen id to the
/// national identity number credentials are registered under), in one look. The `eid`
/// binary connects it to the provider's register.
pub trait CitizenDirectory: Send + Sync + fmt::Debug {
    /// Whom the access token `jti` of the citizen `subject` speaks for.
    fn holder<'a>(&'a self, jti: &'a str, subject: &'a str) -> PortFuture<'a, Holder>;
}

/// Whom an access token speaks for ([`CitizenDirectory::holder`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Its grant is revoked or unknown.
    GrantNotInForce,
    /// Its grant is in force, its subject no citizen the provider knows.
    UnknownCitizen,
    /// Its grant is in force for the citizen with this national id.
    Citizen(String),
}

/// What the service asks the CA for a new credential.
#[derive(Debug)]
pub struct CertificateOrder {
    /// PKCS#10, signed by the new key on the token.
    pub csr: Vec<u8>,
    /// The citizen.
    pub national_id: String,
    /// Given names.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// The key and the key layer's evidence that it is on a QSCD.
    pub key_evidence: (PublicKey, QscdEvidence),
    /// The audit actor asking.
    pub requested_by: String,
}

/// The CA as the signing service reaches it to certify remote signing keys (the
/// `eid` binary connects it in-process).
pub trait SigningCertificates: Send + Sync + fmt::Debug {
    /// Issues a qualified signature certificate (DER) for the order.
    fn issue(&self, order: CertificateOrder) -> PortFuture<'_, Vec<u8>>;
    /// Issues an organisation's qualified seal certificate (DER) for the order.
    fn issue_seal(&self, order: crate::seal::SealOrder) -> PortFuture<'_, Vec<u8>>;
    /// Revokes the certificate `serial` (hex) for `reason` (an RFC 5280 reason name);
    /// one revoked already is no error.
    fn revoke<'a>(&'a self, serial: &'a str, reason: &'a str, actor: &'a str)
    -> PortFuture<'a, ()>;
}

/// A citizen's request, through the registration authority, for a remote credential.
pub struct NewCredential {
    /// The credential's id, when the caller chose it before asking (the enrolment
    /// desk records it first, so that an interrupted activation can be cleaned up);
    /// `csc-` and 32 lower-case hex digits, as [`new_credential_id`] makes them.
    pub credential_id: Option<String>,
    /// The national identity number (verified in person).
    pub national_id: String,
    /// Given names, as on the identity documents.
    pub given_name: String,
    /// Surname.
    pub surname: String,
    /// The signing PIN the citizen chose (PIN2 rules).
    pub pin: SecretString,
}

impl fmt::Debug for NewCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewCredential")
            .field("national_id", &self.national_id)
            .field("pin", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A created credential.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CreatedCredential {
    /// Its id in the CSC API.
    pub credential_id: String,
    /// The certificate's serial (hex).
    pub serial: String,
    /// The certificate, PEM.
    pub certificate: String,
}

/// A credential as the registration authority lists it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CredentialSummary {
    /// Its id in the CSC API.
    pub credential_id: String,
    /// The certificate's serial (hex).
    pub serial: String,
    /// `active`, `locked` (wrong PINs) or `disabled` (withdrawn).
    pub status: String,
    /// When it was created (Unix seconds).
    pub created_at: i64,
}

/// A fresh credential id: `csc-` and 128 random bits in hex.
pub fn new_credential_id() -> Result<String, CscError> {
    Ok(format!("csc-{}", random_hex::<16>()?))
}

/// Checks a caller-chosen credential id has the form [`new_credential_id`] gives.
fn checked_credential_id(id: &str) -> Result<&str, CscError> {
    match id.strip_prefix("csc-") {
        Some(hex)
            if hex.len() == 32
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(id)
        }
        _ => Err(CscError::InvalidRequest(format!(
            "invalid credential id `{id}`: `csc-` and 32 lower-case hex digits"
        ))),
    }
}

/// A credential as stored.
#[derive(Clone, Debug)]
struct Credential {
    credential_id: String,
    national_id: String,
    key_label: String,
    certificate: Certificate,
    certificate_der: Vec<u8>,
    status: String,
    pin_hash: String,
    pin_failures: i64,
}

const CREDENTIAL_COLUMNS: &str = "credential_id, national_id, key_label, certificate, status, \
     pin_hash, pin_failures";

fn credential_from_row(row: &sqlx::any::AnyRow) -> Result<Credential, CscError> {
    let read = |e: sqlx::Error| CscError::Internal(format!("reading a credential: {e}"));
    let der: Vec<u8> = row.try_get("certificate").map_err(read)?;
    let certificate = Certificate::from_der(&der)
        .map_err(|e| CscError::Internal(format!("a stored certificate is unreadable: {e}")))?;
    Ok(Credential {
        credential_id: row.try_get("credential_id").map_err(read)?,
        national_id: row.try_get("national_id").map_err(read)?,
        key_label: row.try_get("key_label").map_err(read)?,
        certificate,
        certificate_der: der,
        status: row.try_get("status").map_err(read)?,
        pin_hash: row.try_get("pin_hash").map_err(read)?,
        pin_failures: row.try_get("pin_failures").map_err(read)?,
    })
}

/// The hash algorithms a SAD may cover, by OID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HashAlgorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlgorithm {
    pub(crate) fn from_oid(oid: &str) -> Result<Self, CscError> {
        match oid {
            "2.16.840.1.101.3.4.2.1" => Ok(Self::Sha256),
            "2.16.840.1.101.3.4.2.2" => Ok(Self::Sha384),
            "2.16.840.1.101.3.4.2.3" => Ok(Self::Sha512),
            "1.3.14.3.2.26" => Err(CscError::UnsupportedAlgorithm(
                "SHA-1 (1.3.14.3.2.26) is not accepted for signatures".into(),
            )),
            other => Err(CscError::UnsupportedAlgorithm(format!(
                "hash algorithm `{other}` is not SHA-256, SHA-384 or SHA-512 (by OID)"
            ))),
        }
    }

    pub(crate) fn oid(self) -> &'static str {
        match self {
            Self::Sha256 => "2.16.840.1.101.3.4.2.1",
            Self::Sha384 => "2.16.840.1.101.3.4.2.2",
            Self::Sha512 => "2.16.840.1.101.3.4.2.3",
        }
    }

    fn len(self) -> usize {
        match self {
            Self::Sha256 => 32,
            Self::Sha384 => 48,
            Self::Sha512 => 64,
        }
    }

    fn digest_algorithm(self) -> DigestAlgorithm {
        match self {
            Self::Sha256 => DigestAlgorithm::Sha256,
            Self::Sha384 => DigestAlgorithm::Sha384,
            Self::Sha512 => DigestAlgorithm::Sha512,
        }
    }

    /// The ECDSA signature algorithm OID over this hash.
    fn ecdsa_oid(self) -> &'static str {
        match self {
            Self::Sha256 => "1.2.840.10045.4.3.2",
            Self::Sha384 => "1.2.840.10045.4.3.3",
            Self::Sha512 => "1.2.840.10045.4.3.4",
        }
    }

    /// Checks hashes' lengths.
    fn check(self, hashes: &[Vec<u8>]) -> Result<(), CscError> {
        match hashes.iter().find(|h| h.len() != self.len()) {
            Some(bad) => Err(CscError::InvalidRequest(format!(
                "a hash has {} octets; {} gives {}",
                bad.len(),
                self.oid(),
                self.len()
            ))),
            None => Ok(()),
        }
    }
}

/// The ECDSA key's own algorithm OID (CSC lets `signAlgo` name it with `hashAlgo`).
const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
/// Signature algorithms offered (`credentials/info` `key.algo`).
pub(crate) const SIGN_ALGORITHMS: [&str; 3] = [
    "1.2.840.10045.4.3.2",
    "1.2.840.10045.4.3.3",
    "1.2.840.10045.4.3.4",
];

/// Decodes a hash given in base64 (standard or URL-safe, padded or not).
pub(crate) fn decode_hash(text: &str) -> Result<Vec<u8>, CscError> {
    let text = text.trim();
    Base64::decode_vec(text)
        .or_else(|_| Base64Unpadded::decode_vec(text))
        .or_else(|_| Base64Url::decode_vec(text))
        .or_else(|_| Base64UrlUnpadded::decode_vec(text))
        .map_err(|_| CscError::InvalidRequest(format!("`{text}` is not a base64 hash")))
}

pub(crate) fn random_hex<const N: usize>() -> Result<String, CscError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| CscError::Internal(format!("randomness: {e}")))?;
    Ok(hex::encode(bytes))
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Argon2id for signing PINs: slow enough that a stolen table does not give PINs
/// away cheaply, quick enough for an interactive authorisation.
const PIN_MEMORY_KIB: u32 = 19 * 1024;
const PIN_ITERATIONS: u32 = 2;

/// A PIN check reserved this long ago and never settled belonged to a process that
/// died mid-check (a check takes a fraction of a second); it no longer counts as under
/// way.
const PIN_CHECK_FORGOTTEN_SECS: i64 = 60;

fn argon2(memory_kib: u32, iterations: u32) -> Result<argon2::Argon2<'static>, CscError> {
    let params = argon2::Params::new(memory_kib, iterations, 1, Some(32))
        .map_err(|e| CscError::Internal(format!("Argon2id parameters: {e}")))?;
    Ok(argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        params,
    ))
}

/// `argon2id$<memory KiB>$<iterations>$<salt hex>$<hash hex>`.
fn hash_pin(pin: &SecretString) -> Result<String, CscError> {
    let salt = random_hex::<16>()?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon2(PIN_MEMORY_KIB, PIN_ITERATIONS)?
        .hash_password_into(
            pin.expose_secret().as_bytes(),
            salt.as_bytes(),
            out.as_mut(),
        )
        .map_err(|e| CscError::Internal(format!("hashing a PIN: {e}")))?;
    Ok(format!(
        "argon2id${PIN_MEMORY_KIB}${PIN_ITERATIONS}${salt}${}",
        hex::encode(out.as_ref())
    ))
}

fn pin_matches(pin: &SecretString, stored: &str) -> Result<bool, CscError> {
    let bad = || CscError::Internal("a stored PIN hash is malformed".into());
    let parts: Vec<&str> = stored.split('$').collect();
    let [kind, memory, iterations, salt, expected] = parts.as_slice() else {
        return Err(bad());
    };
    if *kind != "argon2id" {
        return Err(bad());
    }
    let memory: u32 = memory.parse().map_err(|_| bad())?;
    let iterations: u32 = iterations.parse().map_err(|_| bad())?;
    let expected = hex::decode(expected).map_err(|_| bad())?;
    let mut out = zeroize::Zeroizing::new([0u8; 32]);
    argon2(memory, iterations)?
        .hash_password_into(
            pin.expose_secret().as_bytes(),
            salt.as_bytes(),
            out.as_mut(),
        )
        .map_err(|e| CscError::Internal(format!("checking a PIN: {e}")))?;
    // Constant time over the whole hash.
    let difference = out
        .iter()
        .zip(expected.iter())
        .fold(u8::from(out.len() != expected.len()), |acc, (a, b)| {
            acc | (a ^ b)
        });
    Ok(difference == 0)
}

/// A signature authorisation to spend: from a SAD, or from the access token itself.
enum Authority {
    Sad(String),
    Token,
}

/// What `credentials/authorize` was asked.
#[derive(Debug)]
pub struct AuthorizeRequest {
    /// The credential.
    pub credential_id: String,
    /// How many signatures (must equal the number of hashes: SCAL2).
    pub num_signatures: u32,
    /// The hashes to be signed, decoded.
    pub hashes: Vec<Vec<u8>>,
    /// Their algorithm's OID.
    pub hash_algorithm: String,
    /// The citizen's signing PIN.
    pub pin: Option<SecretString>,
}

/// What `signatures/signHash` was asked.
#[derive(Debug)]
pub struct SignHashRequest {
    /// The credential.
    pub credential_id: String,
    /// The SAD from `credentials/authorize` (absent when the access token authorises
    /// the credential itself).
    pub sad: Option<String>,
    /// The hashes.
    pub hashes: Vec<Vec<u8>>,
    /// Their algorithm's OID.
    pub hash_algorithm: String,
    /// The signature algorithm's OID.
    pub sign_algorithm: String,
}

/// The CSC API service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Csc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    signatures: Signatures,
    tokens: AccessTokens,
    directory: Arc<dyn CitizenDirectory>,
    certificates: Option<Arc<dyn SigningCertificates>>,
    /// Credential certificates whose chain was checked, with their issuer.
    checked_issuers: std::sync::Mutex<std::collections::HashMap<[u8; 32], Certificate>>,
}

impl Csc {
    /// The API over `signatures` (trust, OCSP, time-stamps), with the citizen register
    /// and, where this process may create credentials, the CA.
    pub fn new(
        signatures: &Signatures,
        directory: Arc<dyn CitizenDirectory>,
        certificates: Option<Arc<dyn SigningCertificates>>,
    ) -> Self {
        let config = &signatures.context().config.signing.csc;
        Self {
            inner: Arc::new(Inner {
                tokens: AccessTokens::new(
                    &config.issuer,
                    &config.audience,
                    signatures.http().clone(),
                ),
                signatures: signatures.clone(),
                directory,
                certificates,
                checked_issuers: std::sync::Mutex::default(),
            }),
        }
    }

    /// The service context the API works in.
    pub fn context(&self) -> &ServiceContext {
        self.inner.signatures.context()
    }

    fn ctx(&self) -> &ServiceContext {
        self.context()
    }

    fn now(&self) -> i64 {
        self.ctx().clock.now().unix_timestamp()
    }

    /// Checks the bearer token, and that its grant was not revoked since it was issued.
    pub async fn access(&self, token: &str) -> Result<Access, CscError> {
        let mut access = self.inner.tokens.verify(token, self.now()).await?;
        access.national_id = match self
            .inner
            .directory
            .holder(&access.jti, &access.subject)
            .await?
        {
            Holder::GrantNotInForce => {
                return Err(CscError::InvalidToken(
                    "the access token was revoked at the identity provider".into(),
                ));
            }
            Holder::UnknownCitizen => None,
            Holder::Citizen(national_id) => Some(national_id),
        };
        Ok(access)
    }

    /// The trusted identity provider.
    pub fn issuer(&self) -> &str {
        self.inner.tokens.issuer()
    }

    /// The national id of the token's citizen.
    fn national_id(access: &Access) -> Result<String, CscError> {
        access.national_id.clone().ok_or_else(|| {
            CscError::InvalidToken("the token's citizen is not known to this service".into())
        })
    }

    /// Why this service cannot create credentials, if it cannot: its key store is not
    /// an HSM, or it has no way to the CA.
    pub fn creation_refusal(&self) -> Option<CscError> {
        if let Some(refusal) = service_keys::not_an_hsm(&self.ctx().keys, "remote signing keys") {
            return Some(CscError::AccessDenied(refusal));
        }
        self.certificates().err()
    }

    /// Creates a credential: key on the HSM, certificate from the CA, PIN hash. Only
    /// for a key store that is an HSM (a QSCD); the soft store is refused.
    pub async fn create_credential(
        &self,
        actor: &str,
        request: NewCredential,
    ) -> Result<CreatedCredential, CscError> {
        let ctx = self.ctx().clone();
        PinPolicy::CITIZEN
            .check(PinKind::Pin2, &request.pin)
            .map_err(|e| CscError::InvalidRequest(e.to_string()))?;
        if let Some(refusal) = self.creation_refusal() {
            return Err(refusal);
        }
        let credential_id = match &request.credential_id {
            Some(id) => checked_credential_id(id)?.to_owned(),
            None => new_credential_id()?,
        };
        if self.credential(&credential_id).await?.is_some() {
            return Err(CscError::InvalidRequest(format!(
                "credential `{credential_id}` exists already"
            )));
        }
        let label =
            KeyLabel::new(credential_id.clone()).map_err(|e| CscError::Internal(e.to_string()))?;
        let generated =
            service_keys::generate(&ctx.keys, &label, "CN=eID remote signing key").await;
        let NewKey {
            csr,
            public_key,
            evidence,
        } = match generated {
            Ok(generated) => generated,
            Err(KeyTaskError::Hsm(eid_hsm::HsmError::KeyExists { .. })) => {
                return Err(CscError::InvalidRequest(format!(
                    "a key for credential `{credential_id}` exists already on the HSM"
                )));
            }
            Err(e) => {
                // Half a key pair must not stay behind.
                self.discard(actor, &label, None).await;
                return Err(CscError::Unavailable(format!("the HSM: {e}")));
            }
        };
        let mut issued_serial = None;
        let created = self
            .certify(
                actor,
                &request,
                &label,
                CertificateOrder {
                    csr,
                    national_id: request.national_id.clone(),
                    given_name: request.given_name.clone(),
                    surname: request.surname.clone(),
                    key_evidence: (public_key, evidence),
                    requested_by: actor.to_owned(),
                },
                &mut issued_serial,
            )
            .await;
        if created.is_err() {
            // Nothing of a credential that does not exist may stay usable: its
            // certificate is revoked and its key destroyed.
            self.discard(actor, &label, issued_serial.as_deref()).await;
        }
        created
    }

    /// The rest of a credential's creation once its key exists: the certificate from
    /// the CA (its serial put in `issued_serial` at once), stored on the token, the
    /// PIN's hash, the row and its audit event.
    async fn certify(
        &self,
        actor: &str,
        request: &NewCredential,
        label: &KeyLabel,
        order: CertificateOrder,
        issued_serial: &mut Option<String>,
    ) -> Result<CreatedCredential, CscError> {
        let ctx = self.ctx().clone();
        let credential_id = label.as_str().to_owned();
        let issuer = self.certificates()?;
        let pin = request.pin.clone();
        let pin_hash = tokio::task::spawn_blocking(move || hash_pin(&pin))
            .await
            .map_err(|e| CscError::Internal(format!("PIN task: {e}")))??;
        let der = match issuer.issue(order).await {
            Ok(der) => der,
            Err(e) => {
                let event = AuditEvent::new(
                    actor,
                    "csc.credential.create",
                    "citizen",
                    &request.national_id,
                )
                .outcome(Outcome::Denied)
                .details(json!({ "credential": credential_id, "reason": e.to_string() }));
                audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
                return Err(e);
            }
        };
        let certificate = Certificate::from_der(&der)
            .map_err(|e| CscError::Internal(format!("the CA's certificate is unreadable: {e}")))?;
        let serial = hex::encode_upper(certificate.tbs_certificate().serial_number().as_bytes());
        *issued_serial = Some(serial.clone());
        service_keys::store_certificate(&ctx.keys, label, &der)
            .await
            .map_err(|e| {
                CscError::Unavailable(format!("storing the certificate on the HSM: {e}"))
            })?;
        let now = self.now();
        let mut tx = ctx.db.begin_write().await?;
        sqlx::query(
            "INSERT INTO csc_credential (credential_id, national_id, key_label, certificate, \
             serial, status, pin_hash, pin_failures, created_by, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'active', $6, 0, $7, $8, $8)",
        )
        .bind(&credential_id)
        .bind(&request.national_id)
        .bind(label.as_str())
        .bind(&der)
        .bind(&serial)
        .bind(&pin_hash)
        .bind(actor)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(CscError::db("storing a credential"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &AuditEvent::new(
                actor,
                "csc.credential.create",
                "citizen",
                &request.national_id,
            )
            .details(json!({
                "credential": credential_id,
                "serial": serial,
                "key": label.as_str(),
                "store": ctx.keys.description(),
            })),
        )
        .await?;
        tx.commit().await.map_err(CscError::db("committing"))?;
        let pem = der::EncodePem::to_pem(&certificate, der::pem::LineEnding::LF)
            .map_err(|e| CscError::Internal(format!("PEM: {e}")))?;
        Ok(CreatedCredential {
            credential_id,
            serial,
            certificate: pem,
        })
    }

    /// The CA, or the error saying this process cannot reach it.
    fn certificates(&self) -> Result<Arc<dyn SigningCertificates>, CscError> {
        self.inner.certificates.clone().ok_or_else(|| {
            CscError::Unavailable("this process cannot reach the CA to certify keys".into())
        })
    }

    /// Undoes a creation that failed part-way, as far as it got: the certificate
    /// `serial` revoked, the key destroyed. Best effort (the failure being reported
    /// is the creation's); what could not be undone is logged, and the registration
    /// authority's own clean-up ([`Csc::withdraw`]) finds it again.
    async fn discard(&self, actor: &str, label: &KeyLabel, serial: Option<&str>) {
        if let (Some(serial), Some(issuer)) = (serial, self.inner.certificates.as_ref())
            && let Err(e) = issuer.revoke(serial, "cessationOfOperation", actor).await
        {
            tracing::error!(%serial, error = %e, "could not revoke the certificate of a failed credential");
        }
        if let Err(e) = self.destroy_key(label).await {
            tracing::error!(%label, error = %e, "could not destroy the key of a failed credential");
        }
    }

    async fn destroy_key(&self, label: &KeyLabel) -> Result<bool, CscError> {
        service_keys::destroy(&self.ctx().keys, label)
            .await
            .map_err(|e| CscError::Unavailable(format!("the HSM: {e}")))
    }

    /// Every credential of the citizen, withdrawn ones too, oldest first: what the
    /// registration authority shows and checks.
    pub async fn credentials_of(
        &self,
        national_id: &str,
    ) -> Result<Vec<CredentialSummary>, CscError> {
        let rows = sqlx::query(
            "SELECT credential_id, serial, status, created_at FROM csc_credential \
             WHERE national_id = $1 ORDER BY created_at, credential_id",
        )
        .bind(national_id)
        .fetch_all(self.ctx().db.pool())
        .await
        .map_err(CscError::db("listing credentials"))?;
        let read = |row: &sqlx::any::AnyRow| -> Result<CredentialSummary, sqlx::Error> {
            Ok(CredentialSummary {
                credential_id: row.try_get("credential_id")?,
                serial: row.try_get("serial")?,
                status: row.try_get("status")?,
                created_at: row.try_get("created_at")?,
            })
        };
        rows.iter()
            .map(|row| read(row).map_err(CscError::db("reading a credential")))
            .collect()
    }

    /// Withdraws a credential for good: disabled at once (no authorisation or
    /// signature from then on), its certificate revoked for `reason` (an RFC 5280
    /// reason name) and its key destroyed on the HSM. Every step may be repeated, so
    /// a withdrawal cut short is finished by asking again; an id with no row (a
    /// creation interrupted before it was stored) still has its key destroyed.
    /// Returns whether a credential row existed.
    pub async fn withdraw(
        &self,
        actor: &str,
        credential_id: &str,
        reason: &str,
    ) -> Result<bool, CscError> {
        let ctx = self.ctx().clone();
        let label = KeyLabel::new(checked_credential_id(credential_id)?)
            .map_err(|e| CscError::Internal(e.to_string()))?;
        let row = sqlx::query(
            "SELECT national_id, serial, status FROM csc_credential WHERE credential_id = $1",
        )
        .bind(credential_id)
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(CscError::db("reading a credential"))?;
        let Some(row) = row else {
            let destroyed = self.destroy_key(&label).await?;
            if destroyed {
                let event = AuditEvent::new(
                    actor,
                    "csc.credential.withdraw",
                    "credential",
                    credential_id,
                )
                .details(json!({ "stored": false, "key_destroyed": true }));
                audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            }
            return Ok(false);
        };
        let (national_id, serial, status): (String, String, String) = (|| {
            Ok::<_, sqlx::Error>((
                row.try_get("national_id")?,
                row.try_get("serial")?,
                row.try_get("status")?,
            ))
        })()
        .map_err(CscError::db("reading a credential"))?;
        if status != "disabled" {
            let mut tx = ctx.db.begin_write().await?;
            sqlx::query(
                "UPDATE csc_credential SET status = 'disabled', updated_at = $1 \
                 WHERE credential_id = $2",
            )
            .bind(self.now())
            .bind(credential_id)
            .execute(&mut *tx)
            .await
            .map_err(CscError::db("withdrawing a credential"))?;
            audit::append(
                &mut tx,
                ctx.clock.as_ref(),
                &AuditEvent::new(actor, "csc.credential.withdraw", "citizen", &national_id)
                    .details(json!({
                        "credential": credential_id,
                        "serial": serial,
                        "reason": reason,
                    })),
            )
            .await?;
            tx.commit().await.map_err(CscError::db("committing"))?;
        }
        self.certificates()?.revoke(&serial, reason, actor).await?;
        self.destroy_key(&label).await?;
        Ok(true)
    }

    async fn credential(&self, credential_id: &str) -> Result<Option<Credential>, CscError> {
        let sql =
            format!("SELECT {CREDENTIAL_COLUMNS} FROM csc_credential WHERE credential_id = $1");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(credential_id)
            .fetch_optional(self.ctx().db.pool())
            .await
            .map_err(CscError::db("reading a credential"))?
            .as_ref()
            .map(credential_from_row)
            .transpose()
    }

    /// The citizen's own credential, or the CSC error for an unknown one (another
    /// citizen's looks the same as none).
    async fn own_credential(
        &self,
        access: &Access,
        credential_id: &str,
    ) -> Result<Credential, CscError> {
        let national_id = Self::national_id(access)?;
        match self.credential(credential_id).await? {
            Some(c) if c.national_id == national_id => Ok(c),
            _ => Err(CscError::InvalidRequest(format!(
                "invalid parameter credentialID: `{credential_id}` is not a credential of \
                 this user"
            ))),
        }
    }

    /// `credentials/list`: the citizen's credentials (not disabled), with their
    /// `credentials/info` description when `describe` gives its `certificates` and
    /// `certInfo`.
    pub async fn list(
        &self,
        access: &Access,
        describe: Option<(&str, bool)>,
    ) -> Result<(Vec<String>, Vec<Value>), CscError> {
        require_scope(access, &["service", "credential"])?;
        let national_id = Self::national_id(access)?;
        let sql = format!(
            "SELECT {CREDENTIAL_COLUMNS} FROM csc_credential WHERE national_id = $1 \
             AND status <> 'disabled' ORDER BY created_at, credential_id"
        );
        let credentials = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&national_id)
            .fetch_all(self.ctx().db.pool())
            .await
            .map_err(CscError::db("listing credentials"))?
            .iter()
            .map(credential_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let infos = match describe {
            Some((certificates, cert_info)) => credentials
                .iter()
                .map(|c| self.describe(c, certificates, cert_info))
                .collect::<Result<_, _>>()?,
            None => Vec::new(),
        };
        let ids = credentials.into_iter().map(|c| c.credential_id).collect();
        Ok((ids, infos))
    }

    /// `credentials/info`: the credential as the API describes it.
    pub async fn info(
        &self,
        access: &Access,
        credential_id: &str,
        certificates: &str,
        cert_info: bool,
    ) -> Result<Value, CscError> {
        require_scope(access, &["service", "credential"])?;
        let credential = self.own_credential(access, credential_id).await?;
        self.describe(&credential, certificates, cert_info)
    }

    fn describe(
        &self,
        credential: &Credential,
        certificates: &str,
        cert_info: bool,
    ) -> Result<Value, CscError> {
        let config = &self.ctx().config.signing.csc;
        let trust = self.inner.signatures.trust();
        let now = self.ctx().clock.now();
        let tbs = credential.certificate.tbs_certificate();
        let (not_before, not_after) = (
            time::OffsetDateTime::from(tbs.validity().not_before.to_system_time()),
            time::OffsetDateTime::from(tbs.validity().not_after.to_system_time()),
        );
        let cert_status = if now < not_before || now > not_after {
            "expired"
        } else {
            "valid"
        };
        let mut chain = vec![Base64::encode_string(&credential.certificate_der)];
        match certificates {
            "none" => chain.clear(),
            "single" => {}
            "chain" => {
                for ca in trust.chain_of(&credential.certificate) {
                    chain
                        .push(Base64::encode_string(&ca.to_der().map_err(|e| {
                            CscError::Internal(format!("encoding a CA: {e}"))
                        })?));
                }
            }
            other => {
                return Err(CscError::InvalidRequest(format!(
                    "invalid parameter certificates: `{other}` is not none, single or chain"
                )));
            }
        }
        let key_status = if credential.status == "active" {
            "enabled"
        } else {
            "disabled"
        };
        let mut cert = json!({ "status": cert_status, "certificates": chain });
        if cert_info {
            cert["issuerDN"] = tbs.issuer().to_string().into();
            cert["subjectDN"] = tbs.subject().to_string().into();
            cert["serialNumber"] = hex::encode_upper(tbs.serial_number().as_bytes()).into();
            cert["validFrom"] = generalized(not_before).into();
            cert["validTo"] = generalized(not_after).into();
        }
        Ok(json!({
            "credentialID": credential.credential_id,
            "description": "Qualified electronic signature (remote, HSM)",
            "signatureQualifier": "eu_eidas_qes",
            "key": {
                "status": key_status,
                "algo": SIGN_ALGORITHMS,
                "len": 256,
                "curve": "1.2.840.10045.3.1.7",
            },
            "cert": cert,
            "auth": {
                "mode": "explicit",
                "expression": "PIN",
                "objects": [{
                    "type": "Password",
                    "id": "PIN",
                    "format": "N",
                    "label": "Signing PIN",
                    "description": "The signing PIN chosen at the registration desk",
                }],
            },
            // CSC v1 names, which some clients still read.
            "authMode": "explicit",
            "PIN": { "presence": "true", "format": "N", "label": "Signing PIN" },
            "SCAL": "2",
            "scal": "2",
            "multisign": config.max_signatures,
            "lang": "en-US",
            "status": credential.status,
            "pinAttemptsLeft": i64::from(config.pin_attempts) - credential.pin_failures,
        }))
    }

    /// `credentials/authorize`: the PIN and the exact hashes give a SAD.
    pub async fn authorize(
        &self,
        access: &Access,
        request: AuthorizeRequest,
    ) -> Result<(String, u64), CscError> {
        require_scope(access, &["service", "credential"])?;
        let ctx = self.ctx().clone();
        let config = &ctx.config.signing.csc;
        let credential = self.own_credential(access, &request.credential_id).await?;
        let algorithm = HashAlgorithm::from_oid(&request.hash_algorithm)?;
        if request.hashes.is_empty() {
            return Err(CscError::InvalidRequest(
                "missing parameter hashes: this service authorises exact hashes only (SCAL2)"
                    .into(),
            ));
        }
        algorithm.check(&request.hashes)?;
        if usize::try_from(request.num_signatures).ok() != Some(request.hashes.len()) {
            return Err(CscError::InvalidRequest(format!(
                "numSignatures ({}) must equal the number of hashes ({})",
                request.num_signatures,
                request.hashes.len()
            )));
        }
        if request.num_signatures > config.max_signatures {
            return Err(CscError::InvalidRequest(format!(
                "numSignatures is too large: at most {} per authorisation",
                config.max_signatures
            )));
        }
        let Some(pin) = request.pin else {
            return Err(CscError::InvalidRequest(
                "missing PIN: give it as authData [{\"id\": \"PIN\", ...}] (or PIN)".into(),
            ));
        };
        let audited = |outcome: Outcome, details: Value| {
            AuditEvent::new(
                format!("client:{}", access.client_id),
                "csc.credential.authorize",
                "citizen",
                &credential.national_id,
            )
            .outcome(outcome)
            .details(details)
        };
        if credential.status != "active" {
            let event = audited(
                Outcome::Denied,
                json!({ "credential": credential.credential_id, "reason": credential.status }),
            );
            audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            return Err(CscError::AccessDenied(format!(
                "the credential is {}{}",
                credential.status,
                if credential.status == "locked" {
                    " after too many wrong PINs; the citizen unlocks it at a registration desk"
                } else {
                    ""
                }
            )));
        }
        // A check is reserved before the PIN is compared, in the row: failures plus
        // checks under way stay within `pin_attempts`, so however many run at once no
        // more guesses are compared than the limit allows. Each check is settled (a
        // failure counted, or the counter reset) before its caller hears the outcome.
        let now = self.now();
        let limit = i64::from(config.pin_attempts);
        let mut tx = ctx.db.begin_write().await?;
        let reserved = sqlx::query(
            "UPDATE csc_credential SET \
             pin_checks = CASE WHEN pin_check_at < $4 THEN 1 ELSE pin_checks + 1 END, \
             pin_check_at = $2 \
             WHERE credential_id = $3 AND status = 'active' AND pin_failures + \
             CASE WHEN pin_check_at < $4 THEN 0 ELSE pin_checks END < $1 \
             RETURNING pin_failures",
        )
        .bind(limit)
        .bind(now)
        .bind(&credential.credential_id)
        .bind(now - PIN_CHECK_FORGOTTEN_SECS)
        .fetch_optional(&mut *tx)
        .await
        .map_err(CscError::db("reserving a PIN check"))?;
        tx.commit()
            .await
            .map_err(CscError::db("reserving a PIN check"))?;
        if reserved.is_none() {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM csc_credential WHERE credential_id = $1")
                    .bind(&credential.credential_id)
                    .fetch_optional(ctx.db.pool())
                    .await
                    .map_err(CscError::db("reserving a PIN check"))?;
            let busy = status.as_deref() == Some("active");
            let event = audited(
                Outcome::Denied,
                json!({
                    "credential": credential.credential_id,
                    "reason": if busy { "PIN checks under way" } else { "locked" },
                }),
            );
            audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            return Err(if busy {
                CscError::Unavailable(
                    "other PIN checks for this credential are under way, as many as the \
                     attempts left; try again in a moment"
                        .into(),
                )
            } else {
                CscError::AccessDenied(
                    "the credential is locked after too many wrong PINs; the citizen unlocks \
                     it at a registration desk"
                        .into(),
                )
            });
        }
        let stored = credential.pin_hash.clone();
        let matches = tokio::task::spawn_blocking(move || pin_matches(&pin, &stored))
            .await
            .map_err(|e| CscError::Internal(format!("PIN task: {e}")))??;
        let hashes: Vec<String> = request
            .hashes
            .iter()
            .map(|h| Base64::encode_string(h))
            .collect();
        if !matches {
            let mut tx = ctx.db.begin_write().await?;
            let settled = sqlx::query(
                "UPDATE csc_credential SET pin_failures = pin_failures + 1, \
                 pin_checks = CASE WHEN pin_checks > 0 THEN pin_checks - 1 ELSE 0 END, \
                 status = CASE WHEN status = 'active' AND pin_failures + 1 >= $1 \
                 THEN 'locked' ELSE status END, updated_at = $2 \
                 WHERE credential_id = $3 RETURNING pin_failures, status",
            )
            .bind(limit)
            .bind(now)
            .bind(&credential.credential_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(CscError::db("counting a wrong PIN"))?;
            tx.commit()
                .await
                .map_err(CscError::db("counting a wrong PIN"))?;
            let failures: i64 = settled
                .try_get("pin_failures")
                .map_err(CscError::db("counting a wrong PIN"))?;
            let locked = settled
                .try_get::<String, _>("status")
                .map_err(CscError::db("counting a wrong PIN"))?
                == "locked";
            let left = (limit - failures).max(0);
            let event = audited(
                Outcome::Denied,
                json!({
                    "credential": credential.credential_id,
                    "reason": "wrong PIN",
                    "attempts_left": left,
                    "locked": locked,
                }),
            );
            audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            return Err(if locked {
                CscError::AccessDenied(
                    "the PIN is wrong, and the credential is now locked; the citizen unlocks \
                     it at a registration desk"
                        .into(),
                )
            } else {
                CscError::InvalidPin {
                    message: format!(
                        "the PIN is wrong; {left} attempt(s) left before the credential locks"
                    ),
                }
            });
        }
        let mut tx = ctx.db.begin_write().await?;
        let sad = format!("sad-{}", random_hex::<32>()?);
        let ttl = i64::try_from(config.sad_ttl.as_secs()).unwrap_or(300);
        let reset = sqlx::query(
            "UPDATE csc_credential SET pin_failures = 0, \
             pin_checks = CASE WHEN pin_checks > 0 THEN pin_checks - 1 ELSE 0 END, \
             updated_at = $1 WHERE credential_id = $2 AND status = 'active'",
        )
        .bind(now)
        .bind(&credential.credential_id)
        .execute(&mut *tx)
        .await
        .map_err(CscError::db("resetting the PIN counter"))?;
        if reset.rows_affected() != 1 {
            return Err(CscError::AccessDenied(
                "the credential was disabled or locked meanwhile".into(),
            ));
        }
        sqlx::query(
            "INSERT INTO csc_authorization (sad_sha256, credential_id, client_id, \
             hash_algorithm, hashes, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(sha256_hex(sad.as_bytes()))
        .bind(&credential.credential_id)
        .bind(&access.client_id)
        .bind(algorithm.oid())
        .bind(Value::from(hashes.clone()).to_string())
        .bind(now)
        .bind(now + ttl)
        .execute(&mut *tx)
        .await
        .map_err(CscError::db("storing a SAD"))?;
        audit::append(
            &mut tx,
            ctx.clock.as_ref(),
            &audited(
                Outcome::Success,
                json!({
                    "credential": credential.credential_id,
                    "hash_algorithm": algorithm.oid(),
                    "hashes": hashes,
                    "sad": &sha256_hex(sad.as_bytes())[..16],
                    "expires_at": now + ttl,
                }),
            ),
        )
        .await?;
        tx.commit().await.map_err(CscError::db("committing"))?;
        Ok((sad, u64::try_from(ttl).unwrap_or(300)))
    }

    /// `credentials/authorizeCheck`: whether a SAD is still usable, and until when.
    pub async fn authorize_check(
        &self,
        access: &Access,
        credential_id: &str,
        sad: &str,
    ) -> Result<Value, CscError> {
        require_scope(access, &["service", "credential"])?;
        let credential = self.own_credential(access, credential_id).await?;
        let row = sqlx::query(
            "SELECT client_id, expires_at, used_at, hashes FROM csc_authorization \
             WHERE sad_sha256 = $1 AND credential_id = $2",
        )
        .bind(sha256_hex(sad.as_bytes()))
        .bind(&credential.credential_id)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(CscError::db("reading a SAD"))?;
        let Some(row) = row else {
            return Err(CscError::InvalidRequest(
                "invalid SAD for this credential".into(),
            ));
        };
        let read = CscError::db("reading a SAD");
        let client: String = row.try_get("client_id").map_err(read)?;
        let expires_at: i64 = row
            .try_get("expires_at")
            .map_err(CscError::db("reading a SAD"))?;
        let used_at: Option<i64> = row
            .try_get("used_at")
            .map_err(CscError::db("reading a SAD"))?;
        let hashes: String = row
            .try_get("hashes")
            .map_err(CscError::db("reading a SAD"))?;
        if client != access.client_id {
            return Err(CscError::InvalidRequest(
                "invalid SAD for this client".into(),
            ));
        }
        let now = self.now();
        let state = match (used_at, expires_at <= now) {
            (Some(_), _) => "used",
            (None, true) => "expired",
            (None, false) => "valid",
        };
        let count = serde_json::from_str::<Vec<String>>(&hashes).map_or(0, |h| h.len());
        Ok(json!({
            "status": state,
            "expiresIn": (expires_at - now).max(0),
            "numSignatures": count,
        }))
    }

    /// `signatures/signHash`: signs the hashes the authorisation covers, on the HSM.
    pub async fn sign_hash(
        &self,
        access: &Access,
        request: SignHashRequest,
    ) -> Result<Vec<String>, CscError> {
        require_scope(access, &["service", "credential"])?;
        let ctx = self.ctx().clone();
        let credential = self.own_credential(access, &request.credential_id).await?;
        let algorithm = HashAlgorithm::from_oid(&request.hash_algorithm)?;
        if request.hashes.is_empty() {
            return Err(CscError::InvalidRequest("missing parameter hashes".into()));
        }
        algorithm.check(&request.hashes)?;
        if request.sign_algorithm != algorithm.ecdsa_oid()
            && request.sign_algorithm != EC_PUBLIC_KEY
        {
            return Err(CscError::UnsupportedAlgorithm(format!(
                "signAlgo `{}` does not fit this credential's P-256 key with {} (use {} or {})",
                request.sign_algorithm,
                algorithm.oid(),
                algorithm.ecdsa_oid(),
                EC_PUBLIC_KEY
            )));
        }
        let mut unique = request.hashes.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != request.hashes.len() {
            return Err(CscError::InvalidRequest("a hash is listed twice".into()));
        }
        if credential.status != "active" {
            return Err(CscError::AccessDenied(format!(
                "the credential is {}",
                credential.status
            )));
        }
        let authority = match (&request.sad, &access.credential) {
            (Some(sad), _) => Authority::Sad(sad.clone()),
            (None, Some(authorised)) => {
                if authorised.credential_id != credential.credential_id {
                    return Err(CscError::InsufficientScope(
                        "the access token authorises another credential".into(),
                    ));
                }
                if HashAlgorithm::from_oid(&authorised.hash_algorithm)? != algorithm {
                    return Err(CscError::InvalidRequest(
                        "hashAlgorithmOID differs from the authorised one".into(),
                    ));
                }
                if let Some(extra) = request
                    .hashes
                    .iter()
                    .find(|h| !authorised.hashes.contains(h))
                {
                    return Err(CscError::InvalidRequest(format!(
                        "hash {} was not authorised by the access token",
                        Base64::encode_string(extra)
                    )));
                }
                Authority::Token
            }
            (None, None) => {
                return Err(CscError::InvalidRequest(
                    "missing parameter SAD (and the access token authorises no credential)".into(),
                ));
            }
        };
        // The certificate must be good now: asked of our responder, fail closed.
        let issuer = self.issuer_of(&credential)?;
        if let Err(e) = revocation::check(
            self.inner.signatures.responders(),
            &credential.certificate,
            &issuer,
            ctx.clock.now(),
            revocation::Freshness::Current,
        )
        .await
        {
            let refusal = CscError::from(e);
            if matches!(refusal, CscError::AccessDenied(_)) {
                let event = AuditEvent::new(
                    format!("client:{}", access.client_id),
                    "csc.signature.sign_hash",
                    "citizen",
                    &credential.national_id,
                )
                .outcome(Outcome::Denied)
                .details(json!({
                    "credential": credential.credential_id,
                    "reason": refusal.to_string(),
                }));
                audit::record(&ctx.db, ctx.clock.as_ref(), &event).await?;
            }
            return Err(refusal);
        }

        // Check the authorisation, sign on the HSM, then spend the authorisation and
        // record the signatures in one short transaction. The spending is conditional
        // (still unused), so of two concurrent calls with one SAD only one gets its
        // signatures; the other's are discarded, never returned. The HSM works outside
        // the transaction, so the writer is not held while it signs.
        let now = self.now();
        let hashes_b64: Vec<String> = request
            .hashes
            .iter()
            .map(|h| Base64::encode_string(h))
            .collect();
        let sad_key = match &authority {
            Authority::Sad(sad) => {
                let key = sha256_hex(sad.as_bytes());
                self.check_sad(&key, &credential, access, algorithm, &hashes_b64, now)
                    .await?;
                key
            }
            Authority::Token => sha256_hex(format!("jti:{}", access.jti).as_bytes()),
        };
        let label = KeyLabel::new(credential.key_label.clone())
            .map_err(|e| CscError::Internal(e.to_string()))?;
        let keys = ctx.keys.clone();
        let digests = request.hashes.clone();
        let signatures = tokio::task::spawn_blocking(move || {
            let signer = keys.signer(&label, None)?;
            digests
                .iter()
                .map(|d| signer.sign_digest(d).map(eid_hsm::Signature::into_bytes))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| CscError::Internal(format!("signing task: {e}")))?
        .map_err(|e| CscError::Unavailable(format!("the HSM could not sign: {e}")))?;

        let authorisation_ref = match &authority {
            Authority::Sad(_) => format!("sad:{}", &sad_key[..16]),
            Authority::Token => format!("token:{}", access.jti),
        };
        let event = AuditEvent::new(
            format!("client:{}", access.client_id),
            "csc.signature.sign_hash",
            "citizen",
            &credential.national_id,
        )
        .details(json!({
            "credential": credential.credential_id,
            "certificate_serial": hex::encode_upper(credential.certificate.tbs_certificate().serial_number().as_bytes()),
            "hash_algorithm": algorithm.oid(),
            "hashes": hashes_b64,
            "authorisation": authorisation_ref,
        }));
        // Spent with its audit entry in a shared (group) commit: the statement fails
        // only when the database does, and an authorisation already spent shows as no
        // row changed.
        let by_token = matches!(authority, Authority::Token);
        let (credential_id, client_id) =
            (credential.credential_id.clone(), access.client_id.clone());
        let (expires_at, oid) = (access.expires_at, algorithm.oid());
        let hashes_json = Value::from(hashes_b64).to_string();
        let spent = ctx
            .db
            .group_commit(&ctx.clock)
            .write_without_savepoint(move |conn| {
                Box::pin(async move {
                    let spent = if by_token {
                        sqlx::query(
                            "INSERT INTO csc_authorization (sad_sha256, credential_id, \
                             client_id, hash_algorithm, hashes, created_at, expires_at, used_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $6) \
                             ON CONFLICT (sad_sha256) DO NOTHING",
                        )
                        .bind(&sad_key)
                        .bind(&credential_id)
                        .bind(&client_id)
                        .bind(oid)
                        .bind(&hashes_json)
                        .bind(now)
                        .bind(expires_at)
                        .execute(&mut *conn)
                        .await
                    } else {
                        sqlx::query(
                            "UPDATE csc_authorization SET used_at = $1 WHERE sad_sha256 = $2 \
                             AND used_at IS NULL",
                        )
                        .bind(now)
                        .bind(&sad_key)
                        .execute(&mut *conn)
                        .await
                    }
                    .map_err(CscError::db("spending a signature authorisation"))?
                    .rows_affected();
                    Ok::<_, CscError>(Written {
                        value: spent,
                        audit: if spent == 1 { vec![event] } else { Vec::new() },
                    })
                })
            })
            .await?;
        if spent != 1 {
            return Err(CscError::InvalidRequest(if by_token {
                "the access token's credential authorisation is already used".into()
            } else {
                "invalid SAD: already used (a SAD is single-use)".into()
            }));
        }
        Ok(signatures
            .iter()
            .map(|s| Base64::encode_string(s))
            .collect())
    }

    /// The issuer of the credential's certificate, checked (chain, key usage) the first
    /// time and remembered; its validity is checked every time.
    fn issuer_of(&self, credential: &Credential) -> Result<Certificate, CscError> {
        let now = self.ctx().clock.now();
        let key = <[u8; 32]>::from(Sha256::digest(&credential.certificate_der));
        let known = self
            .inner
            .checked_issuers
            .lock()
            .ok()
            .and_then(|known| known.get(&key).cloned());
        if let Some(issuer) = known {
            let validity = credential.certificate.tbs_certificate().validity();
            let not_before = time::OffsetDateTime::from(validity.not_before.to_system_time());
            let not_after = time::OffsetDateTime::from(validity.not_after.to_system_time());
            if now < not_before || now > not_after {
                return Err(CscError::AccessDenied(format!(
                    "the credential's certificate is not valid now (valid {not_before} to \
                     {not_after})"
                )));
            }
            return Ok(issuer);
        }
        let issuer = self
            .inner
            .signatures
            .trust()
            .check_signer(&credential.certificate, now)?
            .clone();
        if let Ok(mut known) = self.inner.checked_issuers.lock() {
            if known.len() >= MAX_CHECKED_ISSUERS {
                known.clear();
            }
            known.insert(key, issuer.clone());
        }
        Ok(issuer)
    }

    /// Checks that the SAD (by its hash) authorises these hashes of this credential
    /// for this client, unused and unexpired.
    async fn check_sad(
        &self,
        key: &str,
        credential: &Credential,
        access: &Access,
        algorithm: HashAlgorithm,
        hashes_b64: &[String],
        now: i64,
    ) -> Result<(), CscError> {
        let read = || CscError::db("reading a SAD");
        let row = sqlx::query(
            "SELECT credential_id, client_id, hash_algorithm, hashes, expires_at, used_at \
             FROM csc_authorization WHERE sad_sha256 = $1",
        )
        .bind(key)
        .fetch_optional(self.ctx().db.pool())
        .await
        .map_err(read())?
        .ok_or_else(|| CscError::InvalidRequest("invalid SAD: unknown to this service".into()))?;
        let get_s = |name: &str| -> Result<String, CscError> { row.try_get(name).map_err(read()) };
        let expires_at: i64 = row.try_get("expires_at").map_err(read())?;
        let used_at: Option<i64> = row.try_get("used_at").map_err(read())?;
        if get_s("credential_id")? != credential.credential_id {
            return Err(CscError::InvalidRequest(
                "invalid SAD: it authorises another credential".into(),
            ));
        }
        if get_s("client_id")? != access.client_id {
            return Err(CscError::InvalidRequest(
                "invalid SAD: it was given to another client".into(),
            ));
        }
        if used_at.is_some() {
            return Err(CscError::InvalidRequest(
                "invalid SAD: already used (a SAD is single-use)".into(),
            ));
        }
        if expires_at <= now {
            return Err(CscError::InvalidRequest("invalid SAD: expired".into()));
        }
        if get_s("hash_algorithm")? != algorithm.oid() {
            return Err(CscError::InvalidRequest(
                "hashAlgorithmOID differs from the one the SAD was given for".into(),
            ));
        }
        let authorised: Vec<String> = serde_json::from_str(&get_s("hashes")?)
            .map_err(|e| CscError::Internal(format!("stored hashes: {e}")))?;
        if let Some(extra) = hashes_b64.iter().find(|h| !authorised.contains(h)) {
            return Err(CscError::InvalidRequest(format!(
                "hash {extra} was not authorised by this SAD (SCAL2: a SAD covers exactly \
                 the hashes given to credentials/authorize)"
            )));
        }
        Ok(())
    }

    /// `signatures/timestamp`: an RFC 3161 token over the hash from our TSA.
    pub async fn timestamp(
        &self,
        access: &Access,
        hash: &[u8],
        hash_algorithm: &str,
        nonce: Option<&[u8]>,
    ) -> Result<Vec<u8>, CscError> {
        require_scope(access, &["service", "credential"])?;
        let algorithm = HashAlgorithm::from_oid(hash_algorithm)?;
        algorithm.check(&[hash.to_vec()])?;
        let generated;
        let nonce = match nonce {
            Some(n) if !n.is_empty() && n.len() <= 32 => n,
            Some(_) => {
                return Err(CscError::InvalidRequest(
                    "nonce must be 1 to 32 octets (hex)".into(),
                ));
            }
            None => {
                let mut n = [0u8; 8];
                getrandom::fill(&mut n).map_err(|e| CscError::Internal(format!("nonce: {e}")))?;
                n[0] = (n[0] & 0x7f) | 0x01;
                generated = n;
                &generated
            }
        };
        // A positive INTEGER in its minimal encoding: leading zero octets go, and one
        // comes back only to keep a high bit from reading as a sign.
        let digits: Vec<u8> = nonce.iter().copied().skip_while(|b| *b == 0).collect();
        if digits.is_empty() {
            return Err(CscError::InvalidRequest("nonce must not be zero".into()));
        }
        let mut integer = digits;
        if integer.first().is_some_and(|b| b & 0x80 != 0) {
            integer.insert(0, 0);
        }
        let token = self
            .inner
            .signatures
            .time_stamps()
            .stamp_imprint(algorithm.digest_algorithm(), hash, &integer)
            .await?;
        token
            .token
            .to_der()
            .map_err(|e| CscError::Internal(format!("encoding a token: {e}")))
    }
}

/// Most credential certificates remembered as checked; the memory is cleared when full.
const MAX_CHECKED_ISSUERS: usize = 10_000;

/// How often stale rows are purged.
const PURGE_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
/// How long past its expiry a spent or unused authorisation, or an unfinished pending
/// signature, stays (the audit log keeps what happened for good).
const KEEP_EXPIRED_SECS: i64 = 24 * 3600;

/// Deletes signature authorisations and unfinished pending signatures a day past their
/// expiry at `now` (Unix seconds); returns how many rows went.
pub async fn purge_expired(db: &eid_core::Database, now: i64) -> Result<u64, CscError> {
    let before = now - KEEP_EXPIRED_SECS;
    let mut purged = 0;
    for sql in [
        "DELETE FROM csc_authorization WHERE expires_at < $1",
        // A finished signature is the service's record of it; the others are not.
        "DELETE FROM pending_signature WHERE expires_at < $1 AND state <> 'completed'",
    ] {
        purged += sqlx::query(sql)
            .bind(before)
            .execute(db.pool())
            .await
            .map_err(CscError::db("purging expired rows"))?
            .rows_affected();
    }
    Ok(purged)
}

/// Runs [`purge_expired`] every ten minutes until `shutdown`.
pub async fn maintain(ctx: ServiceContext, shutdown: tokio_util::sync::CancellationToken) {
    let mut ticker = tokio::time::interval(PURGE_EVERY);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => match purge_expired(&ctx.db, ctx.clock.now().unix_timestamp()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rows = n, "purged expired signature authorisations"),
                Err(e) => tracing::warn!(error = %e, "purging expired signature rows failed"),
            },
        }
    }
}

/// Unlocks a credential locked by wrong PINs (an operator or supervisor, after the
/// citizen proved who they are in person). Audited.
pub async fn unlock(
    ctx: &ServiceContext,
    actor: &str,
    credential_id: &str,
) -> Result<(), CscError> {
    let now = ctx.clock.now().unix_timestamp();
    let mut tx = ctx.db.begin_write().await?;
    let row =
        sqlx::query("SELECT national_id, status FROM csc_credential WHERE credential_id = $1")
            .bind(credential_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(CscError::db("reading a credential"))?
            .ok_or_else(|| CscError::InvalidRequest(format!("no credential `{credential_id}`")))?;
    let national_id: String = row
        .try_get("national_id")
        .map_err(CscError::db("reading a credential"))?;
    let status: String = row
        .try_get("status")
        .map_err(CscError::db("reading a credential"))?;
    if status != "locked" {
        return Err(CscError::InvalidRequest(format!(
            "credential `{credential_id}` is {status}, not locked"
        )));
    }
    sqlx::query(
        "UPDATE csc_credential SET status = 'active', pin_failures = 0, updated_at = $1 \
         WHERE credential_id = $2",
    )
    .bind(now)
    .bind(credential_id)
    .execute(&mut *tx)
    .await
    .map_err(CscError::db("unlocking a credential"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "csc.credential.unlock", "citizen", &national_id)
            .details(json!({ "credential": credential_id })),
    )
    .await?;
    tx.commit().await.map_err(CscError::db("committing"))?;
    Ok(())
}

fn require_scope(access: &Access, any_of: &[&str]) -> Result<(), CscError> {
    if any_of.iter().any(|s| access.has_scope(s)) || access.credential.is_some() {
        Ok(())
    } else {
        Err(CscError::InsufficientScope(format!(
            "this method needs an access token with scope {}",
            any_of.join(" or ")
        )))
    }
}

/// `YYYYMMDDHHMMSSZ`, as CSC writes certificate validity.
fn generalized(at: time::OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}
