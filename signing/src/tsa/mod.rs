//! The time-stamp authority: RFC 3161 with the token profile of ETSI EN 319 422.
//!
//! [`TimeStampAuthority::respond`] takes a DER `TimeStampReq` and always returns a DER
//! `TimeStampResp`: a token, or a rejection with the PKIFailureInfo that says why.
//!
//! **Records and audit.** Each token's record is its audit entry, `tsa.timestamp.issue`
//! (serial, genTime, policy, imprint, nonce, TSU; the imprint, never the data),
//! appended before the token leaves the TSA: a token without its record cannot exist.
//! A writer task batches the records of the requests waiting at that moment into one
//! audit-chain append (see `records.rs` for why not the shared group commit); the cost
//! is measured in the README. A unique index on the serials of these entries is the
//! final guard of uniqueness across restarts and replicas: serials are the
//! millisecond of issue and 72 random bits, and a clash (never seen in practice) is
//! retried with a new serial.
//! The TSA's start (its policy, unit and clock checks) and every change of clock trust
//! (`tsa.clock.untrusted`, `tsa.clock.trusted` with the number of requests refused
//! meanwhile) are audited too; single refusals are not state changes and are not.

pub mod asn1;
pub mod clock;
mod gen_time;
mod records;
pub mod sntp;
pub mod token;

use std::sync::Arc;

use der::asn1::ObjectIdentifier;
use eid_core::{AuditEvent, CertificateStanding, Outcome, ServiceContext, audit};
use eid_hsm::KeySigner;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use x509_cert::Certificate;

pub use self::asn1::FailureInfo;
pub use self::clock::{ClockMonitor, OsStatusSource, Verdict};
pub use self::gen_time::GenTime;
use self::records::RecordWriter;
use self::token::{ParsedRequest, TokenSigner};
use crate::TsaError;

/// The time-stamping unit: the key that signs tokens and its certificate.
///
/// The `eid` binary builds it from the CA hierarchy and hands it over, so the signing
/// service depends on no other service's crate (ARCHITECTURE.md: services do not import
/// each other's internals); what it needs is a signer and certificates, which the key
/// layer and x509-cert already describe.
#[derive(Clone, Debug)]
pub struct TimeStampUnit {
    /// The TSU key, in the key layer (soft store or PKCS#11 token).
    pub signer: KeySigner,
    /// The TSU certificate: critical extended key usage id-kp-timeStamping only.
    pub certificate: Certificate,
    /// Certificates between the TSU certificate and the trust anchor, issuer first
    /// after the TSU (not the root); sent with the TSU certificate when asked.
    pub chain: Vec<Certificate>,
    /// Asked before every token whether the unit's certificate may still be used
    /// (the CA says no once it is revoked or replaced: a token it signed would not
    /// validate, and its key may be compromised); none: always.
    pub status: Option<Arc<dyn CertificateStanding>>,
}

/// The TSA. Cheap to clone.
#[derive(Clone, Debug)]
pub struct TimeStampAuthority {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ctx: ServiceContext,
    token: TokenSigner,
    monitor: ClockMonitor,
    records: RecordWriter,
    tsu_serial: String,
    status: Option<Arc<dyn CertificateStanding>>,
}

/// The actor of the TSA's own audit events.
const ACTOR: &str = "service:signing";

impl TimeStampAuthority {
    /// Starts the TSA with the OS's own clock status source: checks the unit and the
    /// configuration, records the start, runs the clock checks once and keeps them
    /// running until `shutdown`.
    pub async fn start(
        ctx: &ServiceContext,
        unit: TimeStampUnit,
        shutdown: CancellationToken,
    ) -> Result<Self, TsaError> {
        Self::start_with(ctx, unit, OsStatusSource::default(), shutdown).await
    }

