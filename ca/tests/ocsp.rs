//! OCSP requests from openssl, responses judged by openssl and pkilint.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{Pki, assert_pkilint_clean, judge};
use eid_ca::{
    ocsp::{
        CertIdHash, CertificateSerial, ErrorStatus, IssuerHashes, MAX_REQUEST_BYTES, OcspError,
        ResponseEntry, Status, asn1, error_response, parse_get_path, parse_request, sign_response,
    },
    reason::ReasonCode,
};
use time::{Duration, OffsetDateTime};
use x509_cert::der::{
    Decode, Encode,
    asn1::{Null, ObjectIdentifier, OctetString, Uint},
};
use x509_cert::spki::AlgorithmIdentifierOwned;

/// `openssl ocsp -issuer issuing.pem [-sha256] -cert <leaf> -reqout <out> [-no_nonce]`.
fn openssl_request(pki: &Pki, leaves: &[&Path], sha256: bool, nonce: bool, out: &str) -> Vec<u8> {
    let out = pki.path(out);
    let mut args = vec!["ocsp".to_owned(), "-issuer".to_owned()];
    args.push(pki.issuing.pem.display().to_string());
    if sha256 {
        // The digest option applies to the -cert options after it.
        args.push("-sha256".to_owned());
    }
    for leaf in leaves {
        args.push("-cert".to_owned());
        args.push(leaf.display().to_string());
    }
    if !nonce {
        args.push("-no_nonce".to_owned());
    }
    args.push("-reqout".to_owned());
    args.push(out.display().to_string());
    let result = judge("openssl", &args);
    assert!(
        result.success,
        "openssl ocsp -reqout failed: {}",
        result.text()
    );
    std::fs::read(out).unwrap()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn entry(cert_id: eid_ca::ocsp::CertIdKey, status: Status) -> ResponseEntry {
    ResponseEntry {
        cert_id,
        status,
        this_update: now() - Duration::minutes(1),
        next_update: Some(now() + Duration::days(1)),
    }
}

/// openssl's view of `response` for `leaves`, checking the signature through the chain.
fn openssl_status(pki: &Pki, response: &Path, leaves: &[&Path], sha256: bool) -> String {
    let mut args = vec![
        "ocsp".to_owned(),
        "-respin".to_owned(),
        response.display().to_string(),
        "-issuer".to_owned(),
        pki.issuing.pem.display().to_string(),
        "-CAfile".to_owned(),
        pki.chain.display().to_string(),
        "-no_nonce".to_owned(),
    ];
    if sha256 {
        args.push("-sha256".to_owned());
    }
    for leaf in leaves {
        args.push("-cert".to_owned());
        args.push(leaf.display().to_string());
    }
    let result = judge("openssl", &args);
    let text = result.text();
    assert!(result.success, "openssl ocsp -respin failed:\n{text}");
    assert!(
        text.contains("Response verify OK"),
        "openssl did not verify the response:\n{text}"
    );
    text
}

#[test]
fn openssl_requests_parse_and_match_the_issuer() {
    let pki = Pki::new();
    let issuer = IssuerHashes::new(&pki.issuing.cert).unwrap();
    let root = IssuerHashes::new(&pki.root.cert).unwrap();
    for (sha256, nonce) in [(false, true), (true, true), (false, false), (true, false)] {
        let der = openssl_request(&pki, &[&pki.leaf_a.pem], sha256, nonce, "req.der");
        let request = parse_request(&der).unwrap();
        assert_eq!(request.certs.len(), 1);
        let id = &request.certs[0];
        let hash = if sha256 {
            CertIdHash::Sha256
        } else {
            CertIdHash::Sha1
        };
        assert_eq!(id.hash, hash);
        assert!(
            issuer.matches(id),
            "CertID {id:?} does not match the issuing CA"
        );
        assert!(!root.matches(id), "CertID {id:?} matches the wrong CA");
        assert_eq!(
            id.serial,
            CertificateSerial::from(pki.leaf_a.cert.tbs_certificate().serial_number())
        );
        assert_eq!(id.serial.as_bytes(), [0x8A; 19]);
        assert_eq!(issuer.cert_id(hash, id.serial.clone()), *id);
        match (nonce, &request.nonce) {
            (true, Some(value)) => {
                // openssl 3 sends the RFC 8954 form: an OCTET STRING of 16 random octets.
                let inner = OctetString::from_der(value).unwrap();
                assert_eq!(inner.as_bytes().len(), 16);
            }
            (false, None) => {}
            other => panic!("nonce expectation {other:?}"),
        }
    }
}

#[test]
fn good_revoked_and_unknown_verify_with_openssl_and_pkilint() {
    let pki = Pki::new();
    let issuer = IssuerHashes::new(&pki.issuing.cert).unwrap();
    let revoked_at = OffsetDateTime::from_unix_timestamp(1_760_000_000).unwrap();
    let cases = [
        (Status::Good, "good", None),
        (
            Status::Revoked {
                at: revoked_at,
                reason: Some(ReasonCode::KeyCompromise),
            },
            "revoked",
            Some("Reason: keyCompromise"),
        ),
        (Status::Unknown, "unknown", None),
    ];
    for sha256 in [false, true] {
        for (status, word, detail) in &cases {
            let der = openssl_request(&pki, &[&pki.leaf_a.pem], sha256, false, "req.der");
            let request = parse_request(&der).unwrap();
            assert!(issuer.matches(&request.certs[0]));
            let response = sign_response(
                &pki.responder.signer,
                &pki.responder.cert,
                &[entry(request.certs[0].clone(), *status)],
                None,
                now(),
            )
            .unwrap();
            let file = pki.write("resp.der", &response);
            let text = openssl_status(&pki, &file, &[&pki.leaf_a.pem], sha256);
            let expected = format!("{}: {word}", pki.leaf_a.pem.display());
            assert!(text.contains(&expected), "expected `{expected}`:\n{text}");
            if let Some(detail) = detail {
                assert!(text.contains(detail), "expected `{detail}`:\n{text}");
                assert!(
                    text.contains("Revocation Time: Oct  9"),
                    "revocation time:\n{text}"
                );
            }
            assert_pkilint_clean("lint_ocsp_response", &[], &file);
        }
    }
}

#[test]
fn one_response_answers_for_several_certificates() {
    let pki = Pki::new();
    let issuer = IssuerHashes::new(&pki.issuing.cert).unwrap();
    let serial = |issued: &common::Issued| {
        CertificateSerial::from(issued.cert.tbs_certificate().serial_number())
    };
    // Pre-produced, as a cache would: CertIDs from the issuer, not from a request.
    let response = sign_response(
        &pki.responder.signer,
        &pki.responder.cert,
        &[
            entry(
                issuer.cert_id(CertIdHash::Sha1, serial(&pki.leaf_a)),
                Status::Good,
            ),
            entry(
                issuer.cert_id(CertIdHash::Sha1, serial(&pki.leaf_b)),
                Status::Revoked {
                    at: now() - Duration::hours(2),
                    reason: Some(ReasonCode::CertificateHold),
                },
            ),
        ],
        None,
        now(),
    )
    .unwrap();
    let file = pki.write("multi.der", &response);
    let text = openssl_status(&pki, &file, &[&pki.leaf_a.pem, &pki.leaf_b.pem], false);
    assert!(
        text.contains(&format!("{}: good", pki.leaf_a.pem.display())),
        "{text}"
    );
    assert!(
        text.contains(&format!("{}: revoked", pki.leaf_b.pem.display())),
        "{text}"
    );
    assert!(text.contains("Reason: certificateHold"), "{text}");
    assert_pkilint_clean("lint_ocsp_response", &[], &file);
}

#[test]
fn nonce_is_echoed_and_openssl_checks_it() {
    let pki = Pki::new();
    let der = openssl_request(&pki, &[&pki.leaf_b.pem], false, true, "req.der");
    let request = parse_request(&der).unwrap();
    let nonce = request.nonce.clone().unwrap();
    let response = sign_response(
        &pki.responder.signer,
        &pki.responder.cert,
        &[entry(request.certs[0].clone(), Status::Good)],
        Some(&nonce),
        now(),
    )
    .unwrap();
    let file = pki.write("resp.der", &response);
    let request_file = pki.path("req.der");
    let check = |request_file: &Path| {
        judge(
            "openssl",
            [
                "ocsp",
                "-reqin",
                &request_file.display().to_string(),
                "-respin",
                &file.display().to_string(),
                "-CAfile",
                &pki.chain.display().to_string(),
            ],
        )
    };
    let same = check(&request_file);
    assert!(same.success, "{}", same.text());
    assert!(
        same.text().contains("Response verify OK"),
        "{}",
        same.text()
    );
    assert!(
        !same.text().contains("Nonce Verify error"),
        "{}",
        same.text()
    );
    // The judge does check: another request's nonce is refused.
    openssl_request(&pki, &[&pki.leaf_b.pem], false, true, "other.der");
    let other = check(&pki.path("other.der"));
    assert!(
        other.text().contains("Nonce Verify error"),
        "{}",
        other.text()
    );
    assert_pkilint_clean("lint_ocsp_response", &[], &file);

    // Byte-exact echo, read back with our own types too.
    let echoed = echoed_nonce(&response);
    assert_eq!(echoed, nonce);
}

fn echoed_nonce(response: &[u8]) -> Vec<u8> {
    let response = asn1::OcspResponse::from_der(response).unwrap();
    let bytes = response.response_bytes.unwrap();
    let basic = asn1::BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
    let extensions = basic.tbs_response_data.response_extensions.unwrap();
    assert_eq!(extensions.len(), 1);
    assert_eq!(extensions[0].extn_id, asn1::ID_PKIX_OCSP_NONCE);
    extensions[0].extn_value.as_bytes().to_vec()
}

/// A request built with our own types, to reach cases openssl does not produce.
fn hand_request(hash: ObjectIdentifier, ids: usize, nonce: Option<&[u8]>) -> Vec<u8> {
    let len = if hash == ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1") {
        32
    } else {
        20
    };
    let cert_id = asn1::CertId {
        hash_algorithm: AlgorithmIdentifierOwned {
            oid: hash,
            parameters: Some(Null.into()),
        },
        issuer_name_hash: OctetString::new(vec![1u8; len]).unwrap(),
        issuer_key_hash: OctetString::new(vec![2u8; len]).unwrap(),
        serial_number: Uint::new(&[5]).unwrap(),
    };
    asn1::OcspRequest {
        tbs_request: asn1::TbsRequest {
            version: asn1::Version::V1,
            requestor_name: None,
            request_list: vec![
                asn1::Request {
                    req_cert: cert_id,
                    single_request_extensions: None,
                };
                ids
            ],
            request_extensions: nonce.map(|value| {
                vec![x509_cert::ext::Extension {
                    extn_id: asn1::ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(value).unwrap(),
                }]
            }),
        },
        optional_signature: None,
    }
    .to_der()
    .unwrap()
}

