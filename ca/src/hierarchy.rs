//! The CA hierarchy: a root, the issuing CAs for citizens, their delegated OCSP
//! responders, the time-stamping unit and the idp's TLS server certificate.
//!
//! The embedded default creates every missing role on first start, each key in the key
//! layer and each certificate recorded with an audit event in one transaction; later
//! starts load what exists and change nothing.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use der::{Decode, Encode, asn1::OctetString};
use eid_core::{AuditEvent, ServiceContext, audit};
use eid_hsm::{KeyLabel, KeyRole, KeySigner, KeySpec};
use sqlx::Row;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use x509_cert::{
    Certificate,
    builder::{Builder, CertificateBuilder, profile::BuilderProfile},
    certificate::TbsCertificate,
    ext::{
        Extension,
        pkix::{KeyUsages, name::GeneralName},
    },
    name::Name,
    time::{Time, Validity},
};

use crate::{
    CaError, CertificateSerial,
    extensions::{self, oid},
    names::NameBuilder,
};

/// A place in the hierarchy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum CaRole {
    /// The root CA: signs the issuing CAs, the TSU and the idp's TLS certificate.
    Root,
    /// Issues citizens' authentication certificates.
    CitizenAuthenticationCa,
    /// Issues citizens' qualified signature certificates.
    CitizenSigningCa,
    /// Delegated OCSP responder for the citizen authentication CA.
    OcspCitizenAuthentication,
    /// Delegated OCSP responder for the citizen signing CA.
    OcspCitizenSigning,
    /// Issues organisations' qualified electronic seal certificates.
    OrganisationSealCa,
    /// Delegated OCSP responder for the organisation seal CA.
    OcspOrganisationSeal,
    /// The time-stamping unit of the TSA.
    TimeStamping,
    /// The idp's TLS server certificate for the card-login listener.
    IdpTls,
    /// The enrolment desk's TLS server certificate for its staff ID-card listener.
    DeskTls,
}

impl CaRole {
    /// Every role, issuers before what they issue.
    pub const ALL: [Self; 10] = [
        Self::Root,
        Self::CitizenAuthenticationCa,
        Self::CitizenSigningCa,
        Self::OcspCitizenAuthentication,
        Self::OcspCitizenSigning,
        Self::OrganisationSealCa,
        Self::OcspOrganisationSeal,
        Self::TimeStamping,
        Self::IdpTls,
        Self::DeskTls,
    ];

    /// The role's stable name: in URLs, file names and the database.
    pub fn name(self) -> &'static str {
        match self {
            Self::Root => "root",
            Self::CitizenAuthenticationCa => "citizen-auth-ca",
            Self::CitizenSigningCa => "citizen-sign-ca",
            Self::OcspCitizenAuthentication => "ocsp-citizen-auth",
            Self::OcspCitizenSigning => "ocsp-citizen-sign",
            Self::OrganisationSealCa => "org-seal-ca",
            Self::OcspOrganisationSeal => "ocsp-org-seal",
            Self::TimeStamping => "tsa",
            Self::IdpTls => "idp-tls",
            Self::DeskTls => "desk-tls",
        }
    }

    /// Parses [`CaRole::name`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }

    /// The label of the role's key in the key layer.
    pub fn key_label(self) -> String {
        format!("ca-{}", self.name())
    }

    /// Who issues this role's certificate (none for the root).
    pub fn issuer(self) -> Option<Self> {
        match self {
            Self::Root => None,
            Self::CitizenAuthenticationCa
            | Self::CitizenSigningCa
            | Self::OrganisationSealCa
            | Self::TimeStamping
            | Self::IdpTls
            | Self::DeskTls => Some(Self::Root),
            Self::OcspCitizenAuthentication => Some(Self::CitizenAuthenticationCa),
            Self::OcspCitizenSigning => Some(Self::CitizenSigningCa),
            Self::OcspOrganisationSeal => Some(Self::OrganisationSealCa),
        }
    }

    /// Whether the role is a CA that issues end-entity certificates (citizens' and
    /// organisations').
    pub fn is_issuing_ca(self) -> bool {
        matches!(
            self,
            Self::CitizenAuthenticationCa | Self::CitizenSigningCa | Self::OrganisationSealCa
        )
    }

    /// Every issuing CA.
    pub const ISSUING_CAS: [Self; 3] = [
        Self::CitizenAuthenticationCa,
        Self::CitizenSigningCa,
        Self::OrganisationSealCa,
    ];

    /// Whether the role publishes CRLs: the issuing CAs (full and delta) and the root
    /// (full: the authority revocation list of what it signs).
    pub fn publishes_crl(self) -> bool {
        self == Self::Root || self.is_issuing_ca()
    }

    /// Every role that publishes CRLs.
    pub const CRL_ISSUERS: [Self; 4] = [
        Self::Root,
        Self::CitizenAuthenticationCa,
        Self::CitizenSigningCa,
        Self::OrganisationSealCa,
    ];

    /// The OCSP responder of an issuing CA.
    pub fn ocsp_responder(self) -> Option<Self> {
        match self {
            Self::CitizenAuthenticationCa => Some(Self::OcspCitizenAuthentication),
            Self::CitizenSigningCa => Some(Self::OcspCitizenSigning),
            Self::OrganisationSealCa => Some(Self::OcspOrganisationSeal),
            _ => None,
        }
    }

    fn key_spec(self) -> KeySpec {
        // CA keys are long-lived: P-384. Responders, the TSU and TLS sign per request:
        // P-256, several times faster.
        match self {
            Self::Root
            | Self::CitizenAuthenticationCa
            | Self::CitizenSigningCa
            | Self::OrganisationSealCa => KeySpec::EcP384,
            _ => KeySpec::EcP256,
        }
    }

    /// Whether the system renews the role's certificate by itself (same key, new
    /// certificate from the same issuer) when it falls due: the short-lived
    /// certificates of the services. CA certificates are renewed in a ceremony.
    pub fn renews_automatically(self) -> bool {
        matches!(
            self,
            Self::OcspCitizenAuthentication
                | Self::OcspCitizenSigning
                | Self::OcspOrganisationSeal
                | Self::TimeStamping
                | Self::IdpTls
                | Self::DeskTls
        )
    }

    /// How long before its end a renewable certificate is renewed: a twelfth of its
    /// lifetime (a month for the one-year responder and TLS certificates).
    pub fn renewal_window(self) -> Duration {
        self.lifetime() / 12
    }

    fn lifetime(self) -> Duration {
        const DAY: u64 = 24 * 60 * 60;
        Duration::from_secs(
            DAY * match self {
                Self::Root => 20 * 365,
                Self::CitizenAuthenticationCa
                | Self::CitizenSigningCa
                | Self::OrganisationSealCa => 12 * 365,
                Self::TimeStamping => 6 * 365,
                Self::OcspCitizenAuthentication
                | Self::OcspCitizenSigning
                | Self::OcspOrganisationSeal
                | Self::IdpTls
                | Self::DeskTls => 365,
            },
        )
    }
}

