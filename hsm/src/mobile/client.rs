//! The relying side's client for the operator's gateway: TLS with the gateway's key
//! pinned, one request per connection, long polls with a margin.

use std::{fmt, sync::Arc, time::Duration};

use base64ct::{Base64, Encoding};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, header};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest, Sha256};

use super::{
    CertificateRequest, CertificateResponse, ErrorBody, HashType, Language, MobileIdError,
    Operation, ResultCode, SessionStarted, SessionState, SessionStatus, StartRequest,
    VerificationCode,
};

/// The SHA-256 of the gateway certificate's `SubjectPublicKeyInfo` (DER): the only
/// key the client accepts, whatever CA signed it. Written `sha256/<base64>` (as in
/// HTTP public key pinning).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct GatewayPin([u8; 32]);

impl GatewayPin {
    /// The pin of a public key (its DER `SubjectPublicKeyInfo`).
    pub fn of_spki(spki_der: &[u8]) -> Self {
        Self(Sha256::digest(spki_der).into())
    }

    /// The pin of a certificate's key (DER certificate).
    pub fn of_certificate(certificate_der: &[u8]) -> Result<Self, MobileIdError> {
        use der::{Decode, Encode};
        let certificate = x509_cert::Certificate::from_der(certificate_der).map_err(|e| {
            MobileIdError::Config {
                detail: format!("not a DER certificate: {e}"),
            }
        })?;
        let spki = certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| MobileIdError::Config {
                detail: format!("certificate key: {e}"),
            })?;
        Ok(Self::of_spki(&spki))
    }

    /// Parses `sha256/<base64 of 32 bytes>`.
    pub fn parse(text: &str) -> Result<Self, MobileIdError> {
        let bad = || MobileIdError::Config {
            detail: format!(
                "pin {text:?} is not sha256/ followed by the base64 SHA-256 of the gateway's SubjectPublicKeyInfo"
            ),
        };
        let encoded = text.trim().strip_prefix("sha256/").ok_or_else(bad)?;
        let bytes = Base64::decode_vec(encoded).map_err(|_| bad())?;
        Ok(Self(bytes.try_into().map_err(|_| bad())?))
    }

    fn matches(&self, spki_der: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(spki_der).into();
        // Constant time: the comparison reveals nothing about the pin.
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

impl fmt::Display for GatewayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256/{}", Base64::encode_string(&self.0))
    }
}

impl fmt::Debug for GatewayPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GatewayPin({self})")
    }
}

/// The refusal the verifier gives rustls, recognised again on the way out.
const PIN_REFUSAL: &str = "eid: gateway key does not match the pin";

/// Accepts exactly the pinned key. The pin replaces CA validation: MID REST asks
/// relying parties to pin, and a pinned key that a public CA also vouches for adds
/// nothing; a key the CA vouches for that is not pinned is refused. Handshake
/// signatures are still verified (proof that the server holds the pinned key).
#[derive(Debug)]
struct PinnedKeyVerifier {
    pin: GatewayPin,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedKeyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use der::{Decode, Encode};
        let refused = || rustls::Error::General(PIN_REFUSAL.into());
        let certificate =
            x509_cert::Certificate::from_der(end_entity.as_ref()).map_err(|_| refused())?;
        let spki = certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|_| refused())?;
        if self.pin.matches(&spki) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(refused())
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// How to reach the gateway and who we are to it.
#[derive(Clone, Debug)]
pub struct MobileIdClientOptions {
    /// The gateway's base URL, `https://host:port/optional/prefix`.
    pub base_url: String,
    /// The gateway's pinned key.
    pub pin: GatewayPin,
    /// Our relying-party UUID, agreed with the operator.
    pub relying_party_uuid: String,
    /// Our relying-party name, shown on the phone.
    pub relying_party_name: String,
    /// How long one long poll may wait at the gateway (`timeoutMs`).
    pub poll_timeout: Duration,
    /// How long to keep polling before giving up with [`MobileIdError::Timeout`]
    /// (the gateway itself ends a session after about two minutes).
    pub session_timeout: Duration,
}

impl MobileIdClientOptions {
    /// Options with MID REST's recommended timings: 30 s polls, 5 minutes at most.
    pub fn new(
        base_url: impl Into<String>,
        pin: GatewayPin,
        relying_party_uuid: impl Into<String>,
        relying_party_name: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            pin,
            relying_party_uuid: relying_party_uuid.into(),
            relying_party_name: relying_party_name.into(),
            poll_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(300),
        }
    }
}

/// The HTTP timeout is the poll's plus this margin (MID REST: about 1.5 s), so a
/// long poll that the gateway answers on time is never cut off by the client.
pub const POLL_MARGIN: Duration = Duration::from_millis(1500);

