//! The OCSP responder: pre-produced responses served from memory; the `ocsp_response`
//! table keeps the responses each status change produced (in the change's own
//! transaction, so it never disagrees with the database); responses for nonce requests
//! and for several certificates are signed on demand by the delegated responder.
//!
//! A revocation made in this process replaces the certificate's responses before the
//! revoke call returns. One made by another process (`eid ca revoke` beside a running
//! server) bumps the revocation epoch in the same transaction and then asks the server
//! to re-read it (`POST /internal/revocation-sync`) before returning; the server also
//! polls the epoch, and drops its memory cache when it moves.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
};

use sqlx::Row;
use time::OffsetDateTime;

use crate::{
    CaError, CaRole, Hierarchy,
    ocsp::{self, CertIdHash, CertIdKey, ErrorStatus, IssuerHashes, ResponseEntry, Status},
    parse_rfc3339,
    reason::ReasonCode,
    rfc3339,
};

/// A response ready to send, with what RFC 5019 caching headers need.
#[derive(Clone, Debug)]
pub struct OcspAnswer {
    /// The DER `OCSPResponse`.
    pub body: Arc<[u8]>,
    /// For a cacheable (single, nonce-less, successful) response.
    pub cache: Option<Arc<CacheInfo>>,
}

/// The validity of a cacheable response, and its HTTP caching headers prepared once.
#[derive(Debug)]
pub struct CacheInfo {
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// `Last-Modified` (thisUpdate as an HTTP date).
    pub last_modified: String,
    /// `Expires` (nextUpdate as an HTTP date).
    pub expires: String,
    /// `ETag`: a hash of the response.
    pub etag: String,
}

impl OcspAnswer {
    fn error(status: ErrorStatus) -> Self {
        Self {
            body: ocsp::error_response(status).into(),
            cache: None,
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Cached {
    body: Arc<[u8]>,
    info: Arc<CacheInfo>,
}

impl Cached {
    fn new(body: Arc<[u8]>, this_update: OffsetDateTime, next_update: OffsetDateTime) -> Self {
        use sha2::Digest;
        let info = CacheInfo {
            last_modified: httpdate::fmt_http_date(this_update.into()),
            expires: httpdate::fmt_http_date(next_update.into()),
            etag: format!("\"{}\"", hex::encode(sha2::Sha256::digest(&body))),
            this_update,
            next_update,
        };
        Self {
            body,
            info: Arc::new(info),
        }
    }

    fn answer(&self) -> OcspAnswer {
        OcspAnswer {
            body: self.body.clone(),
            cache: Some(self.info.clone()),
        }
    }
}

/// The responder's state, shared by the CA's clones.
#[derive(Debug)]
pub(crate) struct ResponderState {
    issuers: Vec<(CaRole, IssuerHashes)>,
    cache: RwLock<HashMap<(CertIdHash, Vec<u8>), Cached>>,
    /// Statuses of known certificates (good or revoked; never unknown, which a later
    /// issuance would change), for responses signed on demand.
    statuses: RwLock<HashMap<(CaRole, Vec<u8>), Status>>,
    epoch: AtomicI64,
    /// Bumped by every local change to the caches. An answer or status read before a
    /// change is put into a cache only if no change came in between (checked under the
    /// cache's lock), so a stale "good" can never overwrite a fresh "revoked".
    generation: AtomicU64,
}

fn hash_name(hash: CertIdHash) -> &'static str {
    match hash {
        CertIdHash::Sha1 => "sha1",
        CertIdHash::Sha256 => "sha256",
    }
}

impl ResponderState {
    pub(crate) fn new(hierarchy: &Hierarchy) -> Result<Self, CaError> {
        let mut issuers = Vec::new();
        for role in CaRole::ISSUING_CAS {
            let hashes = IssuerHashes::new(&hierarchy.get(role)?.certificate)
                .map_err(|e| CaError::encoding("issuer hashes", e))?;
            issuers.push((role, hashes));
        }
        Ok(Self {
            issuers,
            cache: RwLock::new(HashMap::new()),
            statuses: RwLock::new(HashMap::new()),
            epoch: AtomicI64::new(-1),
            generation: AtomicU64::new(0),
        })
    }

    fn issuer_of(&self, id: &CertIdKey) -> Option<CaRole> {
        self.issuers
            .iter()
            .find(|(_, hashes)| hashes.matches(id))
            .map(|(role, _)| *role)
    }

    fn cached(
        &self,
        id: &CertIdKey,
        now: OffsetDateTime,
        refresh_after: time::Duration,
    ) -> Option<Cached> {
        let cache = self.cache.read().ok()?;
        let entry = cache.get(&(id.hash, id.serial.as_bytes().to_vec()))?;
        // Re-signed when half its validity is gone, so clients always get a fresh one.
        (now < entry.info.this_update + refresh_after).then(|| entry.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Caches an answer produced from state read at generation `seen`, unless the
    /// caches changed since.
    fn remember(&self, id: &CertIdKey, cached: Cached, seen: u64) {
        if let Ok(mut cache) = self.cache.write()
            && self.generation() == seen
        {
            cache.insert((id.hash, id.serial.as_bytes().to_vec()), cached);
        }
    }

    fn known_status(&self, issuer: CaRole, id: &CertIdKey) -> Option<Status> {
        let statuses = self.statuses.read().ok()?;
        statuses
            .get(&(issuer, id.serial.as_bytes().to_vec()))
            .copied()
    }

    fn remember_status(&self, key: (CaRole, Vec<u8>), status: Status, seen: u64) {
        if let Ok(mut statuses) = self.statuses.write()
            && self.generation() == seen
        {
            statuses.insert(key, status);
        }
    }

    /// Records an epoch this process itself produced. Only when it directly follows the
    /// last one seen: otherwise another process changed something too, and the next
    /// poll must notice.
    pub(crate) fn epoch_seen(&self, epoch: i64) {
        let _ = self
            .epoch
            .compare_exchange(epoch - 1, epoch, Ordering::SeqCst, Ordering::SeqCst);
    }

    fn forget_serial(&self, serial: &[u8]) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut cache) = self.cache.write() {
            cache.retain(|(_, s), _| s != serial);
        }
        if let Ok(mut statuses) = self.statuses.write() {
            statuses.retain(|(_, s), _| s != serial);
        }
    }

    pub(crate) fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
        if let Ok(mut statuses) = self.statuses.write() {
            statuses.clear();
        }
    }
}

impl crate::CertificateAuthority {
    /// Answers an OCSP request (DER). Never fails: errors become OCSP error responses.
    pub async fn respond_ocsp(&self, request: &[u8]) -> OcspAnswer {
        match self.respond_inner(request).await {
            Ok(answer) => answer,
            Err(AnswerError::Ocsp(status)) => OcspAnswer::error(status),
            Err(AnswerError::Internal(e)) => {
                tracing::error!(error = %e, "OCSP responder failed");
                OcspAnswer::error(ErrorStatus::InternalError)
            }
        }
    }

