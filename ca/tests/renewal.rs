//! The short-lived service certificates (OCSP responders, the TSU, the idp's TLS
//! certificate) are renewed by the start that finds them within their renewal window:
//! same key, same subject, a new serial and validity, audited; CA certificates never.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::{collections::BTreeMap, sync::Arc};

use eid_ca::{CaRole, CertificateAuthority, CertificateSerial};
use eid_core::{
    FixedClock, ServiceContext, audit,
    config::{Config, Environment, Overrides},
    instance::{self, OpenMode},
};
use eid_tests::{TestBackend, TestDatabase, on_both_backends};

struct TestEnv(String);

impl Environment for TestEnv {
    fn var(&self, name: &str) -> Option<String> {
        (name == "EID_DATABASE_URL").then(|| self.0.clone())
    }
}

struct Seen {
    serial: String,
    not_after: std::time::SystemTime,
    subject: String,
    spki: Vec<u8>,
}

fn seen(ca: &CertificateAuthority) -> BTreeMap<CaRole, Seen> {
    ca.hierarchy()
        .iter()
        .map(|authority| {
            let tbs = authority.certificate.tbs_certificate();
            (
                authority.role,
                Seen {
                    serial: CertificateSerial::from_certificate(tbs.serial_number()).to_hex(),
                    not_after: tbs.validity().not_after.to_system_time(),
                    subject: tbs.subject().to_string(),
                    spki: der::Encode::to_der(tbs.subject_public_key_info()).unwrap(),
                },
            )
        })
        .collect()
}

async fn open(ctx: &ServiceContext) -> BTreeMap<CaRole, Seen> {
    seen(&CertificateAuthority::open(ctx).await.unwrap())
}

async fn service_certificates_are_renewed_before_they_expire(backend: TestBackend) {
    let db = TestDatabase::create(backend).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::load(
        None,
        &TestEnv(db.url.clone()),
        &Overrides {
            data_dir: Some(dir.path().join("data")),
        },
    )
    .unwrap();
    let clock = FixedClock::new(time::OffsetDateTime::now_utc());
    let instance = instance::open(config, Arc::new(clock.clone()), OpenMode::CreateIfMissing)
        .await
        .unwrap();
    let ctx = instance.ctx.clone();
    let first = open(&ctx).await;

    // Well inside every validity: nothing changes.
    clock.advance(time::Duration::days(300));
    assert!(
        first
            .iter()
            .zip(open(&ctx).await.iter())
            .all(|((_, a), (_, b))| a.serial == b.serial)
    );

    // A month before the one-year certificates end: those are renewed, nothing else.
    clock.advance(time::Duration::days(40));
    let second = open(&ctx).await;
    for (role, before) in &first {
        let after = &second[role];
        let renewed = matches!(
            role,
            CaRole::OcspCitizenAuthentication
                | CaRole::OcspCitizenSigning
                | CaRole::OcspOrganisationSeal
                | CaRole::IdpTls
                | CaRole::DeskTls
        );
        assert_eq!(before.serial != after.serial, renewed, "{role}");
        assert_eq!(before.spki, after.spki, "{role}: the same key");
        assert_eq!(before.subject, after.subject, "{role}: the same name");
        if renewed {
            assert!(after.not_after > before.not_after, "{role}");
        }
    }
    // The renewed certificates are signed by their issuers.
    let ca = CertificateAuthority::open(&ctx).await.unwrap();
    for role in [
        CaRole::OcspCitizenAuthentication,
        CaRole::IdpTls,
        CaRole::DeskTls,
    ] {
        let authority = ca.hierarchy().get(role).unwrap();
        let issuer = ca.hierarchy().get(role.issuer().unwrap()).unwrap();
        let tbs = der::Encode::to_der(authority.certificate.tbs_certificate()).unwrap();
        issuer
            .signer
            .public_key()
            .verify(
                issuer.signer.scheme(),
                &tbs,
                authority.certificate.signature().raw_bytes(),
            )
            .unwrap();
    }
    let renewals: Vec<_> = audit::tail(&ctx.db, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|entry| entry.action == "ca.certificate.renew")
        .collect();
    assert_eq!(renewals.len(), 5, "{renewals:?}");
    assert!(
        renewals
            .iter()
            .any(|entry| entry.details.contains(&first[&CaRole::IdpTls].serial))
    );
}

on_both_backends!(service_certificates_are_renewed_before_they_expire);