impl fmt::Display for CaRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key ceremony decides for a role instead of the embedded defaults.
#[derive(Clone, Debug)]
pub(crate) struct RoleOverride {
    pub(crate) common_name: String,
    pub(crate) lifetime: Duration,
    pub(crate) key_spec: KeySpec,
    pub(crate) policies: Vec<der::asn1::ObjectIdentifier>,
    /// The audit actor: the ceremony and its witnesses.
    pub(crate) actor: String,
}

/// A certificate with everything the builder needs, decided in advance.
pub(crate) struct Planned {
    pub(crate) subject: Name,
    pub(crate) issuer: Name,
    pub(crate) extensions: Vec<Extension>,
}

impl BuilderProfile for Planned {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        _spk: spki::SubjectPublicKeyInfoRef<'_>,
        _issuer_spk: spki::SubjectPublicKeyInfoRef<'_>,
        _tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        Ok(self.extensions.clone())
    }
}

/// Converts a time for a certificate's validity (UTCTime before 2050, as RFC 5280 asks;
/// the builder adjusts).
pub(crate) fn x509_time(at: OffsetDateTime) -> Result<Time, CaError> {
    let seconds =
        u64::try_from(at.unix_timestamp()).map_err(|_| CaError::encoding("time", "before 1970"))?;
    let date = der::DateTime::from_unix_duration(Duration::from_secs(seconds))
        .map_err(|e| CaError::encoding("time", e))?;
    Ok(Time::from(date))
}

/// A certificate whose TBS part is built and fixed, waiting for its signature.
pub(crate) struct Prepared {
    builder: CertificateBuilder<Planned>,
    /// The DER TBS certificate: what will be signed, byte for byte.
    pub(crate) tbs: Vec<u8>,
}

/// Builds the TBS certificate (the signer gives the signature algorithm only).
pub(crate) fn prepare(
    planned: Planned,
    serial: &CertificateSerial,
    validity: (OffsetDateTime, OffsetDateTime),
    spki: spki::SubjectPublicKeyInfoOwned,
    signer: &KeySigner,
) -> Result<Prepared, CaError> {
    let mut builder = CertificateBuilder::new(
        planned,
        serial.to_x509()?,
        Validity::new(x509_time(validity.0)?, x509_time(validity.1)?),
        spki,
    )
    .map_err(|e| CaError::encoding("certificate", e))?;
    let tbs = builder
        .finalize(signer)
        .map_err(|e| CaError::encoding("TBS certificate", e))?;
    Ok(Prepared { builder, tbs })
}