    async fn respond_inner(&self, request: &[u8]) -> Result<OcspAnswer, AnswerError> {
        let parsed = ocsp::parse_request(request).map_err(|e| {
            tracing::debug!(error = %e, "malformed OCSP request");
            AnswerError::Ocsp(e.response_status())
        })?;
        let state = &self.responder;
        let mut issuer = None;
        for id in &parsed.certs {
            match (state.issuer_of(id), issuer) {
                (None, _) => return Err(AnswerError::Ocsp(ErrorStatus::Unauthorized)),
                (Some(role), Some(seen)) if role != seen => {
                    // One response has one signer: a request spanning issuers is refused.
                    return Err(AnswerError::Ocsp(ErrorStatus::Unauthorized));
                }
                (Some(role), _) => issuer = Some(role),
            }
        }
        let issuer = issuer.ok_or(AnswerError::Ocsp(ErrorStatus::MalformedRequest))?;
        // Before any state is read: see ResponderState::generation.
        let seen = state.generation();
        let now = self.ctx.clock.now();
        let validity = time::Duration::hours(i64::from(self.ctx.config.ca.ocsp_validity_hours));
        let cacheable = parsed.nonce.is_none() && parsed.certs.len() == 1;
        if cacheable {
            let id = &parsed.certs[0];
            if let Some(hit) = state.cached(id, now, validity / 2) {
                return Ok(hit.answer());
            }
            if let Some(stored) = self.stored_response(id, now, validity / 2).await? {
                state.remember(id, stored.clone(), seen);
                return Ok(stored.answer());
            }
        }
        // A connection only when a status is not in memory: acquiring one costs a
        // round trip (the pool checks it), which nonce requests mostly need not pay.
        let mut conn = None;
        let mut entries = Vec::with_capacity(parsed.certs.len());
        for id in &parsed.certs {
            let status = match state.known_status(issuer, id) {
                Some(status) => status,
                None => {
                    let conn = match &mut conn {
                        Some(conn) => conn,
                        None => conn.insert(
                            self.ctx
                                .db
                                .pool()
                                .acquire()
                                .await
                                .map_err(CaError::query("acquiring a connection"))?,
                        ),
                    };
                    self.read_status(conn, issuer, id, seen).await?
                }
            };
            entries.push(ResponseEntry {
                cert_id: id.clone(),
                status,
                this_update: now,
                next_update: Some(now + validity),
            });
        }
        drop(conn);
        let body = self
            .sign_ocsp(issuer, entries.clone(), parsed.nonce, now)
            .await?;
        if !cacheable {
            return Ok(OcspAnswer { body, cache: None });
        }
        let cached = Cached::new(body, now, now + validity);
        // Kept in memory only: the table holds what status changes produced, inside
        // their own transactions. An unknown serial may be issued later: not kept.
        if entries[0].status != Status::Unknown {
            state.remember(&entries[0].cert_id, cached.clone(), seen);
        }
        Ok(cached.answer())
    }

