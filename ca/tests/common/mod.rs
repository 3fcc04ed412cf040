//! A tiny PKI for the OCSP and CRL tests, generated per test in a temporary folder with
//! keys from a soft key store: root CA → issuing CA → {OCSP responder, two leaves}.
#![allow(clippy::unwrap_used, dead_code)]

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
    process::{Command, Output},
    str::FromStr,
    time::{Duration, SystemTime},
};

use eid_hsm::{KeyLabel, KeyRole, KeySigner, KeySpec, KeyStore, SoftSecret, SoftStoreOptions};
use x509_cert::{
    Certificate, TbsCertificate,
    builder::{Builder, CertificateBuilder, profile::BuilderProfile},
    der::{
        Encode, EncodePem,
        asn1::{Ia5String, Null, ObjectIdentifier, OctetString},
        flagset::FlagSet,
        pem::LineEnding,
    },
    ext::{
        Extension, ToExtension,
        pkix::{
            AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages,
            SubjectKeyIdentifier,
            crl::{FreshestCrl, dp::DistributionPoint},
            name::{DistributionPointName, GeneralName},
        },
    },
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoRef,
    time::{Time, Validity},
};

/// id-kp-OCSPSigning.
const ID_KP_OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
/// id-pkix-ocsp-nocheck.
const ID_PKIX_OCSP_NOCHECK: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");

/// A certificate with its key and its PEM file.
pub(crate) struct Issued {
    pub(crate) cert: Certificate,
    pub(crate) signer: KeySigner,
    pub(crate) pem: PathBuf,
}

pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) root: Issued,
    pub(crate) issuing: Issued,
    pub(crate) responder: Issued,
    /// Serial 0x8A… (19 octets, high bit set: DER adds a 0x00 sign octet).
    pub(crate) leaf_a: Issued,
    /// Serial 0x1001.
    pub(crate) leaf_b: Issued,
    /// Root then issuing CA, as openssl's -CAfile.
    pub(crate) chain: PathBuf,
}

/// What kind of certificate to issue.
enum Kind {
    Ca,
    Responder,
    Leaf,
}

/// A profile that puts exactly the extensions the test asks for.
struct TestProfile {
    subject: Name,
    issuer: Name,
    kind: Kind,
}

impl BuilderProfile for TestProfile {
    fn get_issuer(&self, _subject: &Name) -> Name {
        self.issuer.clone()
    }

    fn get_subject(&self) -> Name {
        self.subject.clone()
    }

