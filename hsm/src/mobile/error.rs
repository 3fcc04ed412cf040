//! What can go wrong with a mobile-ID session, for the relying side.

use super::ResultCode;

/// Why a mobile-ID authentication or signature gave no signature.
///
/// [`MobileIdError::citizen_message`] is the text to show the citizen; `Display` is for
/// logs and operators.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MobileIdError {
    /// The citizen did not confirm on the phone in time (`TIMEOUT`).
    #[error("the citizen did not answer on the phone in time (TIMEOUT)")]
    Timeout,
    /// No mobile ID for this phone number and national identity number (`NOT_MID_CLIENT`).
    #[error("no mobile ID for this phone number and national identity number (NOT_MID_CLIENT)")]
    NotMidClient,
    /// The citizen cancelled on the phone (`USER_CANCELLED`).
    #[error("the citizen cancelled on the phone (USER_CANCELLED)")]
    UserCancelled,
    /// The gateway found that the SIM's signature does not match the hash
    /// (`SIGNATURE_HASH_MISMATCH`).
    #[error("the SIM's signature did not match the hash (SIGNATURE_HASH_MISMATCH)")]
    SignatureHashMismatch,
    /// The phone is off or out of reach (`PHONE_ABSENT`).
    #[error("the phone is off or out of reach (PHONE_ABSENT)")]
    PhoneAbsent,
    /// The request could not be delivered to the phone (`DELIVERY_ERROR`).
    #[error("the request could not be delivered to the phone (DELIVERY_ERROR)")]
    DeliveryError,
    /// The SIM failed or refused, for instance with a blocked PIN (`SIM_ERROR`).
    #[error("the SIM failed or refused, e.g. a blocked PIN (SIM_ERROR)")]
    SimError,
    /// The gateway's TLS key is not the pinned one: possibly an interception. No
    /// request was sent.
    #[error(
        "the gateway's TLS key does not match the configured pin (expected {expected}); refusing to talk to it"
    )]
    PinMismatch {
        /// The configured pin.
        expected: String,
    },
    /// The gateway refused the request (4xx): a bug or misconfiguration on our side.
    #[error("the gateway refused the request with HTTP {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's error message.
        message: String,
    },
    /// The gateway failed (5xx), could not be reached, or did not answer within the
    /// poll's timeout plus the margin.
    #[error("the gateway is unavailable: {detail}")]
    Unavailable {
        /// What happened.
        detail: String,
    },
    /// The gateway's answer breaks the protocol (e.g. OK without a signature).
    #[error("the gateway's answer breaks the protocol: {detail}")]
    Protocol {
        /// What was wrong.
        detail: String,
    },
    /// The client's configuration is unusable (bad URL, pin).
    #[error("mobile-ID client configuration: {detail}")]
    Config {
        /// What is wrong.
        detail: String,
    },
}

impl MobileIdError {
    /// The error for a completed session's result; `None` for OK.
    pub fn from_result(result: ResultCode) -> Option<Self> {
        Some(match result {
            ResultCode::Ok => return None,
            ResultCode::Timeout => Self::Timeout,
            ResultCode::NotMidClient => Self::NotMidClient,
            ResultCode::UserCancelled => Self::UserCancelled,
            ResultCode::SignatureHashMismatch => Self::SignatureHashMismatch,
            ResultCode::PhoneAbsent => Self::PhoneAbsent,
            ResultCode::DeliveryError => Self::DeliveryError,
            ResultCode::SimError => Self::SimError,
        })
    }

    /// The gateway result code behind this error, if it came from one.
    pub fn result_code(&self) -> Option<ResultCode> {
        Some(match self {
            Self::Timeout => ResultCode::Timeout,
            Self::NotMidClient => ResultCode::NotMidClient,
            Self::UserCancelled => ResultCode::UserCancelled,
            Self::SignatureHashMismatch => ResultCode::SignatureHashMismatch,
            Self::PhoneAbsent => ResultCode::PhoneAbsent,
            Self::DeliveryError => ResultCode::DeliveryError,
            Self::SimError => ResultCode::SimError,
            _ => return None,
        })
    }

    /// What to tell the citizen: plain words, no codes, nothing internal.
    pub fn citizen_message(&self) -> &'static str {
        match self {
            Self::Timeout => "You did not confirm on your phone in time. Please try again.",
            Self::NotMidClient => {
                "This phone number and national identity number have no active mobile ID. Check both, or activate mobile ID at a service centre."
            }
            Self::UserCancelled => "You cancelled on your phone.",
            Self::SignatureHashMismatch => {
                "Your SIM's answer could not be checked. Please try again; if it keeps happening, contact your mobile operator."
            }
            Self::PhoneAbsent => {
                "Your phone could not be reached. Make sure it is switched on and has signal, then try again."
            }
            Self::DeliveryError => {
                "The request could not be delivered to your phone. Please try again in a moment."
            }
            Self::SimError => {
                "Your SIM refused the request. If your PIN is blocked, unblock it with your PUK; otherwise contact your mobile operator."
            }
            Self::PinMismatch { .. }
            | Self::Refused { .. }
            | Self::Unavailable { .. }
            | Self::Protocol { .. }
            | Self::Config { .. } => {
                "Mobile ID is not available at the moment. Please try again later or use another way to log in or sign."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    #[test]
    fn every_result_code_has_its_own_message() {
        let codes = [
            ResultCode::Timeout,
            ResultCode::NotMidClient,
            ResultCode::UserCancelled,
            ResultCode::SignatureHashMismatch,
            ResultCode::PhoneAbsent,
            ResultCode::DeliveryError,
            ResultCode::SimError,
        ];
        let mut messages = std::collections::HashSet::new();
        for code in codes {
            let error = MobileIdError::from_result(code).unwrap();
            assert_eq!(error.result_code(), Some(code));
            assert!(messages.insert(error.citizen_message()), "{code}");
            assert!(error.to_string().contains(code.name()));
        }
        assert!(MobileIdError::from_result(ResultCode::Ok).is_none());
    }
}
