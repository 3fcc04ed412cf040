//! CRLs judged by openssl (signature, contents, path validation) and pkilint.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use common::{Pki, assert_pkilint_clean, judge};
use eid_ca::{
    crl::{CrlContent, CrlError, CrlScope, RevokedEntry, build_crl},
    reason::ReasonCode,
};
use time::{Duration, OffsetDateTime};
use x509_cert::{
    crl::CertificateList,
    der::{Decode, EncodePem, pem::LineEnding},
};

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn content(entries: &[RevokedEntry], crl_number: u64, scope: CrlScope) -> CrlContent<'_> {
    CrlContent {
        crl_number,
        this_update: now() - Duration::minutes(5),
        next_update: now() + Duration::days(7),
        entries,
        scope,
    }
}

/// Leaf A revoked for key compromise, leaf B on hold.
fn revoked(pki: &Pki) -> Vec<RevokedEntry> {
    vec![
        RevokedEntry {
            serial: pki.leaf_a.cert.tbs_certificate().serial_number().clone(),
            revoked_at: now() - Duration::hours(1),
            reason: Some(ReasonCode::KeyCompromise),
        },
        RevokedEntry {
            serial: pki.leaf_b.cert.tbs_certificate().serial_number().clone(),
            revoked_at: now() - Duration::hours(2),
            reason: Some(ReasonCode::CertificateHold),
        },
    ]
}

/// Writes the CRL as DER and PEM; returns the PEM path.
fn write(pki: &Pki, name: &str, der: &[u8]) -> PathBuf {
    pki.write(&format!("{name}.der"), der);
    let crl = <CertificateList>::from_der(der).unwrap();
    pki.write(
        &format!("{name}.pem"),
        crl.to_pem(LineEnding::LF).unwrap().as_bytes(),
    )
}

fn openssl_crl(pki: &Pki, name: &str, extra: &[&str]) -> String {
    let der = pki.path(&format!("{name}.der")).display().to_string();
    let issuing = pki.issuing.pem.display().to_string();
    let mut args = vec!["crl", "-inform", "DER", "-in", &der, "-CAfile", &issuing];
    args.extend_from_slice(extra);
    let result = judge("openssl", &args);
    assert!(result.success, "openssl crl failed:\n{}", result.text());
    assert!(
        result.text().contains("verify OK"),
        "openssl did not verify the CRL signature:\n{}",
        result.text()
    );
    result.text()
}

fn openssl_verify(pki: &Pki, crl_files: &[&PathBuf], leaf: &Path) -> common::Judged {
    let mut args = vec![
        "verify".to_owned(),
        "-crl_check".to_owned(),
        "-CAfile".to_owned(),
        pki.chain.display().to_string(),
    ];
    for crl in crl_files {
        args.push("-CRLfile".to_owned());
        args.push(crl.display().to_string());
    }
    args.push(leaf.display().to_string());
    judge("openssl", &args)
}

#[test]
fn crl_with_two_revocations_verifies_and_revokes() {
    let pki = Pki::new();
    let entries = revoked(&pki);
    let der = build_crl(
        &pki.issuing.cert,
        &pki.issuing.signer,
        &content(&entries, 42, CrlScope::Full),
    )
    .unwrap();
    let pem = write(&pki, "full", &der);

    let text = openssl_crl(&pki, "full", &["-noout", "-text"]);
    for expected in [
        "Version 2 (0x1)",
        "X509v3 CRL Number: \n                42",
        "Serial Number: 8A8A8A8A8A8A8A8A8A8A8A8A8A8A8A8A8A8A8A",
        "Serial Number: 1001",
        "Key Compromise",
        "Certificate Hold",
        "X509v3 Authority Key Identifier",
        "Issuer: C = EE, O = eid tests, CN = Test Issuing CA",
    ] {
        assert!(text.contains(expected), "expected `{expected}` in:\n{text}");
    }
    assert!(!text.contains("Delta CRL Indicator"), "{text}");

    for leaf in [&pki.leaf_a.pem, &pki.leaf_b.pem] {
        let result = openssl_verify(&pki, &[&pem], leaf);
        assert!(
            !result.success,
            "a revoked leaf verified:\n{}",
            result.text()
        );
        assert!(
            result.text().contains("certificate revoked"),
            "{}",
            result.text()
        );
    }
    // The responder certificate is not on the CRL.
    let result = openssl_verify(&pki, &[&pem], &pki.responder.pem);
    assert!(
        result.success,
        "a good certificate failed:\n{}",
        result.text()
    );
    assert!(result.text().contains(": OK"), "{}", result.text());

    assert_pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], &pem);
}

