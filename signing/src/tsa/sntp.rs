//! A minimal SNTP client (RFC 4330, NTP version 4 packet format): one request, one
//! answer, the clock offset and round-trip delay. Written by hand because what the TSA
//! needs is this one exchange over tokio's UDP socket, in safe Rust; the available NTP
//! crates are either full daemons or block on std sockets.

use std::{net::SocketAddr, time::Duration};

use eid_core::Clock;
use time::OffsetDateTime;
use tokio::net::UdpSocket;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch.
const NTP_UNIX_OFFSET: i64 = 2_208_988_800;
/// Leap indicator 0, version 4, mode 3 (client).
const CLIENT_HEADER: u8 = 0b00_100_011;
const PACKET_LEN: usize = 48;

/// Why an SNTP exchange gave no usable sample.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SntpError {
    /// The socket failed.
    #[error("NTP socket: {0}")]
    Io(#[from] std::io::Error),
    /// No answer within the timeout.
    #[error("no NTP answer within {0:?}")]
    Timeout(Duration),
    /// The answer is not a usable server reply; says why.
    #[error("unusable NTP answer: {0}")]
    BadAnswer(&'static str),
    /// The random request cookie could not be drawn.
    #[error("random source: {0}")]
    Random(String),
}

/// One measurement against a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SntpSample {
    /// Server time minus local time, in nanoseconds (positive: the local clock is behind).
    pub offset_nanos: i128,
    /// The round trip's network delay, in nanoseconds.
    pub delay_nanos: i128,
    /// The server's stratum (1 = a reference clock).
    pub stratum: u8,
}

impl SntpSample {
    /// The most the local clock can be off by, given this sample: |offset| plus half
    /// the delay (the answer's uncertainty).
    pub fn error_bound(&self) -> Duration {
        let nanos = self.offset_nanos.unsigned_abs() + self.delay_nanos.max(0).unsigned_abs() / 2;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

fn nanos(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos()
}

/// An NTP timestamp (seconds since 1900 and a 32-bit fraction) as Unix nanoseconds,
/// in the NTP era closest to `near` (so it keeps working past 2036).
fn ntp_to_unix_nanos(bytes: &[u8; 8], near: OffsetDateTime) -> i128 {
    let seconds = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let fraction = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let mut unix = i64::from(seconds) - NTP_UNIX_OFFSET;
    let era = 1i64 << 32;
    while unix < near.unix_timestamp() - era / 2 {
        unix += era;
    }
    let fraction_nanos = (i128::from(fraction) * 1_000_000_000) >> 32;
    i128::from(unix) * 1_000_000_000 + fraction_nanos
}

/// The NTP timestamp of `at` (used by test servers and to fill packets).
pub fn unix_to_ntp(at: OffsetDateTime) -> [u8; 8] {
    let seconds = (at.unix_timestamp() + NTP_UNIX_OFFSET) as u32;
    let fraction = ((u64::from(at.nanosecond()) << 32) / 1_000_000_000) as u32;
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&seconds.to_be_bytes());
    out[4..].copy_from_slice(&fraction.to_be_bytes());
    out
}

/// Asks `server` for the time once and measures this clock against it.
pub async fn query(
    server: SocketAddr,
    clock: &dyn Clock,
    timeout: Duration,
) -> Result<SntpSample, SntpError> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    // The transmit timestamp carries a random cookie instead of our time (RFC 5905
    // §9.1's advice against off-path spoofing); the server echoes it as originate.
    let mut cookie = [0u8; 8];
    getrandom::fill(&mut cookie).map_err(|e| SntpError::Random(e.to_string()))?;
    let mut request = [0u8; PACKET_LEN];
    request[0] = CLIENT_HEADER;
    request[40..48].copy_from_slice(&cookie);

    let exchange = async {
        let sent_at = clock.now();
        socket.send(&request).await?;
        let mut answer = [0u8; 512];
        loop {
            let len = socket.recv(&mut answer).await?;
            let received_at = clock.now();
            // A stray or forged datagram is ignored; only the echo of our cookie counts.
            if len >= PACKET_LEN && answer[24..32] == cookie {
                return Ok::<_, SntpError>((sent_at, received_at, answer));
            }
        }
    };
    let (sent_at, received_at, answer) = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| SntpError::Timeout(timeout))??;

    let leap = answer[0] >> 6;
    let version = (answer[0] >> 3) & 0b111;
    let mode = answer[0] & 0b111;
    let stratum = answer[1];
    if mode != 4 {
        return Err(SntpError::BadAnswer("not a server reply (mode 4)"));
    }
    if !(3..=4).contains(&version) {
        return Err(SntpError::BadAnswer("unknown NTP version"));
    }
    if leap == 3 {
        return Err(SntpError::BadAnswer("the server's clock is unsynchronised"));
    }
    if stratum == 0 {
        return Err(SntpError::BadAnswer("kiss-of-death (stratum 0)"));
    }
    if stratum > 15 {
        return Err(SntpError::BadAnswer(
            "the server is unsynchronised (stratum 16)",
        ));
    }
    let field = |at: usize| -> [u8; 8] {
        let mut out = [0u8; 8];
        out.copy_from_slice(&answer[at..at + 8]);
        out
    };
    let transmit = field(40);
    if transmit == [0u8; 8] {
        return Err(SntpError::BadAnswer("no transmit timestamp"));
    }
    let t1 = nanos(sent_at);
    let t2 = ntp_to_unix_nanos(&field(32), sent_at);
    let t3 = ntp_to_unix_nanos(&transmit, sent_at);
    let t4 = nanos(received_at);
    Ok(SntpSample {
        offset_nanos: ((t2 - t1) + (t3 - t4)) / 2,
        delay_nanos: (t4 - t1) - (t3 - t2),
        stratum,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use time::macros::datetime;

    use super::*;

    #[test]
    fn ntp_timestamps_round_trip_across_the_2036_era() {
        for at in [
            datetime!(2026-11-21 10:42:43.5 UTC),
            datetime!(2036-02-07 06:28:16 UTC),
            datetime!(2040-01-01 00:00:00.25 UTC),
        ] {
            let back = ntp_to_unix_nanos(&unix_to_ntp(at), at);
            assert!((back - at.unix_timestamp_nanos()).abs() < 2, "{at}");
        }
    }

    #[test]
    fn error_bound_adds_half_the_delay() {
        let sample = SntpSample {
            offset_nanos: -300_000_000,
            delay_nanos: 100_000_000,
            stratum: 2,
        };
        assert_eq!(sample.error_bound(), Duration::from_millis(350));
    }
}