    fn build_extensions(
        &self,
        spk: SubjectPublicKeyInfoRef<'_>,
        issuer_spk: SubjectPublicKeyInfoRef<'_>,
        tbs: &TbsCertificate,
    ) -> x509_cert::builder::Result<Vec<Extension>> {
        let subject = tbs.subject();
        let ski = SubjectKeyIdentifier::try_from(spk)?;
        let aki = AuthorityKeyIdentifier::try_from(issuer_spk)?;
        let mut extensions = vec![ski.to_extension(subject, &[])?];
        if self.subject != self.issuer {
            extensions.push(aki.to_extension(subject, &[])?);
        }
        match self.kind {
            Kind::Ca => {
                extensions.push(
                    BasicConstraints {
                        ca: true,
                        path_len_constraint: None,
                    }
                    .to_extension(subject, &[])?,
                );
                extensions.push(
                    KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign)
                        .to_extension(subject, &[])?,
                );
            }
            Kind::Responder => {
                extensions.push(
                    KeyUsage(FlagSet::from(KeyUsages::DigitalSignature))
                        .to_extension(subject, &[])?,
                );
                extensions
                    .push(ExtendedKeyUsage(vec![ID_KP_OCSP_SIGNING]).to_extension(subject, &[])?);
                extensions.push(Extension {
                    extn_id: ID_PKIX_OCSP_NOCHECK,
                    critical: false,
                    extn_value: OctetString::new(Null.to_der()?)?,
                });
            }
            Kind::Leaf => {
                extensions.push(
                    KeyUsage(FlagSet::from(KeyUsages::DigitalSignature))
                        .to_extension(subject, &[])?,
                );
                // openssl only consults delta CRLs (-use_deltas) for a certificate or
                // base CRL that points to them with freshestCRL.
                let delta_point = DistributionPoint {
                    distribution_point: Some(DistributionPointName::FullName(vec![
                        GeneralName::UniformResourceIdentifier(Ia5String::new(
                            "http://crl.example.test/delta.crl",
                        )?),
                    ])),
                    reasons: None,
                    crl_issuer: None,
                };
                extensions.push(FreshestCrl(vec![delta_point]).to_extension(subject, &[])?);
            }
        }
        Ok(extensions)
    }
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = KeyStore::open_soft(SoftStoreOptions {
            dir: dir.path().join("keys"),
            secret: SoftSecret::KeyFile {
                path: dir.path().join("keys.secret"),
                create_if_missing: true,
            },
            create: true,
            argon2_memory_kib: 1024,
        })
        .unwrap();
        let key = |label: &str| {
            let label = KeyLabel::new(label).unwrap();
            store
                .generate(&label, KeySpec::EcP256, KeyRole::Service)
                .unwrap();
            store.signer(&label, None).unwrap()
        };
        let root_key = key("root");
        let issuing_key = key("issuing");
        let responder_key = key("ocsp");
        let leaf_a_key = key("leaf-a");
        let leaf_b_key = key("leaf-b");

        let root_name = Name::from_str("CN=Test Root CA,O=eid tests,C=EE").unwrap();
        let issuing_name = Name::from_str("CN=Test Issuing CA,O=eid tests,C=EE").unwrap();
        let issue = |file: &str,
                     subject: &str,
                     serial: &[u8],
                     kind: Kind,
                     key: &KeySigner,
                     issuer: &Name,
                     issuer_key: &KeySigner| {
            let subject = Name::from_str(subject).unwrap();
            let profile = TestProfile {
                subject,
                issuer: issuer.clone(),
                kind,
            };
            let now = SystemTime::now();
            let validity = Validity::new(
                Time::try_from(now - Duration::from_secs(3600)).unwrap(),
                Time::try_from(now + Duration::from_secs(30 * 86_400)).unwrap(),
            );
            let cert = CertificateBuilder::new(
                profile,
                SerialNumber::new(serial).unwrap(),
                validity,
                key.public_key().spki().clone(),
            )
            .unwrap()
            .build::<_, eid_hsm::Signature>(issuer_key)
            .unwrap();
            let pem = dir.path().join(file);
            std::fs::write(&pem, cert.to_pem(LineEnding::LF).unwrap()).unwrap();
            Issued {
                cert,
                signer: key.clone(),
                pem,
            }
        };

        let root = issue(
            "root.pem",
            "CN=Test Root CA,O=eid tests,C=EE",
            &[1],
            Kind::Ca,
            &root_key,
            &root_name,
            &root_key,
        );
        let issuing = issue(
            "issuing.pem",
            "CN=Test Issuing CA,O=eid tests,C=EE",
            &[2],
            Kind::Ca,
            &issuing_key,
            &root_name,
            &root_key,
        );
        let responder = issue(
            "responder.pem",
            "CN=Test OCSP Responder,O=eid tests,C=EE",
            &[3],
            Kind::Responder,
            &responder_key,
            &issuing_name,
            &issuing_key,
        );
        let leaf_a = issue(
            "leaf-a.pem",
            "CN=Leaf A,O=eid tests,C=EE",
            &[0x8A; 19],
            Kind::Leaf,
            &leaf_a_key,
            &issuing_name,
            &issuing_key,
        );
        let leaf_b = issue(
            "leaf-b.pem",
            "CN=Leaf B,O=eid tests,C=EE",
            &[0x10, 0x01],
            Kind::Leaf,
            &leaf_b_key,
            &issuing_name,
            &issuing_key,
        );
        let chain = dir.path().join("chain.pem");
        let mut chain_pem = std::fs::read_to_string(&root.pem).unwrap();
        chain_pem.push_str(&std::fs::read_to_string(&issuing.pem).unwrap());
        std::fs::write(&chain, chain_pem).unwrap();

        Self {
            dir,
            root,
            issuing,
            responder,
            leaf_a,
            leaf_b,
            chain,
        }
    }

    /// A path in the PKI's folder.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to `name` in the PKI's folder.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// The output of a judge, with stdout and stderr as text.
pub(crate) struct Judged {
    pub(crate) success: bool,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Judged {
    pub(crate) fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs an independent judge (openssl, pkilint). A missing judge fails the test: a
/// skipped judgement would pass silently.
pub(crate) fn judge<I, S>(program: &str, args: I) -> Judged
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output: Output = match Command::new(program).args(args).output() {
        Ok(output) => output,
        Err(error) => panic!(
            "judge `{program}` could not be run ({error}); install it (openssl from the OS, \
             pkilint from PyPI) — these tests never skip a judge"
        ),
    };
    Judged {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Fails if pkilint reports any finding at WARNING or above. `tool_args` are the lint
/// sub-command's arguments before the file.
pub(crate) fn assert_pkilint_clean(tool: &str, tool_args: &[&str], file: &Path) {
    let mut args: Vec<&OsStr> = vec![OsStr::new("lint")];
    args.extend(tool_args.iter().map(OsStr::new));
    args.push(file.as_os_str());
    let all = judge(tool, &args);
    // pkilint prints one finding per line with its severity; its exit code is the number
    // of findings at or above the -s threshold, so run it again with -s WARNING.
    let serious = ["WARNING", "ERROR", "CRITICAL", "FATAL"];
    let findings: Vec<&str> = all
        .stdout
        .lines()
        .filter(|line| serious.iter().any(|severity| line.contains(severity)))
        .collect();
    assert!(
        findings.is_empty(),
        "{tool} found problems in {}:\n{}",
        file.display(),
        all.text()
    );
    let mut args_warning = args.clone();
    args_warning.insert(1, OsStr::new("WARNING"));
    args_warning.insert(1, OsStr::new("-s"));
    let at_warning = judge(tool, &args_warning);
    assert!(
        at_warning.success,
        "{tool} -s WARNING failed on {}:\n{}\n(all findings:\n{})",
        file.display(),
        at_warning.text(),
        all.text()
    );
}