impl Prepared {
    /// Signs through the key layer and checks the certificate is exactly the plan: the
    /// same TBS bytes (and, for RSA, a signature that verifies).
    pub(crate) fn sign(self, signer: &KeySigner) -> Result<Vec<u8>, CaError> {
        let signature = signer.sign(&self.tbs)?;
        let bits = der::asn1::BitString::from_bytes(signature.as_bytes())
            .map_err(|e| CaError::encoding("signature", e))?;
        let certificate = self
            .builder
            .assemble(bits, signer)
            .map_err(|e| CaError::encoding("certificate", e))?;
        let der = certificate
            .to_der()
            .map_err(|e| CaError::encoding("certificate", e))?;
        let parsed = Certificate::from_der(&der).map_err(|e| CaError::Mismatch(e.to_string()))?;
        let signed_tbs = parsed
            .tbs_certificate()
            .to_der()
            .map_err(|e| CaError::Mismatch(e.to_string()))?;
        if signed_tbs != self.tbs {
            return Err(CaError::Mismatch(
                "the signed TBS differs from the planned one".into(),
            ));
        }
        // An RSA signature computed with a faulty CRT step leaks the key; checking it
        // before release is the standard countermeasure. A token's signature is checked
        // too: the token signs through a cached object handle, and SoftHSM2 renumbers
        // handles when a session reloads the token, so a signature by another key must
        // not go out. Software ECDSA has neither failure, and verifying costs twice the
        // signature, so there the TBS check above suffices.
        let rsa = matches!(
            signer.scheme(),
            eid_hsm::SignatureScheme::RsaPkcs1Sha256 | eid_hsm::SignatureScheme::RsaPssSha256
        );
        if rsa || !signer.signs_quickly() {
            signer
                .public_key()
                .verify(signer.scheme(), &self.tbs, parsed.signature().raw_bytes())
                .map_err(|e| CaError::Mismatch(format!("the signature does not verify: {e}")))?;
        }
        Ok(der)
    }
}

/// One role's certificate and, for roles that sign, its signer.
#[derive(Clone, Debug)]
pub struct Authority {
    /// The role.
    pub role: CaRole,
    /// The certificate.
    pub certificate: Certificate,
    /// Its DER encoding.
    pub der: Vec<u8>,
    /// The role's key, ready to sign.
    pub signer: KeySigner,
    /// The label of that key in the key layer: `ca-<role>` at first, another after a
    /// re-key.
    pub key_label: String,
}

impl Authority {
    /// The end of the certificate's validity: nothing it issues may outlive it.
    pub fn not_after(&self) -> OffsetDateTime {
        let end: std::time::SystemTime = self
            .certificate
            .tbs_certificate()
            .validity()
            .not_after
            .into();
        OffsetDateTime::from(end)
    }
}

/// The whole hierarchy, loaded.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    authorities: BTreeMap<CaRole, Authority>,
}

impl Hierarchy {
    /// The authority of `role`.
    pub fn get(&self, role: CaRole) -> Result<&Authority, CaError> {
        self.authorities
            .get(&role)
            .ok_or_else(|| CaError::Task(format!("CA role {role} is not loaded")))
    }

    /// Every authority, root first.
    pub fn iter(&self) -> impl Iterator<Item = &Authority> {
        self.authorities.values()
    }

    /// Loads the hierarchy, creating every missing role (keys in the key layer,
    /// certificates signed by their issuers, each creation audited).
    pub async fn ensure(ctx: &ServiceContext) -> Result<Self, CaError> {
        let mut authorities = BTreeMap::new();
        let revoked = revoked_roles(ctx).await?;
        for role in CaRole::ALL {
            let authority = match load(ctx, role).await? {
                // A service certificate that was revoked gets a new key (its
                // compromise is the usual reason); a revoked CA waits for an operator.
                Some(authority) if role.renews_automatically() && revoked.contains(&role) => {
                    rekey(ctx, authority, &authorities, "system").await?
                }
                Some(authority)
                    if authority.due_for_renewal(ctx.clock.now())
                        || !issued_by_current_key(&authority, &authorities)? =>
                {
                    renew(ctx, authority, &authorities).await?
                }
                Some(authority) => authority,
                None => create(ctx, role, &authorities, None).await?,
            };
            authorities.insert(role, authority);
        }
        Ok(Self { authorities })
    }

    /// The renewable certificates that will fall due before `at` (the server warns
    /// of them; the next start renews them).
    pub fn due_for_renewal(&self, at: OffsetDateTime) -> Vec<&Authority> {
        self.iter()
            .filter(|authority| authority.due_for_renewal(at))
            .collect()
    }
}

impl Authority {
    fn due_for_renewal(&self, at: OffsetDateTime) -> bool {
        self.role.renews_automatically() && at + self.role.renewal_window() >= self.not_after()
    }
}

/// How a role's key is come by.
#[derive(Clone, Copy, Debug)]
enum KeyOrigin {
    /// It must exist.
    Existing,
    /// Reuse it if it exists (a first start interrupted after the key was made).
    Ensure(KeySpec),
    /// A ceremony: it must be generated now, never an existing one.
    Fresh(KeySpec),
}

