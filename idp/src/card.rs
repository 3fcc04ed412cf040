//! ID-card login: a TLS listener of its own that asks the browser for a client
//! certificate, terminated here with rustls (never a certificate forwarded in a header
//! by a proxy). The chain must lead to the citizen authentication CA (webpki checks it,
//! with the clientAuth purpose); the certificate's status is asked of the CA's OCSP
//! responder; the identity is the certificate's `serialNumber` (`PNO<CC>-<id>`).

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use der::{Decode, Encode};
use eid_ca::{
    CertificateSerial,
    ocsp::client::{self, CheckedStatus},
};
use eid_core::CertificateStanding;
use eid_hsm::{KeySigner, SignatureScheme as KeyScheme};
use rustls::{
    RootCertStore, ServerConfig, SignatureAlgorithm, SignatureScheme,
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::{CertifiedKey, Signer, SigningKey},
};
use rustls_pki_types::CertificateDer;
use x509_cert::Certificate;

use crate::IdpError;

const GIVEN_NAME: &str = "2.5.4.42";
const SURNAME: &str = "2.5.4.4";
const SERIAL_NUMBER: &str = "2.5.4.5";

/// The TLS server's key, kept in the key layer: rustls asks it to sign the handshake.
struct TlsKey {
    signer: KeySigner,
}

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKey").field("key", &self.signer).finish()
    }
}

struct TlsSigner {
    signer: KeySigner,
    scheme: SignatureScheme,
}

impl fmt::Debug for TlsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSigner")
            .field("scheme", &self.scheme)
            .finish()
    }
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        let scheme = match self.signer.scheme() {
            KeyScheme::EcdsaSha256 => SignatureScheme::ECDSA_NISTP256_SHA256,
            KeyScheme::EcdsaSha384 => SignatureScheme::ECDSA_NISTP384_SHA384,
            KeyScheme::RsaPssSha256 => SignatureScheme::RSA_PSS_SHA256,
            KeyScheme::RsaPkcs1Sha256 => SignatureScheme::RSA_PKCS1_SHA256,
            _ => return None,
        };
        offered.contains(&scheme).then(|| {
            Box::new(TlsSigner {
                signer: self.signer.clone(),
                scheme,
            }) as Box<dyn Signer>
        })
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.signer.scheme() {
            KeyScheme::EcdsaSha256 | KeyScheme::EcdsaSha384 => SignatureAlgorithm::ECDSA,
            _ => SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        // The handshake runs inside a poll, so this blocks the task for one signature:
        // fast on the soft store; on an HSM a few milliseconds.
        self.signer
            .sign(message)
            .map(eid_hsm::Signature::into_bytes)
            .map_err(|e| rustls::Error::General(format!("TLS key: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        self.scheme
    }
}

/// Our one certificate, while the CA has not withdrawn it: a revoked TLS certificate
/// ends every handshake (no certificate to offer) instead of being presented.
#[derive(Debug)]
struct FixedCert {
    key: Arc<CertifiedKey>,
    standing: Option<Arc<dyn CertificateStanding>>,
}

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(why) = self.standing.as_ref().and_then(|s| s.withdrawn()) {
            tracing::warn!(reason = %why, "card login refused: the TLS certificate is withdrawn");
            return None;
        }
        Some(self.key.clone())
    }
}

/// The card listener's TLS setup: our server certificate (key in the key layer) and the
/// citizen authentication CA as the only anchor for client certificates.
pub fn server_config(
    server_chain: Vec<Vec<u8>>,
    server_key: KeySigner,
    citizen_auth_ca: &[u8],
    standing: Option<Arc<dyn CertificateStanding>>,
) -> Result<Arc<ServerConfig>, IdpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(citizen_auth_ca.to_vec()))
        .map_err(|e| IdpError::Tls(format!("citizen authentication CA: {e}")))?;
    // Without a certificate the handshake still completes, so the page can explain what
    // went wrong instead of the browser showing a bare TLS error.
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| IdpError::Tls(format!("client verifier: {e}")))?;
    let chain = server_chain.into_iter().map(CertificateDer::from).collect();
    let key = CertifiedKey::new(chain, Arc::new(TlsKey { signer: server_key }));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IdpError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(FixedCert {
            key: Arc::new(key),
            standing,
        }));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The check a login certificate from elsewhere than the TLS handshake (mobile ID)
/// passes: the same webpki verification as the card listener's (chain to the citizen
/// authentication CA, validity, clientAuth).
pub fn chain_verifier(
    citizen_auth_ca: &[u8],
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, IdpError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(citizen_auth_ca.to_vec()))
        .map_err(|e| IdpError::Tls(format!("citizen authentication CA: {e}")))?;
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| IdpError::Tls(format!("certificate verifier: {e}")))
}

/// The public key of a certificate (DER).
pub fn public_key(cert_der: &[u8]) -> Result<eid_hsm::PublicKey, String> {
    let cert =
        Certificate::from_der(cert_der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let spki = cert
        .tbs_certificate()
        .subject_public_key_info()
        .to_der()
        .map_err(|e| format!("certificate key: {e}"))?;
    eid_hsm::PublicKey::from_der(&spki).map_err(|e| e.to_string())
}

/// Who an authentication certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardHolder {
    /// The national identity number (from `serialNumber` `PNO<CC>-<id>`).
    pub national_id: String,
    /// Given names.
    pub given_name: String,
    /// Surname.
    pub family_name: String,
    /// The certificate's serial.
    pub serial: CertificateSerial,
    /// The OCSP responder named in the certificate.
    pub ocsp_url: Option<String>,
}