    async fn sign_ocsp(
        &self,
        issuer: CaRole,
        entries: Vec<ResponseEntry>,
        nonce: Option<Vec<u8>>,
        now: OffsetDateTime,
    ) -> Result<Arc<[u8]>, CaError> {
        let responder_role = issuer
            .ocsp_responder()
            .ok_or_else(|| CaError::Task(format!("{issuer} has no OCSP responder")))?;
        // A revoked (or replaced) delegated responder signs nothing more: until a
        // restart gives it a new key, the CA answers itself (RFC 6960 §4.2.2.2).
        let signing_role = match self.out_of_service(responder_role) {
            Some(_) => issuer,
            None => responder_role,
        };
        // The shared hierarchy goes to the signing job, not a copy of the authority
        // (its certificates).
        let hierarchy = self.hierarchy.clone();
        let body = self
            .hierarchy
            .get(signing_role)?
            .signer
            .run_signing(move || {
                let responder = hierarchy.get(signing_role)?;
                ocsp::sign_response(
                    &responder.signer,
                    &responder.certificate,
                    &entries,
                    nonce.as_deref(),
                    now,
                )
                .map_err(|e| CaError::Task(format!("signing an OCSP response: {e}")))
            })
            .await
            .map_err(|e| CaError::Task(e.to_string()))??;
        Ok(body.into())
    }

    /// Reads `id`'s status from the database and remembers it (unless unknown, or the
    /// caches changed since generation `seen`).
    async fn read_status(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
        id: &CertIdKey,
        seen: u64,
    ) -> Result<Status, CaError> {
        let status = self.status(conn, issuer, id).await?;
        if status != Status::Unknown {
            self.responder
                .remember_status((issuer, id.serial.as_bytes().to_vec()), status, seen);
        }
        Ok(status)
    }

    /// The status of `id`'s certificate as the database (or the open transaction on
    /// `conn`) knows it.
    async fn status(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
        id: &CertIdKey,
    ) -> Result<Status, CaError> {
        let row = sqlx::query(
            "SELECT revoked_at, revocation_reason FROM certificate \
             WHERE serial = $1 AND issuer_role = $2 AND state = 'issued'",
        )
        .bind(hex::encode(id.serial.as_bytes()))
        .bind(issuer.name())
        .fetch_optional(&mut *conn)
        .await
        .map_err(CaError::query("reading a certificate's status"))?;
        let Some(row) = row else {
            return Ok(Status::Unknown);
        };
        let revoked_at: Option<String> = row
            .try_get("revoked_at")
            .map_err(CaError::query("reading a certificate's status"))?;
        let reason: Option<String> = row
            .try_get("revocation_reason")
            .map_err(CaError::query("reading a certificate's status"))?;
        Ok(match revoked_at {
            None => Status::Good,
            Some(at) => Status::Revoked {
                at: parse_rfc3339(&at)?,
                reason: reason
                    .map(|r| ReasonCode::parse(&r))
                    .transpose()
                    .map_err(|e| CaError::encoding("stored revocation reason", e))?,
            },
        })
    }

    async fn stored_response(
        &self,
        id: &CertIdKey,
        now: OffsetDateTime,
        refresh_after: time::Duration,
    ) -> Result<Option<Cached>, CaError> {
        let row = sqlx::query(
            "SELECT this_update, next_update, der FROM ocsp_response \
             WHERE serial = $1 AND cert_id_hash = $2",
        )
        .bind(hex::encode(id.serial.as_bytes()))
        .bind(hash_name(id.hash))
        .fetch_optional(self.ctx.db.pool())
        .await
        .map_err(CaError::query("reading a pre-produced OCSP response"))?;
        let Some(row) = row else { return Ok(None) };
        let read = |name: &str| -> Result<String, CaError> {
            row.try_get(name)
                .map_err(CaError::query("reading a pre-produced OCSP response"))
        };
        let this_update = parse_rfc3339(&read("this_update")?)?;
        let next_update = parse_rfc3339(&read("next_update")?)?;
        let der: Vec<u8> = row
            .try_get("der")
            .map_err(CaError::query("reading a pre-produced OCSP response"))?;
        Ok((now < this_update + refresh_after)
            .then(|| Cached::new(der.into(), this_update, next_update)))
    }

