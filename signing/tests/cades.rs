//! CAdES baseline B, T and LT through the two-step API, with the signer's key on a
//! SoftHSM2 "card" (class smartcard, PIN for every signature). Judged by openssl:
//! `cms -verify` trusting only our root, `cms -cmsout -print` for the attributes,
//! `ts -verify` for the signature time-stamp, `ocsp -respin` for the embedded OCSP
//! response. Bad input gets its own 4xx and leaves nothing half-written. On SQLite
//! and PostgreSQL.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use base64ct::{Base64, Encoding};
use common::{Answer, Card, Keys, Tsa, openssl, os_silent};
use der::{Decode, Encode};
use eid_signing::cms::{
    ID_AA_SIGNATURE_TIME_STAMP_TOKEN, ID_RI_OCSP_RESPONSE, RevocationInfoChoice, SignedData,
};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::Row;
use x509_cert::der::{EncodePem, pem::LineEnding};

async fn post(tsa: &Tsa, path: &str, token: Option<&str>, accept: &str, body: Vec<u8>) -> Answer {
    tsa.api(path, token, accept, body).await
}

async fn prepare(tsa: &Tsa, body: Value) -> Answer {
    post(
        tsa,
        "/api/v1/signatures/prepare",
        Some(&tsa.api_token),
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

async fn finalize(tsa: &Tsa, id: &str, signature: &[u8], accept: &str) -> Answer {
    post(
        tsa,
        &format!("/api/v1/signatures/{id}/finalize"),
        Some(&tsa.api_token),
        accept,
        json!({ "signature": Base64::encode_string(signature) })
            .to_string()
            .into_bytes(),
    )
    .await
}

/// Prepares a signature over `document` and returns (id, data to be signed).
async fn prepared(tsa: &Tsa, card: &Card, document: &[u8], level: &str) -> (String, Vec<u8>) {
    let answer = prepare(
        tsa,
        json!({
            "certificate": card.certificate_pem,
            "document": Base64::encode_string(document),
            "level": level,
        }),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let json = answer.json();
    let tbs = Base64::decode_vec(json["data_to_be_signed"].as_str().unwrap()).unwrap();
    let p384 = json["signature_algorithm"] == "ecdsa-sha384";
    let expected = if p384 {
        sha2::Sha384::digest(&tbs).to_vec()
    } else {
        assert_eq!(json["signature_algorithm"], "ecdsa-sha256");
        Sha256::digest(&tbs).to_vec()
    };
    assert_eq!(
        Base64::decode_vec(json["data_to_be_signed_digest"].as_str().unwrap()).unwrap(),
        expected
    );
    (json["id"].as_str().unwrap().to_owned(), tbs)
}

fn write(tsa: &Tsa, name: &str, data: &[u8]) -> String {
    let path = tsa.path(name);
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

/// The CA that certifies citizens' signing keys.
fn signing_ca(tsa: &Tsa) -> x509_cert::Certificate {
    tsa.ca
        .hierarchy()
        .get(eid_ca::CaRole::CitizenSigningCa)
        .unwrap()
        .certificate
        .clone()
}

fn signed_data(cades: &[u8]) -> SignedData {
    let info = cms::content_info::ContentInfo::from_der(cades).unwrap();
    info.content.decode_as().unwrap()
}

/// openssl's verdicts on one signature at `level`.
fn judge(tsa: &Tsa, card: &Card, name: &str, cades: &[u8], document: &str, level: &str) {
    let sig = write(tsa, &format!("{name}.p7s"), cades);
    let root = tsa.root.display().to_string();
    let verified = openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &sig,
        "-content",
        document,
        "-CAfile",
        &root,
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(
        verified.success && verified.text.contains("Verification successful"),
        "{name}: {}",
        verified.text
    );
    let printed = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", &sig]);
    assert!(printed.success, "{}", printed.text);
    let text = printed.text;
    for attribute in [
        "id-smime-aa-signingCertificateV2",
        "signingTime",
        "messageDigest",
        "contentType",
    ] {
        assert!(
            text.contains(attribute),
            "{name}: no {attribute} in\n{text}"
        );
    }
    let data = signed_data(cades);
    let signer = data.signer_infos.0.iter().next().unwrap();
    let unsigned = signer.unsigned_attrs.as_ref();
    if level == "B" {
        assert!(unsigned.is_none(), "{name}: B has no unsigned attributes");
        assert!(!text.contains("id-smime-aa-timeStampToken"), "{text}");
        return;
    }
    // T: the signature time-stamp over the signature value, judged by openssl ts.
    assert!(
        text.contains("id-smime-aa-timeStampToken"),
        "{name}: no signature time-stamp in\n{text}"
    );
    let token = unsigned
        .unwrap()
        .iter()
        .find(|a| a.oid == ID_AA_SIGNATURE_TIME_STAMP_TOKEN)
        .unwrap()
        .values
        .iter()
        .next()
        .unwrap()
        .to_der()
        .unwrap();
    let token_file = write(tsa, &format!("{name}.tst"), &token);
    let digest = hex::encode(Sha256::digest(signer.signature.as_bytes()));
    let stamped = openssl(&[
        "ts",
        "-verify",
        "-token_in",
        "-in",
        &token_file,
        "-digest",
        &digest,
        "-CAfile",
        &root,
    ]);
    assert!(
        stamped.text.contains("Verification: OK"),
        "{name}: {}",
        stamped.text
    );
    let other = hex::encode(Sha256::digest(b"another signature value"));
    let wrong = openssl(&[
        "ts",
        "-verify",
        "-token_in",
        "-in",
        &token_file,
        "-digest",
        &other,
        "-CAfile",
        &root,
    ]);
    assert!(!wrong.text.contains("Verification: OK"), "{}", wrong.text);

    let crls = data.crls.as_ref();
    if level == "T" {
        assert!(crls.is_none(), "{name}: T carries no revocation values");
        return;
    }
    // LT: the OCSP response of the signer's certificate in RevocationInfoChoices, and
    // every certificate of both chains.
    assert!(
        text.contains("1.3.6.1.5.5.7.16.2") || text.contains("id-ri-ocsp-response"),
        "{name}: no OCSP revocation info in\n{text}"
    );
    let responses: Vec<Vec<u8>> = crls
        .unwrap()
        .iter()
        .filter_map(|choice| match choice {
            RevocationInfoChoice::Other(other)
                if other.other_rev_info_format == ID_RI_OCSP_RESPONSE =>
            {
                Some(other.other_rev_info.to_der().unwrap())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        responses.len(),
        1,
        "{name}: one OCSP response (the signer's)"
    );
    let response = write(tsa, &format!("{name}.ocsp"), &responses[0]);
    let signer_pem = write(
        tsa,
        &format!("{name}-signer.pem"),
        card.certificate_pem.as_bytes(),
    );
    let issuer = signing_ca(tsa).to_pem(LineEnding::LF).unwrap();
    let issuer = write(tsa, "citizen-sign-ca.pem", issuer.as_bytes());
    // The response answers a request with a nonce, which openssl has not got here:
    // `-no_nonce` leaves that check out, the signature and status are still verified.
    let ocsp = openssl(&[
        "ocsp",
        "-no_nonce",
        "-respin",
        &response,
        "-issuer",
        &issuer,
        "-cert",
        &signer_pem,
        "-CAfile",
        &root,
    ]);
    assert!(
        ocsp.success && ocsp.text.contains("Response verify OK") && ocsp.text.contains(": good"),
        "{name}: {}",
        ocsp.text
    );
    // The CA certificates' status: the root's CRL (the issuing CA and the TSU name
    // it), once, signed by the root.
    let ca_crls: Vec<Vec<u8>> = crls
        .unwrap()
        .iter()
        .filter_map(|choice| match choice {
            RevocationInfoChoice::Crl(crl) => Some(crl.to_der().unwrap()),
            _ => None,
        })
        .collect();
    assert_eq!(ca_crls.len(), 1, "{name}: one CRL (the root's)");
    let crl = write(tsa, &format!("{name}.crl"), &ca_crls[0]);
    let checked = openssl(&[
        "crl", "-inform", "DER", "-in", &crl, "-noout", "-CAfile", &root,
    ]);
    assert!(
        checked.text.contains("verify OK"),
        "{name}: {}",
        checked.text
    );
    let certificates: Vec<String> = data
        .certificates
        .as_ref()
        .unwrap()
        .0
        .iter()
        .map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => {
                c.tbs_certificate().subject().to_string()
            }
            _ => String::new(),
        })
        .collect();
    for expected in [
        "Root CA",
        "Citizen Qualified Signature CA",
        "Time-Stamping Unit",
        "Citizen Signature OCSP Responder",
    ] {
        assert!(
            certificates.iter().any(|c| c.contains(expected)),
            "{name}: no {expected} certificate in {certificates:?}"
        );
    }
}

async fn count(tsa: &Tsa, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(tsa.ctx.db.pool())
        .await
        .unwrap()
        .get::<i64, _>("n")
}

async fn levels_b_t_lt_are_judged_by_openssl(backend: TestBackend) {
    journey(backend, Keys::Soft, eid_hsm::KeySpec::EcP256).await;
}

async fn journey(backend: TestBackend, keys: Keys, spec: eid_hsm::KeySpec) {
    let tsa = Tsa::start(backend, keys, "", os_silent()).await;
    let card = Card::issue_with(&tsa, "3900101123456", spec).await;
    let digest_name = match spec {
        eid_hsm::KeySpec::EcP384 => "SHA-384",
        _ => "SHA-256",
    };
    let document = b"%PDF-1.7 a contract worth signing on a card\n".to_vec();
    let document_path = write(&tsa, "contract.pdf", &document);

    let mut made = Vec::new();
    for level in ["B", "T", "LT"] {
        let (id, tbs) = prepared(&tsa, &card, &document, level).await;
        let signature = card.sign(tbs).await;
        let answer = finalize(&tsa, &id, &signature, "application/json").await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let json = answer.json();
        assert_eq!(json["level"], level);
        let cades = Base64::decode_vec(json["signature"].as_str().unwrap()).unwrap();
        judge(
            &tsa,
            &card,
            &format!("level-{level}"),
            &cades,
            &document_path,
            level,
        );
        made.push(cades);
    }

    // Extended afterwards: the T signature to LT, judged as one made at LT.
    let extend = |body: Value, accept: &'static str| {
        post(
            &tsa,
            "/api/v1/signatures/extend",
            Some(&tsa.api_token),
            accept,
            body.to_string().into_bytes(),
        )
    };
    let answer = extend(
        json!({
            "signature": Base64::encode_string(&made[1]),
            "document": Base64::encode_string(&document),
            "level": "LT",
        }),
        "application/pkcs7-signature",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    judge(
        &tsa,
        &card,
        "extended-t-to-lt",
        &answer.body,
        &document_path,
        "LT",
    );
    let extended = report(&tsa, &answer.body, &document).await;
    assert_eq!(extended["indication"], "TOTAL-PASSED", "{extended}");
    assert_eq!(extended["format"], "CAdES-BASELINE-LT", "{extended}");
    assert_eq!(extended["certificate_status"]["source"], "embedded-ocsp");
    // Not extended: B (no time-stamp), another document, LTA (for PDFs).
    let refused = |cades: &[u8], covered: &[u8], level: &str| {
        json!({
            "signature": Base64::encode_string(cades),
            "document": Base64::encode_string(covered),
            "level": level,
        })
    };
    let answer = extend(refused(&made[0], &document, "LT"), "application/json").await;
    answer.assert_problem(422, "signature-not-extendable");
    assert!(
        answer.text().contains("no signature time-stamp"),
        "{}",
        answer.text()
    );
    let answer = extend(refused(&made[1], b"another", "LT"), "application/json").await;
    answer.assert_problem(422, "signature-not-extendable");
    assert!(
        answer.text().contains("does not validate"),
        "{}",
        answer.text()
    );
    extend(refused(&made[1], &document, "LTA"), "application/json")
        .await
        .assert_problem(400, "bad-request");

    // The digest instead of the document, and the DER answer.
    let answer = prepare(
        &tsa,
        json!({
            "certificate": card.certificate_pem,
            "digest": Base64::encode_string(&match spec {
                eid_hsm::KeySpec::EcP384 => sha2::Sha384::digest(&document).to_vec(),
                _ => Sha256::digest(&document).to_vec(),
            }),
            "digest_algorithm": digest_name,
            "level": "LT",
        }),
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let json = answer.json();
    let id = json["id"].as_str().unwrap().to_owned();
    let tbs = Base64::decode_vec(json["data_to_be_signed"].as_str().unwrap()).unwrap();
    let signature = card.sign(tbs).await;
    let answer = finalize(&tsa, &id, &signature, "application/pkcs7-signature").await;
    assert_eq!(
        (answer.status, answer.kind.as_str()),
        (200, "application/pkcs7-signature")
    );
    judge(&tsa, &card, "by-digest", &answer.body, &document_path, "LT");
    // Not for another document.
    let other = write(&tsa, "other.pdf", b"%PDF-1.7 another contract\n");
    let sig = write(&tsa, "by-digest-again.p7s", &answer.body);
    let wrong = openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &sig,
        "-content",
        &other,
        "-CAfile",
        &tsa.root.display().to_string(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ]);
    assert!(!wrong.success, "{}", wrong.text);

    // Single-use: the same id again is refused and changes nothing.
    let again = finalize(&tsa, &id, &signature, "application/json").await;
    again.assert_problem(409, "signature-already-used");

    // Recorded and audited: each step, with digests only.
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM pending_signature WHERE state = 'completed' AND cades IS NOT NULL").await,
        4
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.prepare'"
        )
        .await,
        4
    );
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.finalize' AND outcome = 'success'").await,
        4
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.extend' \
             AND details LIKE '%\"format\":\"cades\"%'"
        )
        .await,
        1
    );
    // Three signature time-stamps (T, LT, LT by digest), recorded by the TSA.
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM timestamp_token").await,
        3
    );
    eid_core::audit::verify(&tsa.ctx.db, &tsa.checkpoint_key)
        .await
        .unwrap();
}