const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");

#[test]
fn bare_nonce_is_accepted_and_echoed_byte_exact() {
    let pki = Pki::new();
    let bare = [0x5Au8; 12];
    let request = parse_request(&hand_request(SHA1, 1, Some(&bare))).unwrap();
    assert_eq!(request.nonce.as_deref(), Some(&bare[..]));
    let response = sign_response(
        &pki.responder.signer,
        &pki.responder.cert,
        &[entry(request.certs[0].clone(), Status::Unknown)],
        request.nonce.as_deref(),
        now(),
    )
    .unwrap();
    assert_eq!(echoed_nonce(&response), bare);
}

/// Whether a parse error is the expected one.
type ErrorCheck = fn(&OcspError) -> bool;

#[test]
fn bad_requests_are_malformed_and_the_error_response_parses() {
    let pki = Pki::new();
    let good = openssl_request(&pki, &[&pki.leaf_a.pem], false, true, "req.der");
    let mut trailing = good.clone();
    trailing.push(0);
    let too_long_nonce = OctetString::new([7u8; 33]).unwrap().to_der().unwrap();
    let cases: Vec<(&str, Vec<u8>, ErrorCheck)> = vec![
        ("garbage", b"GET / HTTP/1.1".to_vec(), |e| {
            matches!(e, OcspError::MalformedRequest(_))
        }),
        ("empty", Vec::new(), |e| {
            matches!(e, OcspError::MalformedRequest(_))
        }),
        ("truncated", good[..good.len() - 5].to_vec(), |e| {
            matches!(e, OcspError::MalformedRequest(_))
        }),
        ("trailing", trailing, |e| {
            matches!(e, OcspError::TrailingData { count: 1 })
        }),
        ("oversized", vec![0x30; MAX_REQUEST_BYTES + 1], |e| {
            matches!(e, OcspError::RequestTooLarge { .. })
        }),
        ("empty requestList", hand_request(SHA1, 0, None), |e| {
            matches!(e, OcspError::EmptyRequestList)
        }),
        (
            "SHA-384 CertID",
            hand_request(
                ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2"),
                1,
                None,
            ),
            |e| matches!(e, OcspError::UnsupportedHashAlgorithm { .. }),
        ),
        (
            "33-octet nonce",
            hand_request(SHA1, 1, Some(&too_long_nonce)),
            |e| matches!(e, OcspError::NonceLength { len: 33 }),
        ),
        (
            "empty nonce",
            hand_request(SHA1, 1, Some(&[0x04, 0x00])),
            |e| matches!(e, OcspError::NonceLength { len: 0 }),
        ),
    ];
    for (what, der, expected) in cases {
        let error = parse_request(&der).unwrap_err();
        assert!(expected(&error), "{what}: unexpected error {error:?}");
        assert_eq!(
            error.response_status(),
            ErrorStatus::MalformedRequest,
            "{what}"
        );
    }

    for (status, word) in [
        (ErrorStatus::MalformedRequest, "malformedrequest"),
        (ErrorStatus::InternalError, "internalerror"),
        (ErrorStatus::TryLater, "trylater"),
        (ErrorStatus::Unauthorized, "unauthorized"),
    ] {
        let file = pki.write("err.der", &error_response(status));
        let result = judge(
            "openssl",
            [
                "ocsp",
                "-respin",
                &file.display().to_string(),
                "-resp_text",
                "-noverify",
            ],
        );
        assert!(
            result.text().contains(word),
            "expected `{word}`:\n{}",
            result.text()
        );
    }
}