    async fn store_response(
        conn: &mut sqlx::AnyConnection,
        entry: &ResponseEntry,
        cached: &Cached,
    ) -> Result<(), CaError> {
        let status = match entry.status {
            Status::Good => "good",
            Status::Revoked { .. } => "revoked",
            Status::Unknown => "unknown",
        };
        sqlx::query(
            "INSERT INTO ocsp_response (serial, cert_id_hash, status, this_update, next_update, der) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (serial, cert_id_hash) DO UPDATE SET \
             status = excluded.status, this_update = excluded.this_update, \
             next_update = excluded.next_update, der = excluded.der",
        )
        .bind(hex::encode(entry.cert_id.serial.as_bytes()))
        .bind(hash_name(entry.cert_id.hash))
        .bind(status)
        .bind(rfc3339(cached.info.this_update)?)
        .bind(rfc3339(cached.info.next_update)?)
        .bind(cached.body.as_ref())
        .execute(&mut *conn)
        .await
        .map_err(CaError::query("storing a pre-produced OCSP response"))?;
        Ok(())
    }

    /// Produces new responses (SHA-1 and SHA-256 CertIDs) for a certificate whose status
    /// changed, and stores them on `conn` (the transaction of the change). The caller
    /// puts them in the memory cache with [`Self::cache_responses`] once it commits.
    pub(crate) async fn reproduce_responses(
        &self,
        conn: &mut sqlx::AnyConnection,
        issuer: CaRole,
        serial: &[u8],
    ) -> Result<Vec<(CertIdKey, Cached)>, CaError> {
        let hashes = self
            .responder
            .issuers
            .iter()
            .find(|(role, _)| *role == issuer)
            .map(|(_, hashes)| hashes.clone())
            .ok_or_else(|| {
                CaError::Task(format!("{issuer} does not issue citizen certificates"))
            })?;
        let now = self.ctx.clock.now();
        let validity = time::Duration::hours(i64::from(self.ctx.config.ca.ocsp_validity_hours));
        let mut fresh = Vec::new();
        for hash in [CertIdHash::Sha1, CertIdHash::Sha256] {
            let id = hashes.cert_id(hash, ocsp::CertificateSerial::from_be_bytes(serial));
            let entry = ResponseEntry {
                status: self.status(conn, issuer, &id).await?,
                cert_id: id,
                this_update: now,
                next_update: Some(now + validity),
            };
            let body = self
                .sign_ocsp(issuer, vec![entry.clone()], None, now)
                .await?;
            let cached = Cached::new(body, now, now + validity);
            Self::store_response(conn, &entry, &cached).await?;
            fresh.push((entry.cert_id, cached));
        }
        Ok(fresh)
    }

    /// Replaces a certificate's responses in the memory cache.
    pub(crate) fn cache_responses(&self, serial: &[u8], fresh: Vec<(CertIdKey, Cached)>) {
        // Invalidates first (bumping the generation), so a request that read the old
        // status cannot put its answer back afterwards.
        self.responder.forget_serial(serial);
        let seen = self.responder.generation();
        for (id, cached) in fresh {
            self.responder.remember(&id, cached, seen);
        }
    }

    /// Drops the memory cache if another process changed a revocation status since the
    /// last look. Called by the server at short intervals.
    pub async fn sync_revocations(&self) -> Result<(), CaError> {
        let epoch: i64 = sqlx::query("SELECT epoch FROM revocation_epoch WHERE id = 1")
            .fetch_one(self.ctx.db.pool())
            .await
            .and_then(|row| row.try_get("epoch"))
            .map_err(CaError::query("reading the revocation epoch"))?;
        let previous = self.responder.epoch.swap(epoch, Ordering::SeqCst);
        // The first look (no epoch seen yet) drops the caches too: answers may have been
        // cached before it from statuses another process has changed since, and with no
        // earlier epoch to compare, nothing else would ever drop them.
        if previous != epoch {
            self.responder.forget_all();
            self.load_out_of_service().await?;
            if previous != -1 {
                tracing::info!(
                    epoch,
                    "revocation status changed elsewhere; OCSP cache reloaded"
                );
            }
        }
        Ok(())
    }
}

enum AnswerError {
    Ocsp(ErrorStatus),
    Internal(CaError),
}

impl From<CaError> for AnswerError {
    fn from(e: CaError) -> Self {
        Self::Internal(e)
    }
}