async fn bad_input_gets_a_specific_problem(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let document = b"a document".to_vec();
    let good = json!({
        "certificate": card.certificate_pem,
        "document": Base64::encode_string(&document),
        "level": "T",
    });

    // Who may call.
    let body = good.to_string().into_bytes();
    post(
        &tsa,
        "/api/v1/signatures/prepare",
        None,
        "application/json",
        body.clone(),
    )
    .await
    .assert_problem(401, "unauthorized");
    post(
        &tsa,
        "/api/v1/signatures/prepare",
        Some("not-a-client-token-0123456789abcdefghij"),
        "application/json",
        body,
    )
    .await
    .assert_problem(401, "unauthorized");

    // Malformed requests.
    post(
        &tsa,
        "/api/v1/signatures/prepare",
        Some(&tsa.api_token),
        "application/json",
        b"{not json".to_vec(),
    )
    .await
    .assert_problem(400, "bad-request");
    let mut level = good.clone();
    level["level"] = json!("LTX");
    let answer = prepare(&tsa, level).await;
    answer.assert_problem(400, "bad-request");
    assert!(
        answer.text().contains("is not B, T, LT or LTA"),
        "{}",
        answer.text()
    );
    // An archive time-stamp is offered in PDFs only.
    let mut level = good.clone();
    level["level"] = json!("LTA");
    let answer = prepare(&tsa, level).await;
    answer.assert_problem(400, "bad-request");
    assert!(
        answer.text().contains("for format pades"),
        "{}",
        answer.text()
    );
    let both = json!({
        "certificate": card.certificate_pem,
        "document": "AAAA",
        "digest": "AAAA",
        "digest_algorithm": "sha256",
    });
    prepare(&tsa, both).await.assert_problem(400, "bad-request");
    let mut base64 = good.clone();
    base64["document"] = json!("***");
    prepare(&tsa, base64)
        .await
        .assert_problem(400, "bad-request");

    // Unsupported algorithms, wrong digest length.
    let digest = |algorithm: &str, len: usize| {
        json!({
            "certificate": card.certificate_pem,
            "digest": Base64::encode_string(&vec![7u8; len]),
            "digest_algorithm": algorithm,
        })
    };
    prepare(&tsa, digest("md5", 16))
        .await
        .assert_problem(400, "unsupported-algorithm");
    prepare(&tsa, digest("sha384", 48))
        .await
        .assert_problem(400, "unsupported-algorithm");
    prepare(&tsa, digest("sha256", 31))
        .await
        .assert_problem(400, "bad-request");

    // Certificates this service does not sign for.
    let mut garbage = good.clone();
    garbage["certificate"] =
        json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    prepare(&tsa, garbage)
        .await
        .assert_problem(422, "bad-certificate");
    let mut tsu = good.clone();
    tsu["certificate"] = json!(std::fs::read_to_string(&tsa.tsu).unwrap());
    prepare(&tsa, tsu)
        .await
        .assert_problem(422, "bad-certificate");

    // Unknown ids, and another client's id.
    finalize(
        &tsa,
        "00112233445566778899aabbccddeeff",
        b"sig",
        "application/json",
    )
    .await
    .assert_problem(404, "unknown-signature");
    finalize(&tsa, "not-a-hex-id", b"sig", "application/json")
        .await
        .assert_problem(404, "unknown-signature");
    let (id, tbs) = prepared(&tsa, &card, &document, "T").await;
    let signature = card.sign(tbs.clone()).await;
    let theirs = post(
        &tsa,
        &format!("/api/v1/signatures/{id}/finalize"),
        Some(&tsa.other_api_token),
        "application/json",
        json!({ "signature": Base64::encode_string(&signature) })
            .to_string()
            .into_bytes(),
    )
    .await;
    theirs.assert_problem(404, "unknown-signature");
    // Still pending after all that: the owner finishes it.
    let answer = finalize(&tsa, &id, &signature, "application/json").await;
    assert_eq!(answer.status, 200, "{}", answer.text());

    // A garbage signature value: refused, and the pending signature is spent.
    let (id, tbs) = prepared(&tsa, &card, &document, "T").await;
    finalize(&tsa, &id, b"garbage", "application/json")
        .await
        .assert_problem(422, "invalid-signature");
    let late = card.sign(tbs).await;
    finalize(&tsa, &id, &late, "application/json")
        .await
        .assert_problem(409, "signature-already-used");
    // Not base64 at all.
    post(
        &tsa,
        &format!("/api/v1/signatures/{id}/finalize"),
        Some(&tsa.api_token),
        "application/json",
        br#"{"signature": "***"}"#.to_vec(),
    )
    .await
    .assert_problem(400, "bad-request");

    // The wrong key (the card's authentication key) and the wrong data.
    let (id, tbs) = prepared(&tsa, &card, &document, "B").await;
    let wrong_key = card
        .signer(eid_hsm::CITIZEN_AUTHENTICATION_LABEL)
        .sign_async(tbs)
        .await
        .unwrap()
        .into_bytes();
    finalize(&tsa, &id, &wrong_key, "application/json")
        .await
        .assert_problem(422, "invalid-signature");
    let (id, _) = prepared(&tsa, &card, &document, "B").await;
    let other_data = card.sign(b"other data".to_vec()).await;
    finalize(&tsa, &id, &other_data, "application/json")
        .await
        .assert_problem(422, "invalid-signature");

    // Expired: the pending signature's deadline has passed.
    let (id, tbs) = prepared(&tsa, &card, &document, "B").await;
    sqlx::query("UPDATE pending_signature SET expires_at = $1 WHERE id = $2")
        .bind(time::OffsetDateTime::now_utc().unix_timestamp() - 1)
        .bind(&id)
        .execute(tsa.ctx.db.pool())
        .await
        .unwrap();
    let signature = card.sign(tbs).await;
    finalize(&tsa, &id, &signature, "application/json")
        .await
        .assert_problem(410, "signature-expired");

    // Suspended, then revoked, between prepare and finalize.
    let (suspended_id, suspended_tbs) = prepared(&tsa, &card, &document, "LT").await;
    let (revoked_id, revoked_tbs) = prepared(&tsa, &card, &document, "LT").await;
    card.change_status(&tsa, eid_ca::StatusChange::Suspend)
        .await;
    let signature = card.sign(suspended_tbs).await;
    finalize(&tsa, &suspended_id, &signature, "application/json")
        .await
        .assert_problem(422, "certificate-suspended");
    card.revoke(&tsa).await;
    let signature = card.sign(revoked_tbs).await;
    finalize(&tsa, &revoked_id, &signature, "application/json")
        .await
        .assert_problem(422, "certificate-revoked");

    // Nothing half-written: one signature finished, the refused ones recorded as such,
    // none of them with a signature; one time-stamp (the finished T).
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM pending_signature WHERE cades IS NOT NULL"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM pending_signature WHERE state = 'refused'"
        )
        .await,
        5
    );
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.finalize' AND outcome = 'denied'").await,
        5
    );
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM timestamp_token").await,
        1
    );
    eid_core::audit::verify(&tsa.ctx.db, &tsa.checkpoint_key)
        .await
        .unwrap();
}