    /// [`Self::start`] with another OS status source (tests).
    pub async fn start_with(
        ctx: &ServiceContext,
        unit: TimeStampUnit,
        os: OsStatusSource,
        shutdown: CancellationToken,
    ) -> Result<Self, TsaError> {
        ctx.config.check_tsa_clock_for_profile()?;
        let config = &ctx.config.signing.tsa;
        let policy = ObjectIdentifier::new(&config.policy)
            .map_err(|e| TsaError::Unit(format!("policy {}: {e}", config.policy)))?;
        let token = TokenSigner::new(
            &unit,
            policy,
            config.accuracy,
            config.qualified,
            config.include_tsa_name,
        )?;
        let tsu_serial = hex::encode(
            unit.certificate
                .tbs_certificate()
                .serial_number()
                .as_bytes(),
        );
        let tsa = Self {
            inner: Arc::new(Inner {
                ctx: ctx.clone(),
                token,
                monitor: ClockMonitor::new(config.clock.clone(), os),
                records: RecordWriter::start(ctx.clone()),
                tsu_serial,
                status: unit.status.clone(),
            }),
        };
        let clock = &config.clock;
        if clock.danger_unchecked {
            tracing::warn!(
                "signing.tsa.clock.danger_unchecked is set: the TSA stamps without checking its clock"
            );
        }
        let first = tsa.inner.monitor.check(ctx.clock.as_ref()).await;
        tsa.record(
            AuditEvent::new(ACTOR, "tsa.start", "tsa", tsa.inner.tsu_serial.clone()).details(
                serde_json::json!({
                    "policy": config.policy,
                    "accuracy_millis": u64::try_from(config.accuracy.as_millis()).unwrap_or(u64::MAX),
                    "qualified": config.qualified,
                    "tsu_subject": unit.certificate.tbs_certificate().subject().to_string(),
                    "tsu_key": unit.signer.info().label.to_string(),
                    "key_store": ctx.keys.description(),
                    "clock": {
                        "os_sync": clock.os_sync.name(),
                        "ntp_servers": clock.ntp_servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "max_drift_millis": u64::try_from(clock.max_drift.as_millis()).unwrap_or(u64::MAX),
                        "danger_unchecked": clock.danger_unchecked,
                    },
                    "clock_verdict": first.detail(),
                    "clock_trusted": first.is_trusted(),
                }),
            ),
        )
        .await?;
        if !first.is_trusted() {
            tracing::warn!(
                reason = first.detail(),
                "TSA clock not trusted: refusing time-stamps"
            );
        }
        tokio::spawn(tsa.clone().watch_clock(shutdown));
        Ok(tsa)
    }

    async fn record(&self, event: AuditEvent) -> Result<(), TsaError> {
        let ctx = &self.inner.ctx;
        let mut tx = ctx.db.begin_write().await?;
        audit::append(&mut tx, ctx.clock.as_ref(), &event).await?;
        tx.commit()
            .await
            .map_err(eid_core::DbError::query("committing a TSA audit event"))?;
        Ok(())
    }