async fn signer_for(
    ctx: &ServiceContext,
    label: &str,
    origin: KeyOrigin,
) -> Result<KeySigner, CaError> {
    let keys = ctx.keys.clone();
    let label = KeyLabel::new(label)?;
    tokio::task::spawn_blocking(move || {
        match origin {
            KeyOrigin::Existing => {}
            KeyOrigin::Ensure(spec) => {
                keys.ensure(&label, spec, KeyRole::Service)?;
            }
            KeyOrigin::Fresh(spec) => {
                keys.generate(&label, spec, KeyRole::Service)?;
            }
        }
        keys.signer(&label, None)
    })
    .await
    .map_err(|e| CaError::Task(e.to_string()))?
    .map_err(CaError::from)
}

/// Whether the role's certificate exists.
pub(crate) async fn load_existing(ctx: &ServiceContext, role: CaRole) -> Result<bool, CaError> {
    sqlx::query("SELECT role FROM ca_certificate WHERE role = $1")
        .bind(role.name())
        .fetch_optional(ctx.db.pool())
        .await
        .map(|row| row.is_some())
        .map_err(CaError::query("looking for a CA certificate"))
}

pub(crate) async fn load(ctx: &ServiceContext, role: CaRole) -> Result<Option<Authority>, CaError> {
    let row = sqlx::query("SELECT der, key_label FROM ca_certificate WHERE role = $1")
        .bind(role.name())
        .fetch_optional(ctx.db.pool())
        .await
        .map_err(CaError::query("loading a CA certificate"))?;
    let Some(row) = row else { return Ok(None) };
    let (der, key_label): (Vec<u8>, String) = (
        row.try_get("der")
            .map_err(CaError::query("loading a CA certificate"))?,
        row.try_get("key_label")
            .map_err(CaError::query("loading a CA certificate"))?,
    );
    let certificate =
        Certificate::from_der(&der).map_err(|e| CaError::encoding("stored CA certificate", e))?;
    let signer = signer_for(ctx, &key_label, KeyOrigin::Existing).await?;
    if signer.public_key().spki() != certificate.tbs_certificate().subject_public_key_info() {
        return Err(CaError::Mismatch(format!(
            "the key `{key_label}` in {} is not the key of the stored {role} certificate",
            ctx.keys.description()
        )));
    }
    Ok(Some(Authority {
        role,
        certificate,
        der,
        signer,
        key_label,
    }))
}

fn plan(
    ctx: &ServiceContext,
    role: CaRole,
    spki: &spki::SubjectPublicKeyInfoOwned,
    issuer: Option<&Authority>,
    chosen: Option<&RoleOverride>,
) -> Result<Planned, CaError> {
    let ca = &ctx.config.ca;
    let base = NameBuilder::default()
        .country(&ca.country)
        .organization(&ca.organization);
    let org = &ca.organization;
    let default_name = match role {
        CaRole::Root => format!("{org} Root CA"),
        CaRole::CitizenAuthenticationCa => format!("{org} Citizen Authentication CA"),
        CaRole::CitizenSigningCa => format!("{org} Citizen Qualified Signature CA"),
        CaRole::OcspCitizenAuthentication => format!("{org} Citizen Authentication OCSP Responder"),
        CaRole::OcspCitizenSigning => format!("{org} Citizen Signature OCSP Responder"),
        CaRole::OrganisationSealCa => format!("{org} Organisation Qualified Seal CA"),
        CaRole::OcspOrganisationSeal => format!("{org} Organisation Seal OCSP Responder"),
        CaRole::TimeStamping => format!("{org} Time-Stamping Unit"),
        CaRole::IdpTls => format!("{org} Identity Provider"),
        CaRole::DeskTls => format!("{org} Enrolment Desk"),
    };
    // A ceremony names each certificate itself.
    let subject = base
        .common_name(chosen.map_or(default_name.as_str(), |c| c.common_name.as_str()))
        .build()?;
    let issuer_name = match issuer {
        Some(issuer) => issuer.certificate.tbs_certificate().subject().clone(),
        None => subject.clone(),
    };
    let mut ext = vec![extensions::subject_key_identifier(spki)?];
    if let Some(issuer) = issuer {
        let issuer_spki = issuer
            .certificate
            .tbs_certificate()
            .subject_public_key_info();
        ext.push(extensions::authority_key_identifier(issuer_spki)?);
        ext.push(extensions::authority_info_access(
            None,
            &format!("{}/ca/{}.crt", ca.public_url, issuer.role),
        )?);
        // Everything the root signs is on the root's CRL, the authority revocation
        // list; delegated responders carry ocsp-nocheck instead (RFC 6960 §4.2.2.2.1).
        if issuer.role == CaRole::Root {
            ext.push(extensions::crl_distribution_point(&format!(
                "{}/crl/{}.crl",
                ca.public_url,
                CaRole::Root
            ))?);
        }
    }
    match role {
        CaRole::Root => {
            ext.push(extensions::basic_constraints(true, None)?);
            ext.push(extensions::key_usage(&[
                KeyUsages::KeyCertSign,
                KeyUsages::CRLSign,
            ])?);
        }
        CaRole::CitizenAuthenticationCa | CaRole::CitizenSigningCa | CaRole::OrganisationSealCa => {
            ext.push(extensions::basic_constraints(true, Some(0))?);
            ext.push(extensions::key_usage(&[
                KeyUsages::KeyCertSign,
                KeyUsages::CRLSign,
            ])?);
            let default_policy = match role {
                CaRole::CitizenSigningCa => oid::QCP_N_QSCD,
                CaRole::OrganisationSealCa => oid::QCP_L_QSCD,
                _ => oid::NCP_PLUS,
            };
            let policies = match chosen {
                Some(chosen) if !chosen.policies.is_empty() => chosen.policies.clone(),
                _ => vec![default_policy],
            };
            ext.push(extensions::certificate_policies(&policies)?);
        }
        CaRole::OcspCitizenAuthentication
        | CaRole::OcspCitizenSigning
        | CaRole::OcspOrganisationSeal => {
            ext.push(extensions::key_usage(&[KeyUsages::DigitalSignature])?);
            ext.push(extensions::extended_key_usage(&[oid::OCSP_SIGNING], false)?);
            ext.push(extensions::ocsp_nocheck()?);
        }
        CaRole::TimeStamping => {
            ext.push(extensions::key_usage(&[KeyUsages::DigitalSignature])?);
            // RFC 3161 §2.3: the TSU certificate's only purpose, and critical.
            ext.push(extensions::extended_key_usage(&[oid::TIME_STAMPING], true)?);
        }
        // Each ID-card listener's own certificate.
        CaRole::IdpTls => tls_server(
            &mut ext,
            ctx.config.idp.card_listen,
            &ctx.config.idp.card_url,
        )?,
        CaRole::DeskTls => tls_server(
            &mut ext,
            ctx.config.enrolment.card_listen,
            &ctx.config.enrolment.card_url,
        )?,
    }
    Ok(Planned {
        subject,
        issuer: issuer_name,
        extensions: ext,
    })
}