async fn validate(tsa: &Tsa, body: Value, token: Option<&str>) -> Answer {
    post(
        tsa,
        "/api/v1/validations",
        token,
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

/// Signs `document` at `level` on the card and returns the CAdES signature.
async fn signed(tsa: &Tsa, card: &Card, document: &[u8], level: &str) -> Vec<u8> {
    let (id, tbs) = prepared(tsa, card, document, level).await;
    let signature = card.sign(tbs).await;
    let answer = finalize(tsa, &id, &signature, "application/json").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    Base64::decode_vec(answer.json()["signature"].as_str().unwrap()).unwrap()
}

/// The report on one signature over `document`.
async fn report(tsa: &Tsa, cades: &[u8], document: &[u8]) -> Value {
    let answer = validate(
        tsa,
        json!({
            "signature": Base64::encode_string(cades),
            "document": Base64::encode_string(document),
        }),
        Some(&tsa.api_token),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let json = answer.json();
    assert_eq!(json["signatures"].as_array().unwrap().len(), 1, "{json}");
    json["signatures"][0].clone()
}

/// Whether openssl (the independent judge) accepts the detached signature.
fn openssl_accepts(tsa: &Tsa, name: &str, cades: &[u8], document: &[u8]) -> bool {
    let signature = write(tsa, &format!("{name}.p7s"), cades);
    let content = write(tsa, &format!("{name}.txt"), document);
    let root = tsa.root.display().to_string();
    openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &signature,
        "-content",
        &content,
        "-CAfile",
        &root,
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ])
    .text
    .contains("Verification successful")
}

/// EN 319 102-1 reports for the service's own signatures and for broken ones; where
/// openssl can judge (integrity, chain), it agrees.
async fn validation_reports_follow_en_319_102_1(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let document = b"a lease, signed with a card".to_vec();

    let lt = signed(&tsa, &card, &document, "LT").await;
    let passed = report(&tsa, &lt, &document).await;
    assert_eq!(passed["indication"], "TOTAL-PASSED", "{passed}");
    assert_eq!(passed["format"], "CAdES-BASELINE-LT");
    assert_eq!(
        passed["qualification"], "QESig",
        "qualified certificate, key on a QSCD"
    );
    assert_eq!(passed["certificate_status"]["status"], "good");
    assert_eq!(passed["certificate_status"]["source"], "embedded-ocsp");
    assert_eq!(passed["timestamp"]["valid"], true, "{passed}");
    assert_eq!(
        passed["best_signature_time"],
        passed["timestamp"]["gen_time"]
    );
    assert!(
        passed["signer"]["subject"]
            .as_str()
            .unwrap()
            .contains("PNOTT-3900101123456")
    );
    assert!(passed["claimed_signing_time"].is_string());
    assert!(openssl_accepts(&tsa, "lt", &lt, &document));

    // Another document: the digest does not match.
    let other = b"a lease, with a different rent".to_vec();
    let failed = report(&tsa, &lt, &other).await;
    assert_eq!(failed["indication"], "TOTAL-FAILED");
    assert_eq!(failed["sub_indication"], "HASH_FAILURE", "{failed}");
    assert_eq!(failed["qualification"], "n/a");
    assert!(!openssl_accepts(&tsa, "other", &lt, &other));

    // A signature value changed by one bit.
    let mut data = signed_data(&lt);
    let info = data.signer_infos.0.as_slice()[0].clone();
    let mut value = info.signature.as_bytes().to_vec();
    let last = value.len() - 1;
    value[last] ^= 1;
    let mut broken = info.clone();
    broken.signature = der::asn1::OctetString::new(value).unwrap();
    data.signer_infos =
        cms::signed_data::SignerInfos(der::asn1::SetOfVec::try_from(vec![broken]).unwrap());
    let tampered = data.to_content_info_der().unwrap();
    let failed = report(&tsa, &tampered, &document).await;
    assert_eq!(failed["indication"], "TOTAL-FAILED");
    assert_eq!(failed["sub_indication"], "SIG_CRYPTO_FAILURE", "{failed}");
    assert!(!openssl_accepts(&tsa, "tampered", &tampered, &document));

    // Not CMS at all.
    let failed = report(&tsa, b"not a signature", &document).await;
    assert_eq!(failed["sub_indication"], "FORMAT_FAILURE", "{failed}");

    // The digest instead of the document.
    let answer = validate(
        &tsa,
        json!({
            "signature": Base64::encode_string(&lt),
            "digest": Base64::encode_string(&Sha256::digest(&document)),
            "digest_algorithm": "sha256",
        }),
        Some(&tsa.api_token),
    )
    .await;
    assert_eq!(answer.json()["signatures"][0]["indication"], "TOTAL-PASSED");

    // Status at the best-signature-time: a B signature (no time-stamp) of a suspended,
    // then revoked certificate; a T signature time-stamped before the revocation.
    let b = signed(&tsa, &card, &document, "B").await;
    let t = signed(&tsa, &card, &document, "T").await;
    // OCSP gives revocation times in whole seconds: a revocation within the second of
    // the time-stamp cannot be told to come after it (and is judged as before).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    card.change_status(&tsa, eid_ca::StatusChange::Suspend)
        .await;
    let held = report(&tsa, &b, &document).await;
    assert_eq!(held["indication"], "INDETERMINATE");
    assert_eq!(held["sub_indication"], "TRY_LATER", "{held}");
    assert_eq!(held["certificate_status"]["status"], "suspended");
    assert_eq!(held["certificate_status"]["source"], "online-ocsp");
    card.revoke(&tsa).await;
    let revoked = report(&tsa, &b, &document).await;
    assert_eq!(revoked["indication"], "INDETERMINATE");
    assert_eq!(revoked["sub_indication"], "REVOKED_NO_POE", "{revoked}");
    let before = report(&tsa, &t, &document).await;
    assert_eq!(before["indication"], "TOTAL-PASSED", "{before}");
    assert_eq!(before["certificate_status"]["status"], "revoked");
    // Extended now, the T signature keeps the responder's answer that the revocation
    // came after its time-stamp: the signature still stands on the embedded answer.
    let answer = post(
        &tsa,
        "/api/v1/signatures/extend",
        Some(&tsa.api_token),
        "application/pkcs7-signature",
        json!({
            "signature": Base64::encode_string(&t),
            "document": Base64::encode_string(&document),
        })
        .to_string()
        .into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert!(openssl_accepts(
        &tsa,
        "extended-revoked",
        &answer.body,
        &document
    ));
    let kept = report(&tsa, &answer.body, &document).await;
    assert_eq!(kept["indication"], "TOTAL-PASSED", "{kept}");
    assert_eq!(kept["format"], "CAdES-BASELINE-LT", "{kept}");
    assert_eq!(kept["certificate_status"]["status"], "revoked", "{kept}");
    assert_eq!(
        kept["certificate_status"]["source"], "embedded-ocsp",
        "{kept}"
    );
    // The LT signature proves its status at signing with its own OCSP response.
    let archived = report(&tsa, &lt, &document).await;
    assert_eq!(archived["indication"], "TOTAL-PASSED", "{archived}");
    assert_eq!(archived["certificate_status"]["status"], "good");

    // Requests that name nothing to validate, or come from nobody.
    let answer = validate(
        &tsa,
        json!({ "signature": Base64::encode_string(&lt) }),
        Some(&tsa.api_token),
    )
    .await;
    assert_eq!(answer.status, 400);
    let answer = validate(
        &tsa,
        json!({ "signature": Base64::encode_string(&lt), "document": "" }),
        None,
    )
    .await;
    assert_eq!(answer.status, 401);
    let answer = validate(
        &tsa,
        json!({ "signature": "***", "document": "" }),
        Some(&tsa.api_token),
    )
    .await;
    assert_eq!(answer.status, 400);
}

/// EN 319 102-1 revocation freshness: a status issued before the time-stamp proves
/// nothing about the signer then. A T signature given the OCSP response of an earlier
/// LT signature (issued before this one's time-stamp) is judged from our responder,
/// asked now, not from that response; with the responder down it is INDETERMINATE /
/// TRY_LATER, naming the stale response.
async fn a_status_older_than_the_time_stamp_is_not_taken(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let document = b"a deed".to_vec();
    let earlier = signed_data(&signed(&tsa, &card, &document, "LT").await);
    let old_status = earlier
        .crls
        .iter()
        .flat_map(|set| set.iter())
        .find(|choice| {
            matches!(choice, RevocationInfoChoice::Other(other)
                if other.other_rev_info_format == ID_RI_OCSP_RESPONSE)
        })
        .unwrap()
        .clone();
    // Statuses give whole seconds: the next time-stamp must be in a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = signed(&tsa, &card, &document, "T").await;
    let mut grafted = signed_data(&later);
    grafted.crls = Some(der::asn1::SetOfVec::try_from(vec![old_status]).unwrap());
    let grafted = grafted.to_content_info_der().unwrap();

    let judged = report(&tsa, &grafted, &document).await;
    assert_eq!(judged["indication"], "TOTAL-PASSED", "{judged}");
    assert_eq!(
        judged["certificate_status"]["source"], "online-ocsp",
        "{judged}"
    );

    tsa.stop_ca().await;
    let judged = report(&tsa, &grafted, &document).await;
    assert_eq!(judged["indication"], "INDETERMINATE", "{judged}");
    assert_eq!(judged["sub_indication"], "TRY_LATER", "{judged}");
    assert!(
        judged.to_string().contains("before the time-stamp"),
        "{judged}"
    );
}

/// A revocation made by another process (another CA handle on the same database, as
/// `eid ca revoke` beside a running server) reaches the responder's answers signed on
/// demand at its first look at the revocation epoch, a "good" it cached before that
/// look included.
async fn another_process_s_revocation_reaches_the_responder(backend: TestBackend) {
    use eid_ca::ocsp::client::{self, CheckedStatus};
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let issuer = signing_ca(&tsa);
    let serial = eid_ca::CertificateSerial::from_certificate(
        card.certificate.tbs_certificate().serial_number(),
    );
    let id = client::cert_id(&issuer, serial.clone()).unwrap();
    let asked = |responder: eid_ca::CertificateAuthority| {
        let (issuer, id) = (issuer.clone(), id.clone());
        async move {
            let request = client::build_fresh_request(&id).unwrap();
            let answer = responder.respond_ocsp(&request).await;
            client::check_response(&answer.body, &issuer, &id, time::OffsetDateTime::now_utc())
                .unwrap()
        }
    };
    assert_eq!(asked(tsa.ca.clone()).await, CheckedStatus::Good);
    let elsewhere = eid_ca::CertificateAuthority::open(&tsa.ctx).await.unwrap();
    elsewhere
        .change_status(
            &serial,
            eid_ca::StatusChange::Revoke(eid_ca::reason::ReasonCode::KeyCompromise),
            "operator:test",
        )
        .await
        .unwrap();
    tsa.ca.sync_revocations().await.unwrap();
    assert!(
        matches!(asked(tsa.ca.clone()).await, CheckedStatus::Revoked { .. }),
        "the running responder still answers from its cache"
    );
}

on_both_backends!(
    another_process_s_revocation_reaches_the_responder,
    levels_b_t_lt_are_judged_by_openssl,
    bad_input_gets_a_specific_problem,
    validation_reports_follow_en_319_102_1,
    a_status_older_than_the_time_stamp_is_not_taken,
);

/// The instance's own keys (CA, OCSP responder, TSU) on a SoftHSM2 token too, and a
/// P-384 card (ECDSA with SHA-384 throughout, as `eid keys generate-citizen` makes).
mod softhsm {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_p384_card() {
        journey(TestBackend::Sqlite, Keys::SoftHsm, eid_hsm::KeySpec::EcP384).await;
    }
}
