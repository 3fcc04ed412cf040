//! Whether the TSA's clock may be trusted (ETSI EN 319 421: a TSA stops issuing
//! time-stamps when its clock is outside the stated accuracy).
//!
//! Two checks, as configured:
//! - **The OS's synchronisation status.** `timedatectl show -p NTPSynchronized` reports
//!   the kernel's `STA_UNSYNC` flag (what `adjtimex` returns), which chrony, ntpd and
//!   systemd-timesyncd all maintain; where timedatectl cannot answer (no systemd, a
//!   container) the flag file `/run/systemd/timesync/synchronized` of timesyncd is read
//!   instead. Calling `adjtimex` directly would need `unsafe` FFI, which this crate
//!   forbids. No answer from either is "not reported".
//! - **Drift from NTP references** (SNTP, see [`super::sntp`]): every server that
//!   answers must agree with this clock within `max_drift` (offset plus half the
//!   round trip), and at least one must answer.
//!
//! A background task runs the checks every `check_interval`; the request path only
//! reads the last verdict, which expires after three intervals (a stuck checker must
//! not leave the TSA trusting forever). The expiry is measured on the monotonic clock,
//! never on the wall clock being judged.

use std::{
    path::PathBuf,
    sync::{
        RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use eid_core::{Clock, ClockTrustConfig, OsSyncCheck};

use super::sntp;

/// What the OS says about its clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OsReport {
    /// Synchronised to a time source.
    Synchronized,
    /// Not synchronised.
    Unsynchronized,
    /// The OS does not say (why, for the log).
    NotReported(String),
}

/// Where the OS status is read; replaceable in tests.
#[derive(Clone, Debug)]
pub struct OsStatusSource {
    /// A command printing `yes` or `no`.
    pub command: Vec<String>,
    /// A file whose existence means synchronised.
    pub flag_file: PathBuf,
}

impl Default for OsStatusSource {
    fn default() -> Self {
        Self {
            command: [
                "timedatectl",
                "show",
                "--property=NTPSynchronized",
                "--value",
            ]
            .map(String::from)
            .to_vec(),
            flag_file: PathBuf::from("/run/systemd/timesync/synchronized"),
        }
    }
}

/// Reads `timedatectl`'s answer: `yes`/`no`, anything else is not a report.
pub fn parse_sync_answer(stdout: &str) -> Option<bool> {
    match stdout.trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

impl OsStatusSource {
    /// Asks the OS.
    pub async fn query(&self) -> OsReport {
        let command_answer = match self.command.split_first() {
            Some((program, args)) => {
                let run = tokio::process::Command::new(program)
                    .args(args)
                    .kill_on_drop(true)
                    .output();
                match tokio::time::timeout(Duration::from_secs(2), run).await {
                    Ok(Ok(output)) if output.status.success() => {
                        parse_sync_answer(&String::from_utf8_lossy(&output.stdout))
                    }
                    _ => None,
                }
            }
            None => None,
        };
        match command_answer {
            Some(true) => OsReport::Synchronized,
            Some(false) => OsReport::Unsynchronized,
            None if tokio::fs::try_exists(&self.flag_file)
                .await
                .unwrap_or(false) =>
            {
                OsReport::Synchronized
            }
            None => OsReport::NotReported(format!(
                "`{}` gave no answer and {} does not exist",
                self.command.join(" "),
                self.flag_file.display()
            )),
        }
    }
}

/// The outcome of one round of checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The clock may be used; what was checked.
    Trusted(String),
    /// It may not; why.
    Untrusted(String),
}

impl Verdict {
    /// Whether it trusts.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Self::Trusted(_))
    }

    /// The explanation.
    pub fn detail(&self) -> &str {
        match self {
            Self::Trusted(detail) | Self::Untrusted(detail) => detail,
        }
    }
}

#[derive(Debug)]
struct Checked {
    verdict: Verdict,
    at: Instant,
}

/// Keeps the clock verdict for the request path.
#[derive(Debug)]
pub struct ClockMonitor {
    config: ClockTrustConfig,
    os: OsStatusSource,
    last: RwLock<Option<Checked>>,
    refused: AtomicU64,
}

impl ClockMonitor {
    /// A monitor that has not checked yet (and so does not trust).
    pub fn new(config: ClockTrustConfig, os: OsStatusSource) -> Self {
        Self {
            config,
            os,
            last: RwLock::new(None),
            refused: AtomicU64::new(0),
        }
    }