/// A TLS server certificate's extensions, for a listener bound to `listen` and reached
/// at `public_url`: its names are the URL's host (a DNS name, or an IP address) and the
/// bound address unless that is unspecified (0.0.0.0); 127.0.0.1 if neither names
/// anything. pkilint (rightly) refuses a bare "localhost" as a DNS name.
fn tls_server(
    ext: &mut Vec<Extension>,
    listen: SocketAddr,
    public_url: &str,
) -> Result<(), CaError> {
    ext.push(extensions::key_usage(&[KeyUsages::DigitalSignature])?);
    ext.push(extensions::extended_key_usage(&[oid::SERVER_AUTH], false)?);
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut names = Vec::new();
    match url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host().map(|h| h.to_owned()))
    {
        Some(url::Host::Domain(name)) if !name.eq_ignore_ascii_case("localhost") => {
            names.push(GeneralName::DnsName(
                der::asn1::Ia5String::new(&name).map_err(|e| CaError::encoding("SAN", e))?,
            ));
        }
        Some(url::Host::Ipv4(v4)) => addresses.push(IpAddr::V4(v4)),
        Some(url::Host::Ipv6(v6)) => addresses.push(IpAddr::V6(v6)),
        _ => {}
    }
    if !listen.ip().is_unspecified() && !addresses.contains(&listen.ip()) {
        addresses.push(listen.ip());
    }
    if names.is_empty() && addresses.is_empty() {
        addresses.push(IpAddr::from([127, 0, 0, 1]));
    }
    for address in addresses {
        let octets = match address {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        names.push(GeneralName::IpAddress(
            OctetString::new(octets).map_err(|e| CaError::encoding("SAN", e))?,
        ));
    }
    ext.push(extensions::subject_alt_name(names)?);
    Ok(())
}