#[test]
fn empty_crl_omits_revoked_certificates_and_verifies() {
    let pki = Pki::new();
    let der = build_crl(
        &pki.issuing.cert,
        &pki.issuing.signer,
        &content(&[], 1, CrlScope::Full),
    )
    .unwrap();
    let crl = <CertificateList>::from_der(&der).unwrap();
    assert_eq!(crl.tbs_cert_list.revoked_certificates, None);
    let pem = write(&pki, "empty", &der);
    let text = openssl_crl(&pki, "empty", &["-noout", "-text"]);
    assert!(text.contains("No Revoked Certificates."), "{text}");
    let result = openssl_verify(&pki, &[&pem], &pki.leaf_a.pem);
    assert!(result.success, "{}", result.text());
    assert_pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], &pem);
}

#[test]
fn unspecified_reason_leaves_the_reason_code_out() {
    let pki = Pki::new();
    let entries = [RevokedEntry {
        serial: pki.leaf_a.cert.tbs_certificate().serial_number().clone(),
        revoked_at: now() - Duration::hours(1),
        reason: Some(ReasonCode::Unspecified),
    }];
    let der = build_crl(
        &pki.issuing.cert,
        &pki.issuing.signer,
        &content(&entries, 3, CrlScope::Full),
    )
    .unwrap();
    let crl = <CertificateList>::from_der(&der).unwrap();
    let revoked = crl.tbs_cert_list.revoked_certificates.unwrap();
    assert_eq!(revoked[0].crl_entry_extensions, None);
    let pem = write(&pki, "unspecified", &der);
    openssl_crl(&pki, "unspecified", &["-noout"]);
    assert_pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], &pem);
}

#[test]
fn delta_crl_carries_a_critical_indicator_and_verifies() {
    let pki = Pki::new();
    let entries = revoked(&pki);
    let der = build_crl(
        &pki.issuing.cert,
        &pki.issuing.signer,
        &content(&entries[..1], 43, CrlScope::DeltaOf(42)),
    )
    .unwrap();
    let pem = write(&pki, "delta", &der);
    let text = openssl_crl(&pki, "delta", &["-noout", "-text"]);
    assert!(
        text.contains("X509v3 Delta CRL Indicator: critical\n                42"),
        "expected a critical delta indicator naming base 42:\n{text}"
    );
    assert!(
        text.contains("X509v3 CRL Number: \n                43"),
        "{text}"
    );
    assert_pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], &pem);

    // openssl uses a delta next to its base with -use_deltas.
    let base = build_crl(
        &pki.issuing.cert,
        &pki.issuing.signer,
        &content(&[], 42, CrlScope::Full),
    )
    .unwrap();
    let base_pem = write(&pki, "base", &base);
    let base_only = openssl_verify(&pki, &[&base_pem], &pki.leaf_a.pem);
    assert!(base_only.success, "{}", base_only.text());
    let mut args = vec![
        "verify".to_owned(),
        "-crl_check".to_owned(),
        "-use_deltas".to_owned(),
        "-CAfile".to_owned(),
        pki.chain.display().to_string(),
        "-CRLfile".to_owned(),
        base_pem.display().to_string(),
        "-CRLfile".to_owned(),
        pem.display().to_string(),
    ];
    args.push(pki.leaf_a.pem.display().to_string());
    let result = judge("openssl", &args);
    assert!(!result.success, "{}", result.text());
    assert!(
        result.text().contains("certificate revoked"),
        "the delta's revocation was not applied:\n{}",
        result.text()
    );
}

#[test]
fn inconsistent_inputs_are_refused() {
    let pki = Pki::new();
    let entries = revoked(&pki);
    let build = |entries: &[RevokedEntry], scope| {
        build_crl(
            &pki.issuing.cert,
            &pki.issuing.signer,
            &content(entries, 10, scope),
        )
    };
    assert!(matches!(
        build(&entries, CrlScope::DeltaOf(10)),
        Err(CrlError::DeltaBase { .. })
    ));
    let twice = [entries[0].clone(), entries[0].clone()];
    assert!(matches!(
        build(&twice, CrlScope::Full),
        Err(CrlError::DuplicateSerial { .. })
    ));
    let mut removal = entries[1].clone();
    removal.reason = Some(ReasonCode::RemoveFromCrl);
    assert!(matches!(
        build(std::slice::from_ref(&removal), CrlScope::Full),
        Err(CrlError::RemoveFromFullCrl { .. })
    ));
    assert!(build(std::slice::from_ref(&removal), CrlScope::DeltaOf(9)).is_ok());
    let mut backwards = content(&entries, 10, CrlScope::Full);
    backwards.next_update = backwards.this_update;
    assert!(matches!(
        build_crl(&pki.issuing.cert, &pki.issuing.signer, &backwards),
        Err(CrlError::UpdateOrder { .. })
    ));
    assert!(matches!(
        build_crl(
            &pki.issuing.cert,
            &pki.root.signer,
            &content(&entries, 10, CrlScope::Full)
        ),
        Err(CrlError::IssuerKeyMismatch { .. })
    ));
}