#[test]
fn get_path_decodes_an_openssl_request() {
    let pki = Pki::new();
    // Try several nonces until the base64 holds '+' and '/', so both escapes are exercised.
    for attempt in 0..64 {
        let der = openssl_request(&pki, &[&pki.leaf_a.pem], false, true, "req.der");
        let base64 = judge(
            "openssl",
            [
                "base64",
                "-A",
                "-in",
                &pki.path("req.der").display().to_string(),
            ],
        );
        let base64 = base64.stdout.trim().to_owned();
        let escaped = base64
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3D");
        assert_eq!(parse_get_path(&escaped).unwrap(), der);
        assert_eq!(parse_get_path(&base64).unwrap(), der);
        if base64.contains('+') && base64.contains('/') {
            return;
        }
        assert!(attempt < 63, "no request with both '+' and '/' in 64 tries");
    }
}

#[test]
fn a_signer_that_is_not_the_responder_is_refused() {
    let pki = Pki::new();
    let issuer = IssuerHashes::new(&pki.issuing.cert).unwrap();
    let error = sign_response(
        &pki.issuing.signer,
        &pki.responder.cert,
        &[entry(
            issuer.cert_id(CertIdHash::Sha1, CertificateSerial::from_be_bytes(&[5])),
            Status::Good,
        )],
        None,
        now(),
    )
    .unwrap_err();
    assert!(
        matches!(error, OcspError::ResponderKeyMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(error.response_status(), ErrorStatus::InternalError);
}