pub(crate) async fn create(
    ctx: &ServiceContext,
    role: CaRole,
    created: &BTreeMap<CaRole, Authority>,
    chosen: Option<&RoleOverride>,
) -> Result<Authority, CaError> {
    let issuer = issuer_among(role, created)?;
    let origin = match chosen {
        Some(chosen) => KeyOrigin::Fresh(chosen.key_spec),
        None => KeyOrigin::Ensure(role.key_spec()),
    };
    let signer = signer_for(ctx, &role.key_label(), origin).await?;
    let made = certify(ctx, role, &signer, issuer, chosen, None).await?;
    let text = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| CaError::encoding("time", e));

    let mut tx = ctx.db.begin_write().await?;
    sqlx::query(
        "INSERT INTO ca_certificate (role, serial, issuer_role, key_label, subject, not_before, \
         not_after, der, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(role.name())
    .bind(made.serial.to_hex())
    .bind(role.issuer().map(CaRole::name))
    .bind(role.key_label())
    .bind(&made.subject)
    .bind(text(made.not_before)?)
    .bind(text(made.not_after)?)
    .bind(&made.der)
    .bind(text(ctx.clock.now())?)
    .execute(&mut *tx)
    .await
    .map_err(CaError::query("storing a CA certificate"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(
            chosen.map_or("system", |c| c.actor.as_str()),
            "ca.certificate.create",
            "ca-certificate",
            role.name(),
        )
        .details(serde_json::json!({
            "serial": made.serial.to_hex(),
            "subject": made.subject,
            "issuer": role.issuer().map(CaRole::name),
            "key_label": role.key_label(),
            "key_store": ctx.keys.description(),
            "not_after": text(made.not_after)?,
        })),
    )
    .await?;
    tx.commit()
        .await
        .map_err(CaError::query("committing a CA certificate"))?;
    tracing::info!(role = role.name(), serial = %made.serial, "created CA certificate");
    Ok(Authority {
        role,
        certificate: made.certificate,
        der: made.der,
        signer,
        key_label: role.key_label(),
    })
}

/// A new certificate for the same key, from the same issuer, in place of one that is
/// falling due; the old one is named in the audit event.
async fn renew(
    ctx: &ServiceContext,
    old: Authority,
    created: &BTreeMap<CaRole, Authority>,
) -> Result<Authority, CaError> {
    let role = old.role;
    let issuer = issuer_among(role, created)?;
    let made = certify(ctx, role, &old.signer, issuer, None, Some(&old.certificate)).await?;
    let old_serial =
        CertificateSerial::from_certificate(old.certificate.tbs_certificate().serial_number());
    let text = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| CaError::encoding("time", e));
    let mut tx = ctx.db.begin_write().await?;
    // Only over the certificate this process saw: of two processes starting at once,
    // one renews and the other loads its result.
    let replaced = sqlx::query(
        "UPDATE ca_certificate SET serial = $1, subject = $2, not_before = $3, not_after = $4, \
         der = $5, created_at = $6 WHERE role = $7 AND serial = $8",
    )
    .bind(made.serial.to_hex())
    .bind(&made.subject)
    .bind(text(made.not_before)?)
    .bind(text(made.not_after)?)
    .bind(&made.der)
    .bind(text(ctx.clock.now())?)
    .bind(role.name())
    .bind(old_serial.to_hex())
    .execute(&mut *tx)
    .await
    .map_err(CaError::query("replacing a CA certificate"))?;
    if replaced.rows_affected() == 0 {
        drop(tx);
        return load(ctx, role)
            .await?
            .ok_or_else(|| CaError::Task(format!("the {role} certificate vanished")));
    }
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(
            "system",
            "ca.certificate.renew",
            "ca-certificate",
            role.name(),
        )
        .details(serde_json::json!({
            "serial": made.serial.to_hex(),
            "replaces": old_serial.to_hex(),
            "replaced_not_after": text(old.not_after())?,
            "not_after": text(made.not_after)?,
            "key_label": old.key_label,
        })),
    )
    .await?;
    tx.commit()
        .await
        .map_err(CaError::query("committing a renewed CA certificate"))?;
    tracing::info!(role = role.name(), serial = %made.serial, replaces = %old_serial, "renewed certificate");
    Ok(Authority {
        role,
        certificate: made.certificate,
        der: made.der,
        signer: old.signer,
        key_label: old.key_label,
    })
}

/// The authority that issues `role`'s certificate, from those loaded before it.
fn issuer_among(
    role: CaRole,
    loaded: &BTreeMap<CaRole, Authority>,
) -> Result<Option<&Authority>, CaError> {
    role.issuer()
        .map(|issuer| {
            loaded
                .get(&issuer)
                .ok_or_else(|| CaError::Task(format!("{issuer} must load before {role}")))
        })
        .transpose()
}

/// Whether `authority`'s certificate names its issuer's current key (false once the
/// issuer was re-keyed: the certificate is then renewed under the new key).
fn issued_by_current_key(
    authority: &Authority,
    loaded: &BTreeMap<CaRole, Authority>,
) -> Result<bool, CaError> {
    let Some(issuer) = issuer_among(authority.role, loaded)? else {
        return Ok(true);
    };
    let expected = extensions::authority_key_identifier(
        issuer
            .certificate
            .tbs_certificate()
            .subject_public_key_info(),
    )?;
    Ok(authority
        .certificate
        .tbs_certificate()
        .extensions()
        .into_iter()
        .flatten()
        .any(|e| e.extn_id == expected.extn_id && e.extn_value == expected.extn_value))
}

/// The roles whose current certificate is revoked.
pub(crate) async fn revoked_roles(
    ctx: &ServiceContext,
) -> Result<std::collections::BTreeSet<CaRole>, CaError> {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT role FROM ca_certificate WHERE revoked_at IS NOT NULL")
            .fetch_all(ctx.db.pool())
            .await
            .map_err(CaError::query("listing revoked CA certificates"))?;
    Ok(names
        .iter()
        .filter_map(|name| CaRole::parse(name))
        .collect())
}