/// What the relying side asks the citizen's SIM to sign.
#[derive(Clone, Debug)]
pub struct MobileIdRequest {
    /// The citizen's phone number (`+` and country code).
    pub phone_number: String,
    /// The citizen's national identity number.
    pub national_identity_number: String,
    /// The hash to sign (for authentication: fresh random bytes).
    pub hash: Vec<u8>,
    /// The hash's type; its length must match.
    pub hash_type: HashType,
    /// The phone dialogue's language.
    pub language: Language,
    /// Shown on the phone (GSM-7, at most 40 characters).
    pub display_text: Option<String>,
}

impl MobileIdRequest {
    /// The verification code to show the citizen beside the phone's.
    pub fn verification_code(&self) -> VerificationCode {
        VerificationCode::of(&self.hash)
    }
}

/// A session the gateway accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MobileIdSession {
    /// Authentication or signature.
    pub operation: Operation,
    /// The gateway's session id.
    pub id: String,
}

/// What the SIM returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MobileIdSignature {
    /// The signature octets (DER `ECDSA-Sig-Value` for EC keys).
    pub value: Vec<u8>,
    /// The algorithm the gateway names, e.g. `SHA256WithECEncryption`.
    pub algorithm: String,
    /// The signing key's certificate (DER), as the gateway returned it. The caller
    /// checks the signature against it, and its chain and status.
    pub certificate: Option<Vec<u8>>,
}

/// The relying side's client for the operator's mobile signature gateway.
///
/// Every connection is TLS to a server holding the pinned key
/// ([`GatewayPin`]); anything else fails with [`MobileIdError::PinMismatch`] before a
/// byte of the request is sent.
#[derive(Clone)]
pub struct MobileIdClient {
    options: Arc<MobileIdClientOptions>,
    host: String,
    port: u16,
    prefix: String,
    tls: tokio_rustls::TlsConnector,
}

impl fmt::Debug for MobileIdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MobileIdClient")
            .field("base_url", &self.options.base_url)
            .field("pin", &self.options.pin)
            .finish_non_exhaustive()
    }
}

