//! Where signature time-stamps (CAdES-T) come from: our TSA in the same process, or a
//! TSA over HTTP (RFC 3161 §3.4) when the signing API runs apart from it.

use cms::content_info::ContentInfo;
use der::{
    Decode, Encode,
    asn1::{Int, OctetString},
};
use x509_cert::Certificate;

use crate::{
    SignatureError, TimeStampAuthority,
    cms::SignedData,
    tsa::asn1::{MessageImprint, PkiStatus, TimeStampReq, TimeStampResp},
};

/// A source of RFC 3161 tokens.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TimeStampSource {
    /// The TSA served by this process: the request goes straight to it (and is
    /// recorded and audited by it like any other).
    InProcess(TimeStampAuthority),
    /// A TSA at this URL (`POST` with `application/timestamp-query`).
    Http {
        /// The TSA's URL.
        url: String,
        /// The client.
        http: reqwest::Client,
    },
}

/// A token and the certificates it carries.
#[derive(Debug)]
pub struct Token {
    /// The `TimeStampToken` (a `ContentInfo`).
    pub token: ContentInfo,
    /// The certificates in the token (the TSU's, and any intermediates).
    pub certificates: Vec<Certificate>,
}

impl TimeStampSource {
    /// A token over the SHA-256 `digest`, with the TSU certificate in it.
    pub async fn stamp(&self, digest: &[u8]) -> Result<Token, SignatureError> {
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(|e| SignatureError::Task(format!("nonce: {e}")))?;
        nonce[0] = (nonce[0] & 0x7f) | 0x01;
        self.stamp_imprint(super::build::DigestAlgorithm::Sha256, digest, &nonce)
            .await
    }

    /// A token over `digest` made with `algorithm`, carrying `nonce` (a positive
    /// big-endian integer), with the TSU certificate in it.
    pub async fn stamp_imprint(
        &self,
        algorithm: super::build::DigestAlgorithm,
        digest: &[u8],
        nonce: &[u8],
    ) -> Result<Token, SignatureError> {
        let encoding = |what: &'static str| move |source| SignatureError::Encoding { what, source };
        let request = TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: algorithm.algorithm_identifier(),
                hashed_message: OctetString::new(digest).map_err(encoding("imprint"))?,
            },
            req_policy: None,
            nonce: Some(Int::new(nonce).map_err(encoding("nonce"))?),
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .map_err(encoding("TimeStampReq"))?;
        let reply = match self {
            Self::InProcess(tsa) => tsa.respond(&request).await,
            Self::Http { url, http } => {
                let unavailable = SignatureError::TimeStampUnavailable;
                let response = http
                    .post(url)
                    .header("content-type", "application/timestamp-query")
                    .body(request)
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| unavailable(format!("the TSA is unreachable: {e}")))?;
                if !response.status().is_success() {
                    return Err(unavailable(format!(
                        "the TSA answered HTTP {}",
                        response.status()
                    )));
                }
                response
                    .bytes()
                    .await
                    .map_err(|e| unavailable(format!("reading the TSA's reply: {e}")))?
                    .to_vec()
            }
        };
        let reply = TimeStampResp::from_der(&reply).map_err(|e| {
            SignatureError::TimeStampUnavailable(format!("the TSA's reply is malformed: {e}"))
        })?;
        let token = match (reply.status.status, reply.time_stamp_token) {
            (PkiStatus::Granted | PkiStatus::GrantedWithMods, Some(token)) => token,
            (status, _) => {
                return Err(SignatureError::TimeStampUnavailable(format!(
                    "the TSA refused a signature time-stamp ({status:?}: {})",
                    reply.status.status_string.unwrap_or_default().join("; ")
                )));
            }
        };
        let signed_data: SignedData = token.content.decode_as().map_err(|e| {
            SignatureError::TimeStampUnavailable(format!("the token is malformed: {e}"))
        })?;
        let certificates = signed_data
            .certificates
            .map(|set| {
                set.0
                    .into_vec()
                    .into_iter()
                    .filter_map(|choice| match choice {
                        cms::cert::CertificateChoices::Certificate(c) => Some(c),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Token {
            token,
            certificates,
        })
    }
}