/// A fresh key and a new certificate for a role whose certificate is revoked, as
/// `actor`. The new key is generated under a label of its own
/// (`ca-<role>-<unix time>`), certified by the role's issuer with the old
/// certificate's subject and length of validity, and stored in the old one's place in
/// one transaction with its audit event; the revoked certificate moves to
/// `ca_certificate_retired`, where its issuer's CRLs keep listing it. The old key is
/// then destroyed. Of two processes doing this at once, one re-keys and the other
/// destroys its unused key and loads the result.
pub(crate) async fn rekey(
    ctx: &ServiceContext,
    old: Authority,
    loaded: &BTreeMap<CaRole, Authority>,
    actor: &str,
) -> Result<Authority, CaError> {
    let role = old.role;
    let issuer = issuer_among(role, loaded)?;
    let old_label = KeyLabel::new(old.key_label.clone())?;
    let keys = ctx.keys.clone();
    let spec = tokio::task::spawn_blocking(move || keys.find(&old_label))
        .await
        .map_err(|e| CaError::Task(e.to_string()))??
        .map_or(role.key_spec(), |info| info.spec);
    let now = ctx.clock.now();
    let label = format!("{}-{}", role.key_label(), now.unix_timestamp());
    let signer = match signer_for(ctx, &label, KeyOrigin::Fresh(spec)).await {
        Ok(signer) => signer,
        // Another process re-keying in the same second took the label first: its
        // result, once stored, is the role's.
        Err(e) => match load(ctx, role).await? {
            Some(current) if current.key_label != old.key_label => return Ok(current),
            _ => return Err(e),
        },
    };
    let made = certify(ctx, role, &signer, issuer, None, Some(&old.certificate)).await?;
    let old_serial =
        CertificateSerial::from_certificate(old.certificate.tbs_certificate().serial_number());
    let text = |t: OffsetDateTime| t.format(&Rfc3339).map_err(|e| CaError::encoding("time", e));
    let mut tx = ctx.db.begin_write().await?;
    let retired = sqlx::query(
        "INSERT INTO ca_certificate_retired (serial, role, issuer_role, key_label, subject, \
         not_before, not_after, der, revoked_at, revocation_reason, retired_at) \
         SELECT serial, role, issuer_role, key_label, subject, not_before, not_after, der, \
         revoked_at, revocation_reason, $1 FROM ca_certificate \
         WHERE role = $2 AND serial = $3 AND revoked_at IS NOT NULL",
    )
    .bind(text(now)?)
    .bind(role.name())
    .bind(old_serial.to_hex())
    .execute(&mut *tx)
    .await
    .map_err(CaError::query("retiring a revoked CA certificate"))?;
    if retired.rows_affected() == 0 {
        // Another process re-keyed first (or the certificate is not revoked).
        drop(tx);
        destroy_key(ctx, &label).await;
        return load(ctx, role)
            .await?
            .ok_or_else(|| CaError::Task(format!("the {role} certificate vanished")));
    }
    sqlx::query(
        "UPDATE ca_certificate SET serial = $1, key_label = $2, subject = $3, not_before = $4, \
         not_after = $5, der = $6, created_at = $7, revoked_at = NULL, revocation_reason = NULL \
         WHERE role = $8 AND serial = $9",
    )
    .bind(made.serial.to_hex())
    .bind(&label)
    .bind(&made.subject)
    .bind(text(made.not_before)?)
    .bind(text(made.not_after)?)
    .bind(&made.der)
    .bind(text(now)?)
    .bind(role.name())
    .bind(old_serial.to_hex())
    .execute(&mut *tx)
    .await
    .map_err(CaError::query("storing a re-keyed CA certificate"))?;
    // Running servers notice that the role changed and stop using what they loaded.
    sqlx::query("UPDATE revocation_epoch SET epoch = epoch + 1 WHERE id = 1")
        .execute(&mut *tx)
        .await
        .map_err(CaError::query("advancing the revocation epoch"))?;
    audit::append(
        &mut tx,
        ctx.clock.as_ref(),
        &AuditEvent::new(actor, "ca.certificate.rekey", "ca-certificate", role.name()).details(
            serde_json::json!({
                "serial": made.serial.to_hex(),
                "replaces": old_serial.to_hex(),
                "key_label": label,
                "replaced_key_label": old.key_label,
                "key_spec": spec.name(),
                "key_store": ctx.keys.description(),
                "issuer": role.issuer().map(CaRole::name),
                "not_after": text(made.not_after)?,
            }),
        ),
    )
    .await?;
    tx.commit()
        .await
        .map_err(CaError::query("committing a re-keyed CA certificate"))?;
    tracing::warn!(role = role.name(), serial = %made.serial, replaces = %old_serial, key = %label, "re-keyed a revoked CA role");
    destroy_key(ctx, &old.key_label).await;
    Ok(Authority {
        role,
        certificate: made.certificate,
        der: made.der,
        signer,
        key_label: label,
    })
}