impl MobileIdClient {
    /// A client for the gateway at `options.base_url` (which must be `https`).
    pub fn new(options: MobileIdClientOptions) -> Result<Self, MobileIdError> {
        let config = |detail: String| MobileIdError::Config { detail };
        let url = url::Url::parse(&options.base_url)
            .map_err(|e| config(format!("gateway URL {:?}: {e}", options.base_url)))?;
        if url.scheme() != "https" {
            return Err(config(format!(
                "gateway URL {:?} must be https (the gateway's key is pinned)",
                options.base_url
            )));
        }
        let host = url
            .host_str()
            .ok_or_else(|| config(format!("gateway URL {:?} has no host", options.base_url)))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(443);
        let prefix = url.path().trim_end_matches('/').to_owned();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(PinnedKeyVerifier {
            pin: options.pin,
            provider: provider.clone(),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| config(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            options: Arc::new(options),
            host,
            port,
            prefix,
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
        })
    }

    /// Starts an authentication or signature session: the gateway checks the request
    /// and sends the prompt to the phone.
    pub async fn start(
        &self,
        operation: Operation,
        request: &MobileIdRequest,
    ) -> Result<MobileIdSession, MobileIdError> {
        let body = StartRequest {
            relying_party_uuid: self.options.relying_party_uuid.clone(),
            relying_party_name: self.options.relying_party_name.clone(),
            phone_number: request.phone_number.clone(),
            national_identity_number: request.national_identity_number.clone(),
            hash: Base64::encode_string(&request.hash),
            hash_type: request.hash_type,
            language: request.language,
            display_text: request.display_text.clone(),
            display_text_format: None,
        };
        // Checked here too, so a bad request never leaves the relying party.
        body.validate().map_err(|e| MobileIdError::Refused {
            status: 400,
            message: e.to_string(),
        })?;
        let started: SessionStarted = self
            .exchange(
                "POST",
                &format!("/{}", operation.path()),
                Some(&body),
                Duration::from_secs(10),
            )
            .await?;
        Ok(MobileIdSession {
            operation,
            id: started.session_id,
        })
    }

    /// The signing certificate (DER) of the mobile ID of `phone_number` and
    /// `national_identity_number`; [`MobileIdError::NotMidClient`] if there is none.
    pub async fn certificate(
        &self,
        phone_number: &str,
        national_identity_number: &str,
    ) -> Result<Vec<u8>, MobileIdError> {
        let body = CertificateRequest {
            relying_party_uuid: self.options.relying_party_uuid.clone(),
            relying_party_name: self.options.relying_party_name.clone(),
            phone_number: phone_number.to_owned(),
            national_identity_number: national_identity_number.to_owned(),
        };
        body.validate().map_err(|e| MobileIdError::Refused {
            status: 400,
            message: e.to_string(),
        })?;
        let answer: CertificateResponse = self
            .exchange("POST", "/certificate", Some(&body), Duration::from_secs(10))
            .await?;
        match (answer.result.as_str(), answer.cert) {
            ("OK", Some(cert)) => Base64::decode_vec(&cert).map_err(|_| MobileIdError::Protocol {
                detail: "cert is not base64".into(),
            }),
            ("NOT_FOUND", _) => Err(MobileIdError::NotMidClient),
            (result, _) => Err(MobileIdError::Protocol {
                detail: format!("certificate answer `{result}` without a certificate"),
            }),
        }
    }

    /// One long poll: waits at the gateway up to `timeout` for the session to finish.
    pub async fn poll(
        &self,
        session: &MobileIdSession,
        timeout: Duration,
    ) -> Result<SessionStatus, MobileIdError> {
        let path = format!(
            "/{}/session/{}?timeoutMs={}",
            session.operation.path(),
            url_segment(&session.id),
            timeout.as_millis()
        );
        self.exchange::<(), SessionStatus>("GET", &path, None, timeout + POLL_MARGIN)
            .await
    }

    /// One long poll, read: `None` while the citizen has not answered, the signature
    /// on OK, the result's error otherwise.
    pub async fn poll_once(
        &self,
        session: &MobileIdSession,
        timeout: Duration,
    ) -> Result<Option<MobileIdSignature>, MobileIdError> {
        let status = self.poll(session, timeout).await?;
        if status.state == SessionState::Running {
            return Ok(None);
        }
        let result = status.result.ok_or_else(|| MobileIdError::Protocol {
            detail: "a COMPLETE session without a result".into(),
        })?;
        if let Some(error) = MobileIdError::from_result(result) {
            return Err(error);
        }
        debug_assert_eq!(result, ResultCode::Ok);
        let signature = status.signature.ok_or_else(|| MobileIdError::Protocol {
            detail: "result OK without a signature".into(),
        })?;
        let value = Base64::decode_vec(&signature.value).map_err(|_| MobileIdError::Protocol {
            detail: "signature.value is not base64".into(),
        })?;
        let certificate = status
            .cert
            .map(|c| Base64::decode_vec(&c))
            .transpose()
            .map_err(|_| MobileIdError::Protocol {
                detail: "cert is not base64".into(),
            })?;
        Ok(Some(MobileIdSignature {
            value,
            algorithm: signature.algorithm,
            certificate,
        }))
    }

    /// Polls until the session completes: the signature on OK, the result's error
    /// otherwise, [`MobileIdError::Timeout`] after the session timeout.
    pub async fn wait(
        &self,
        session: &MobileIdSession,
    ) -> Result<MobileIdSignature, MobileIdError> {
        let deadline = tokio::time::Instant::now() + self.options.session_timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(MobileIdError::Timeout);
            }
            if let Some(signature) = self
                .poll_once(session, left.min(self.options.poll_timeout))
                .await?
            {
                return Ok(signature);
            }
        }
    }

    /// One request on a fresh pinned-TLS connection, answered within `timeout`.
    async fn exchange<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<T, MobileIdError> {
        match tokio::time::timeout(timeout, self.exchange_now(method, path, body)).await {
            Ok(result) => result,
            Err(_) => Err(MobileIdError::Unavailable {
                detail: format!(
                    "no answer to {method} {path} within {} ms",
                    timeout.as_millis()
                ),
            }),
        }
    }

    async fn exchange_now<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, MobileIdError> {
        let unavailable = |detail: String| MobileIdError::Unavailable { detail };
        let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                unavailable(format!(
                    "cannot connect to {}:{}: {e}",
                    self.host, self.port
                ))
            })?;
        let server_name =
            ServerName::try_from(self.host.clone()).map_err(|e| MobileIdError::Config {
                detail: format!("gateway host {:?}: {e}", self.host),
            })?;
        let tls = self.tls.connect(server_name, tcp).await.map_err(|e| {
            let pinned = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(
                    |inner| matches!(inner, rustls::Error::General(m) if m == PIN_REFUSAL),
                );
            if pinned {
                MobileIdError::PinMismatch {
                    expected: self.options.pin.to_string(),
                }
            } else {
                unavailable(format!("TLS with {}:{}: {e}", self.host, self.port))
            }
        })?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unavailable(format!("HTTP: {e}")))?;
        let driver = tokio::spawn(connection);
        let payload = match body {
            Some(body) => serde_json::to_vec(body).map_err(|e| MobileIdError::Protocol {
                detail: format!("encoding the request: {e}"),
            })?,
            None => Vec::new(),
        };
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.prefix))
            .header(header::HOST, format!("{}:{}", self.host, self.port))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| MobileIdError::Protocol {
                detail: format!("building the request: {e}"),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| unavailable(format!("{method} {path}: {e}")))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unavailable(format!("reading the answer to {method} {path}: {e}")))?
            .to_bytes();
        driver.abort();
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|e| MobileIdError::Protocol {
                detail: format!("the answer to {method} {path} is not the expected JSON: {e}"),
            });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        if status.is_client_error() {
            Err(MobileIdError::Refused {
                status: status.as_u16(),
                message,
            })
        } else {
            Err(unavailable(format!(
                "HTTP {status} to {method} {path}: {message}"
            )))
        }
    }
}

fn url_segment(id: &str) -> String {
    id.bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'-')
        .map(char::from)
        .collect()
}