    async fn watch_clock(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.inner.monitor.config().check_interval);
        ticker.tick().await; // the first tick is immediate; start() already checked
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticker.tick() => {
                    self.refresh_clock_trust().await;
                }
            }
        }
    }

    /// Runs the clock checks now (the background task does so every interval) and
    /// audits a change of trust. Returns the verdict.
    pub async fn refresh_clock_trust(&self) -> Verdict {
        let monitor = &self.inner.monitor;
        let before = monitor.last_verdict();
        let after = monitor.check(self.inner.ctx.clock.as_ref()).await;
        let changed = before.as_ref().map(Verdict::is_trusted) != Some(after.is_trusted());
        if changed {
            let (action, outcome) = if after.is_trusted() {
                ("tsa.clock.trusted", Outcome::Success)
            } else {
                ("tsa.clock.untrusted", Outcome::Failure)
            };
            if after.is_trusted() {
                tracing::info!(detail = after.detail(), "TSA clock trusted again");
            } else {
                tracing::warn!(
                    reason = after.detail(),
                    "TSA clock not trusted: refusing time-stamps"
                );
            }
            let event = AuditEvent::new(ACTOR, action, "tsa", self.inner.tsu_serial.clone())
                .outcome(outcome)
                .details(serde_json::json!({
                    "detail": after.detail(),
                    "refused_since_last_change": monitor.take_refused(),
                }));
            if let Err(e) = self.record(event).await {
                tracing::error!(error = %e, "cannot audit a change of TSA clock trust");
            }
        }
        after
    }

    /// Answers a DER `TimeStampReq` with a DER `TimeStampResp`. Never fails: refusals
    /// and internal errors become rejections (`systemFailure` for the latter, with the
    /// cause in the log under a correlation id).
    pub async fn respond(&self, request: &[u8]) -> Vec<u8> {
        match self.issue(request).await {
            Ok(response) => response,
            Err(TsaError::Refused { reason, detail }) => {
                tracing::debug!(reason = reason.name(), detail, "time-stamp request refused");
                token::rejection(reason, &detail)
            }
            Err(e) => {
                let mut id = [0u8; 8];
                let correlation = match getrandom::fill(&mut id) {
                    Ok(()) => hex::encode(id),
                    Err(_) => "unavailable".to_owned(),
                };
                tracing::error!(correlation_id = %correlation, error = %e, "time-stamp failed");
                token::rejection(
                    FailureInfo::SystemFailure,
                    &format!("internal error (correlation id {correlation})"),
                )
            }
        }
    }

    async fn issue(&self, request: &[u8]) -> Result<Vec<u8>, TsaError> {
        let inner = &self.inner;
        let parsed = token::parse_request(request, inner.token.policy())?;
        if !inner.monitor.trusted_now() {
            return Err(TsaError::refused(
                FailureInfo::TimeNotAvailable,
                "the TSA's clock is not currently trusted",
            ));
        }
        if let Some(why) = inner.status.as_ref().and_then(|status| status.withdrawn()) {
            return Err(TsaError::refused(FailureInfo::SystemFailure, why));
        }
        let parsed = Arc::new(parsed);
        for _ in 0..3 {
            match self.issue_once(parsed.clone()).await {
                Err(TsaError::DuplicateSerial) => {
                    tracing::warn!("time-stamp serial clash; drawing another");
                }
                other => return other,
            }
        }
        Err(TsaError::DuplicateSerial)
    }

    async fn issue_once(&self, parsed: Arc<ParsedRequest>) -> Result<Vec<u8>, TsaError> {
        let inner = &self.inner;
        let gen_time = inner.ctx.clock.now();
        let serial = time_ordered_serial(gen_time)?;
        let response = {
            let inner = self.inner.clone();
            let parsed = parsed.clone();
            let serial = serial.clone();
            self.inner
                .token
                .signer()
                .run_signing(move || inner.token.sign(&parsed, &serial, gen_time))
                .await??
        };

        let serial_hex = hex::encode(&serial);
        let gen_time_text = gen_time
            .replace_nanosecond(gen_time.millisecond() as u32 * 1_000_000)
            .unwrap_or(gen_time)
            .format(&Rfc3339)
            .map_err(|e| TsaError::Task(format!("formatting genTime: {e}")))?;
        let mut details = serde_json::json!({
            "gen_time": gen_time_text,
            "policy": inner.ctx.config.signing.tsa.policy,
            "hash_algorithm": parsed.hash.name(),
            "message_imprint": hex::encode(parsed.imprint.hashed_message.as_bytes()),
            "tsu_serial": inner.tsu_serial,
        });
        if let Some(nonce) = &parsed.nonce {
            details["nonce"] = hex::encode(nonce.as_bytes()).into();
        }
        inner
            .records
            .write(
                AuditEvent::new("public", "tsa.timestamp.issue", "timestamp", serial_hex)
                    .details(details),
            )
            .await?;
        Ok(response)
    }
}

/// A serial of 16 octets: `0x01`, the milliseconds since 1970 of `at` (48 bits), then
/// 72 bits from the OS CSPRNG. Positive and of fixed length (the first octet is never
/// zero), unique with overwhelming odds across restarts and replicas (two TSAs would
/// need the same millisecond and the same 72 random bits), and rising with time: the
/// records table's primary key grows at its end instead of at random places (every
/// token dirtied a random index page before; 14.5k -> 17.1k tokens/s measured, README).
/// A token's serial says when it was issued, which its genTime says anyway.
fn time_ordered_serial(at: time::OffsetDateTime) -> Result<Vec<u8>, TsaError> {
    let mut bytes = vec![0u8; 16];
    bytes[0] = 0x01;
    let millis = u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    bytes[1..7].copy_from_slice(&millis.to_be_bytes()[2..]);
    getrandom::fill(&mut bytes[7..]).map_err(|e| TsaError::Task(format!("random serial: {e}")))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::time_ordered_serial;

    #[test]
    fn serials_are_positive_distinct_and_rise_with_time() {
        let at = time::macros::datetime!(2026-12-06 21:00:00.123 UTC);
        let first = time_ordered_serial(at).unwrap();
        let again = time_ordered_serial(at).unwrap();
        let later = time_ordered_serial(at + time::Duration::milliseconds(1)).unwrap();
        assert_eq!(first.len(), 16);
        assert_eq!(first[0], 0x01);
        assert_eq!(first[..7], again[..7]);
        assert_ne!(first, again);
        assert!(hex::encode(&later) > hex::encode(&first));
        assert!(hex::encode(&later) > hex::encode(&again));
        let millis = u64::from_be_bytes([
            0, 0, first[1], first[2], first[3], first[4], first[5], first[6],
        ]);
        assert_eq!(millis, 1_796_590_800_123);
    }
}
