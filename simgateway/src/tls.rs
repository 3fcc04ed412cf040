//! The simulator's TLS identity: a key in the instance's key store and a self-signed
//! certificate. A real operator's gateway has a certificate of its own CA; relying
//! parties pin its key, not a CA, so self-signed is what the pin is tested against.

use std::{fmt, sync::Arc, time::Duration};

use der::Encode;
use eid_core::ServiceContext;
use eid_hsm::{
    KeyLabel, KeyRole, KeySigner, KeySpec, SignatureScheme as KeyScheme, mobile::GatewayPin,
};
use rustls::{
    ServerConfig, SignatureAlgorithm, SignatureScheme,
    server::{ClientHello, ResolvesServerCert},
    sign::{CertifiedKey, Signer, SigningKey},
};
use rustls_pki_types::CertificateDer;
use x509_cert::{
    builder::{Builder, CertificateBuilder, profile::BuilderProfile},
    ext::Extension,
    name::Name,
    serial_number::SerialNumber,
    time::{Time, Validity},
};

use crate::SimGatewayError;

/// The key's label in the instance's key store.
pub const TLS_KEY_LABEL: &str = "sim-gateway-tls";

/// The simulator's certificate, key and pin.
#[derive(Clone)]
pub struct GatewayTls {
    /// The self-signed certificate (DER).
    pub certificate: Vec<u8>,
    /// The pin relying parties configure: SHA-256 of the key's SubjectPublicKeyInfo.
    pub pin: GatewayPin,
    pub(crate) config: Arc<ServerConfig>,
}

impl fmt::Debug for GatewayTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayTls")
            .field("pin", &self.pin)
            .finish_non_exhaustive()
    }
}

struct SelfSigned(Name);

impl BuilderProfile for SelfSigned {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.0.clone()
    }

    fn get_subject(&self) -> Name {
        self.0.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &x509_cert::TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        // An end-entity certificate, and a v3 one: webpki (which checks the handshake
        // signature on the client side) refuses v1 certificates.
        use der::oid::AssociatedOid;
        let constraints = x509_cert::ext::pkix::BasicConstraints {
            ca: false,
            path_len_constraint: None,
        };
        Ok(vec![Extension {
            extn_id: x509_cert::ext::pkix::BasicConstraints::OID,
            critical: true,
            extn_value: der::asn1::OctetString::new(constraints.to_der()?)?,
        }])
    }
}

fn x509_time(at: time::OffsetDateTime) -> Result<Time, SimGatewayError> {
    let seconds = u64::try_from(at.unix_timestamp())
        .map_err(|_| SimGatewayError::Internal("a time before 1970".into()))?;
    der::DateTime::from_unix_duration(Duration::from_secs(seconds))
        .map(Time::from)
        .map_err(|e| SimGatewayError::Internal(format!("certificate time: {e}")))
}

impl GatewayTls {
    /// The simulator's key (P-256, created in the instance's key store on first use,
    /// so the pin survives restarts) and a fresh self-signed certificate for it.
    /// Blocks (key store).
    pub fn load(ctx: &ServiceContext) -> Result<Self, SimGatewayError> {
        let label = KeyLabel::new(TLS_KEY_LABEL)?;
        let info = ctx.keys.ensure(&label, KeySpec::EcP256, KeyRole::Service)?;
        let signer = ctx.keys.signer(&label, Some(KeyScheme::EcdsaSha256))?;
        let spki_der = info.public_key.to_der()?;
        let encoding =
            |e: &dyn fmt::Display| SimGatewayError::Internal(format!("TLS certificate: {e}"));
        let subject: Name = "CN=eid SIM gateway simulator (not for production)"
            .parse()
            .map_err(|e| encoding(&e))?;
        let now = ctx.clock.now();
        let validity = Validity::new(
            x509_time(now - time::Duration::hours(1))?,
            x509_time(now + time::Duration::days(365))?,
        );
        let mut serial = [0u8; 16];
        getrandom::fill(&mut serial).map_err(|e| encoding(&e))?;
        serial[0] &= 0x7f;
        serial[0] |= 0x01;
        let builder = CertificateBuilder::new(
            SelfSigned(subject),
            SerialNumber::new(&serial).map_err(|e| encoding(&e))?,
            validity,
            info.public_key.spki().clone(),
        )
        .map_err(|e| encoding(&e))?;
        let certificate = builder
            .build::<_, eid_hsm::Signature>(&signer)
            .map_err(|e| encoding(&e))?
            .to_der()
            .map_err(|e| encoding(&e))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = CertifiedKey::new(
            vec![CertificateDer::from(certificate.clone())],
            Arc::new(TlsKey { signer }),
        );
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| encoding(&e))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(FixedCert(Arc::new(key))));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            certificate,
            pin: GatewayPin::of_spki(&spki_der),
            config: Arc::new(config),
        })
    }
}

/// The TLS key in the key layer: rustls asks it to sign the handshake.
struct TlsKey {
    signer: KeySigner,
}

impl fmt::Debug for TlsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsKey").field("key", &self.signer).finish()
    }
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TlsSigner(self.signer.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

struct TlsSigner(KeySigner);

impl fmt::Debug for TlsSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsSigner")
    }
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.0
            .sign(message)
            .map(eid_hsm::Signature::into_bytes)
            .map_err(|e| rustls::Error::General(format!("TLS key: {e}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

#[derive(Debug)]
struct FixedCert(Arc<CertifiedKey>);

impl ResolvesServerCert for FixedCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}