    /// The configured checks.
    pub fn config(&self) -> &ClockTrustConfig {
        &self.config
    }

    /// Whether a token may be issued now. Counts refusals for the audit record of the
    /// next recovery.
    pub fn trusted_now(&self) -> bool {
        if self.config.danger_unchecked {
            return true;
        }
        let stale_after = self.config.check_interval * 3;
        let trusted = self.last.read().ok().is_some_and(|last| {
            last.as_ref()
                .is_some_and(|c| c.verdict.is_trusted() && c.at.elapsed() < stale_after)
        });
        if !trusted {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        trusted
    }

    /// Requests refused since the last call, for the audit record.
    pub fn take_refused(&self) -> u64 {
        self.refused.swap(0, Ordering::Relaxed)
    }

    /// The last verdict, if any.
    pub fn last_verdict(&self) -> Option<Verdict> {
        self.last
            .read()
            .ok()
            .and_then(|last| last.as_ref().map(|c| c.verdict.clone()))
    }

    /// Runs the checks now, stores and returns the verdict.
    pub async fn check(&self, clock: &dyn Clock) -> Verdict {
        let verdict = if self.config.danger_unchecked {
            Verdict::Trusted("unchecked (signing.tsa.clock.danger_unchecked)".into())
        } else {
            self.run_checks(clock).await
        };
        if let Ok(mut last) = self.last.write() {
            *last = Some(Checked {
                verdict: verdict.clone(),
                at: Instant::now(),
            });
        }
        verdict
    }

    async fn run_checks(&self, clock: &dyn Clock) -> Verdict {
        let mut passed = Vec::new();
        match (self.config.os_sync, self.os.query().await) {
            (OsSyncCheck::Ignored, _) => {}
            (_, OsReport::Synchronized) => passed.push("OS reports synchronised".to_owned()),
            (_, OsReport::Unsynchronized) => {
                return Verdict::Untrusted("the OS reports its clock unsynchronised".into());
            }
            (OsSyncCheck::Required, OsReport::NotReported(why)) => {
                return Verdict::Untrusted(format!(
                    "os_sync = \"required\" but the OS does not report its sync status ({why})"
                ));
            }
            (_, OsReport::NotReported(_)) => passed.push("OS sync status not reported".into()),
        }
        if !self.config.ntp_servers.is_empty() {
            match self.ntp_check(clock).await {
                Ok(detail) => passed.push(detail),
                Err(why) => return Verdict::Untrusted(why),
            }
        }
        Verdict::Trusted(passed.join("; "))
    }

    async fn ntp_check(&self, clock: &dyn Clock) -> Result<String, String> {
        let max = self.config.max_drift;
        let mut agreeing = Vec::new();
        let mut silent = Vec::new();
        for server in &self.config.ntp_servers {
            let address = match tokio::net::lookup_host((server.host.as_str(), server.port)).await {
                Ok(mut addresses) => addresses.next(),
                Err(_) => None,
            };
            let Some(address) = address else {
                silent.push(format!("{server}: cannot resolve"));
                continue;
            };
            match sntp::query(address, clock, self.config.ntp_timeout).await {
                Ok(sample) if sample.error_bound() <= max => agreeing.push(format!(
                    "{server} offset {:.1} ms delay {:.1} ms",
                    sample.offset_nanos as f64 / 1e6,
                    sample.delay_nanos as f64 / 1e6
                )),
                Ok(sample) => {
                    return Err(format!(
                        "the clock is {:.1} ms from {server} (offset {:.1} ms, delay {:.1} ms), more than the {} ms allowed",
                        sample.error_bound().as_secs_f64() * 1e3,
                        sample.offset_nanos as f64 / 1e6,
                        sample.delay_nanos as f64 / 1e6,
                        max.as_millis()
                    ));
                }
                Err(e) => silent.push(format!("{server}: {e}")),
            }
        }
        if agreeing.is_empty() {
            return Err(format!("no NTP reference answered ({})", silent.join("; ")));
        }
        Ok(format!("NTP: {}", agreeing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timedatectl_answers() {
        assert_eq!(parse_sync_answer("yes\n"), Some(true));
        assert_eq!(parse_sync_answer("no\n"), Some(false));
        assert_eq!(parse_sync_answer(""), None);
        assert_eq!(parse_sync_answer("Failed to connect to bus"), None);
    }
}