/// Destroys a key no certificate uses any more; a failure is logged, not fatal (the
/// key is then left for an operator to remove).
async fn destroy_key(ctx: &ServiceContext, label: &str) {
    let keys = ctx.keys.clone();
    let label = label.to_owned();
    let outcome = tokio::task::spawn_blocking(move || {
        KeyLabel::new(label.clone())
            .and_then(|l| keys.destroy(&l))
            .map_err(|e| (label, e.to_string()))
    })
    .await;
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err((label, e))) => {
            tracing::error!(key = %label, error = %e, "a retired CA key could not be destroyed");
        }
        Err(e) => tracing::error!(error = %e, "destroying a retired CA key failed"),
    }
}

/// A signed certificate for a role, before it is stored.
struct Made {
    certificate: Certificate,
    der: Vec<u8>,
    serial: CertificateSerial,
    subject: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

/// Plans and signs the certificate of `role` for `signer`'s key; a renewal keeps the
/// `previous` certificate's subject and length of validity (a ceremony may have chosen
/// both).
async fn certify(
    ctx: &ServiceContext,
    role: CaRole,
    signer: &KeySigner,
    issuer: Option<&Authority>,
    chosen: Option<&RoleOverride>,
    previous: Option<&Certificate>,
) -> Result<Made, CaError> {
    let spki = signer.public_key().spki().clone();
    let mut planned = plan(ctx, role, &spki, issuer, chosen)?;
    let serial = CertificateSerial::random()?;
    let now = ctx.clock.now();
    // Back-dated an hour so relying parties with a slightly slow clock accept it.
    let not_before = now - time::Duration::hours(1);
    let mut lifetime = time::Duration::try_from(chosen.map_or(role.lifetime(), |c| c.lifetime))
        .map_err(|e| CaError::encoding("validity", e))?;
    if let Some(previous) = previous {
        planned.subject = previous.tbs_certificate().subject().clone();
        let validity = previous.tbs_certificate().validity();
        let (from, to): (std::time::SystemTime, std::time::SystemTime) =
            (validity.not_before.into(), validity.not_after.into());
        lifetime = OffsetDateTime::from(to) - OffsetDateTime::from(from) - time::Duration::hours(1);
    }
    let mut not_after = now + lifetime;
    if let Some(issuer) = issuer {
        not_after = not_after.min(issuer.not_after());
    }
    let issuing_signer = issuer.map_or(signer, |issuer| &issuer.signer).clone();
    let der = tokio::task::spawn_blocking(move || {
        prepare(
            planned,
            &serial,
            (not_before, not_after),
            spki,
            &issuing_signer,
        )?
        .sign(&issuing_signer)
    })
    .await
    .map_err(|e| CaError::Task(e.to_string()))??;
    let certificate =
        Certificate::from_der(&der).map_err(|e| CaError::encoding("certificate", e))?;
    let tbs = certificate.tbs_certificate();
    let serial = CertificateSerial::from_certificate(tbs.serial_number());
    let subject = tbs.subject().to_string();
    Ok(Made {
        certificate,
        der,
        serial,
        subject,
        not_before,
        not_after,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use der::Decode;
    use x509_cert::ext::pkix::{SubjectAltName, name::GeneralName};

    use super::tls_server;

    /// The names a TLS certificate for `listen` and `url` carries, as text.
    fn names(listen: &str, url: &str) -> Vec<String> {
        let mut ext = Vec::new();
        tls_server(&mut ext, listen.parse().unwrap(), url).unwrap();
        let san = ext.last().unwrap();
        SubjectAltName::from_der(san.extn_value.as_bytes())
            .unwrap()
            .0
            .into_iter()
            .map(|name| match name {
                GeneralName::DnsName(name) => format!("dns:{name}"),
                GeneralName::IpAddress(octets) => format!("ip:{:?}", octets.as_bytes()),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn tls_certificates_name_the_public_host_and_the_bound_address() {
        // A public host name, the listener on every interface: the name only.
        assert_eq!(
            names("0.0.0.0:8446", "https://card.login.eid.gov.tt:8446"),
            ["dns:card.login.eid.gov.tt"]
        );
        // The development default: the loopback address once.
        assert_eq!(
            names("127.0.0.1:8443", "https://127.0.0.1:8443"),
            ["ip:[127, 0, 0, 1]"]
        );
        // A name and a specific bound address: both.
        assert_eq!(
            names("10.1.2.3:8443", "https://login.example.org"),
            ["dns:login.example.org", "ip:[10, 1, 2, 3]"]
        );
        // "localhost" is no DNS name for a certificate; nothing else: loopback.
        assert_eq!(
            names("0.0.0.0:8443", "https://localhost:8443"),
            ["ip:[127, 0, 0, 1]"]
        );
    }
}