fn attribute(cert: &Certificate, oid: &str) -> Option<String> {
    cert.tbs_certificate()
        .subject()
        .iter()
        .find(|atv| atv.oid.to_string() == oid)
        .and_then(|atv| {
            der::asn1::Utf8StringRef::try_from(&atv.value)
                .map(|s| s.as_str().to_owned())
                .or_else(|_| {
                    der::asn1::PrintableStringRef::try_from(&atv.value)
                        .map(|s| s.as_str().to_owned())
                })
                .ok()
        })
}

/// Reads the holder from a (chain-verified) authentication certificate.
pub fn holder(cert_der: &[u8], country: &str) -> Result<CardHolder, String> {
    let cert =
        Certificate::from_der(cert_der).map_err(|e| format!("unreadable certificate: {e}"))?;
    let serial_number =
        attribute(&cert, SERIAL_NUMBER).ok_or("the certificate has no serialNumber attribute")?;
    let prefix = format!("PNO{country}-");
    let national_id = serial_number
        .strip_prefix(&prefix)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| format!("serialNumber `{serial_number}` is not {prefix}<national id>"))?
        .to_owned();
    let given_name = attribute(&cert, GIVEN_NAME).ok_or("no givenName")?;
    let family_name = attribute(&cert, SURNAME).ok_or("no surname")?;
    let ocsp_url = client::ocsp_url(&cert);
    Ok(CardHolder {
        national_id,
        given_name,
        family_name,
        serial: CertificateSerial::from_certificate(cert.tbs_certificate().serial_number()),
        ocsp_url,
    })
}

/// The citizen a checked login certificate names (made or updated from it), logged in
/// now at level high by `method` with `amr`.
pub async fn high_login(
    ctx: &eid_core::ServiceContext,
    holder: &CardHolder,
    amr: &[&str],
    method: &str,
) -> Result<(crate::flow::Citizen, crate::flow::Authentication), IdpError> {
    let citizen = crate::flow::upsert_citizen(
        ctx,
        &holder.national_id,
        &holder.given_name,
        &holder.family_name,
    )
    .await?;
    let authentication = crate::flow::Authentication {
        level: crate::Level::High,
        amr: amr.iter().map(|a| (*a).to_owned()).collect(),
        auth_time: ctx.clock.now().unix_timestamp(),
        method: method.to_owned(),
    };
    Ok((citizen, authentication))
}

/// Asks the OCSP responder about login certificates, remembering answers briefly.
#[derive(Debug)]
pub struct StatusChecker {
    issuer: Certificate,
    http: reqwest::Client,
    cache_for: Duration,
    cache: Mutex<HashMap<CertificateSerial, (Instant, CheckedStatus)>>,
}

impl StatusChecker {
    /// A checker for certificates of `issuer_der`.
    pub fn new(
        issuer_der: &[u8],
        http: reqwest::Client,
        cache_for: Duration,
    ) -> Result<Self, IdpError> {
        Ok(Self {
            issuer: Certificate::from_der(issuer_der)
                .map_err(|e| IdpError::Tls(format!("citizen authentication CA: {e}")))?,
            http,
            cache_for,
            cache: Mutex::default(),
        })
    }

    /// Drops a cached answer, so the next login asks the responder again.
    pub fn forget(&self, serial_hex: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.retain(|serial, _| !serial.to_hex().eq_ignore_ascii_case(serial_hex));
        }
    }

    /// The status of the holder's certificate. Fails closed: no answer is not "good".
    pub async fn status(&self, holder: &CardHolder) -> Result<CheckedStatus, String> {
        if let Ok(cache) = self.cache.lock()
            && let Some((at, status)) = cache.get(&holder.serial)
            && at.elapsed() < self.cache_for
        {
            return Ok(status.clone());
        }
        let url = holder
            .ocsp_url
            .as_deref()
            .ok_or("the certificate names no OCSP responder")?;
        let id = client::cert_id(&self.issuer, holder.serial.clone()).map_err(|e| e.to_string())?;
        let request = client::build_request(&id).map_err(|e| e.to_string())?;
        let response = self
            .http
            .post(url)
            .header("content-type", "application/ocsp-request")
            .body(request)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| format!("OCSP responder unreachable: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "OCSP responder answered HTTP {}",
                response.status()
            ));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| format!("OCSP response: {e}"))?;
        let status =
            client::check_response(&body, &self.issuer, &id, time::OffsetDateTime::now_utc())
                .map_err(|e| e.to_string())?;
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() > 100_000 {
                cache.clear();
            }
            cache.insert(holder.serial.clone(), (Instant::now(), status.clone()));
        }
        Ok(status)
    }
}

/// DER of a certificate, for the chain.
pub fn der_of(cert: &Certificate) -> Result<Vec<u8>, IdpError> {
    cert.to_der().map_err(|e| IdpError::Tls(e.to_string()))
}
