//! PAdES baseline B-B, B-T, B-LT and B-LTA through the two-step API, with the signer's
//! key on a SoftHSM2 "card" (class smartcard, PIN for every signature), on PDFs made in
//! code (classic xref table or xref stream, with and without an AcroForm).
//!
//! Judged by pyHanko (`pyhanko sign validate` trusting only our root: intact, valid,
//! trusted, the signature time-stamp; for B-LT and B-LTA pyHanko's AdES validation with
//! our OCSP responder stopped, so that only the DSS can vouch for the certificate, and
//! its long-term validation, which only B-LTA's document time-stamp passes) and by
//! openssl (`cms -verify` of the CMS over the ByteRange content; `ts -verify` of the
//! document time-stamp over the bytes it covers). A PDF changed after signing is
//! caught by both. Bad PDFs get their own 4xx and leave nothing
//! behind. On SQLite and PostgreSQL.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use std::path::{Path, PathBuf};

use base64ct::{Base64, Encoding};
use common::{
    Answer, Card, Keys, Tsa, openssl, os_silent,
    pdf::{Form, Sample, sample},
};
use der::{Decode, Encode};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::{Value, json};
use sqlx::Row;

async fn post(tsa: &Tsa, path: &str, accept: &str, body: Vec<u8>) -> Answer {
    tsa.api(path, Some(&tsa.api_token), accept, body).await
}

/// `POST /api/v1/signatures/extend` of `pdf` to `level`, the PDF asked for.
async fn extend(tsa: &Tsa, pdf: &[u8], level: &str) -> Answer {
    post(
        tsa,
        "/api/v1/signatures/extend",
        "application/pdf",
        json!({ "document": Base64::encode_string(pdf), "level": level })
            .to_string()
            .into_bytes(),
    )
    .await
}

/// Announces a 33 MiB body (over the API's limit) and sends none of it: the service
/// answers from the headers at once. The status and the whole answer. Sending the body
/// as well raced the server's close of the connection: the client could meet a broken
/// pipe while still writing, before it read the answer.
async fn announce_too_large(tsa: &Tsa, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = tsa.url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        tsa.api_token,
        33 * 1024 * 1024
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the service answers without the body")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let status = answer.split(' ').nth(1).unwrap_or_default().to_owned();
    (status, answer)
}

async fn prepare(tsa: &Tsa, body: Value) -> Answer {
    post(
        tsa,
        "/api/v1/signatures/prepare",
        "application/json",
        body.to_string().into_bytes(),
    )
    .await
}

fn pades_request(card: &Card, pdf: &[u8], level: &str) -> Value {
    json!({
        "certificate": card.certificate_pem,
        "format": "pades",
        "document": Base64::encode_string(pdf),
        "level": level,
    })
}

/// Prepares, signs on the card, finalizes; returns the signed PDF.
async fn sign(tsa: &Tsa, card: &Card, pdf: &[u8], level: &str, accept_pdf: bool) -> Vec<u8> {
    sign_request(tsa, card, pades_request(card, pdf, level), accept_pdf).await
}

/// Prepares `request`, signs on the card, finalizes; returns the signed PDF.
async fn sign_request(tsa: &Tsa, card: &Card, request: Value, accept_pdf: bool) -> Vec<u8> {
    let level = request["level"].as_str().unwrap().to_owned();
    let answer = prepare(tsa, request).await;
    assert_eq!(answer.status, 201, "{}", answer.text());
    let prepared = answer.json();
    assert_eq!(prepared["format"], "pades");
    let tbs = Base64::decode_vec(prepared["data_to_be_signed"].as_str().unwrap()).unwrap();
    let signature = card.sign(tbs).await;
    let id = prepared["id"].as_str().unwrap();
    let accept = if accept_pdf {
        "application/pdf"
    } else {
        "application/json"
    };
    let answer = post(
        tsa,
        &format!("/api/v1/signatures/{id}/finalize"),
        accept,
        json!({ "signature": Base64::encode_string(&signature) })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    if accept_pdf {
        assert_eq!(answer.kind, "application/pdf");
        answer.body
    } else {
        let json = answer.json();
        assert_eq!(json["level"], level.trim_start_matches("B-"));
        Base64::decode_vec(json["document"].as_str().unwrap()).unwrap()
    }
}

/// The judges' environment that deploy/test.sh installs (`target/judges/bin` in the
/// workspace), else the directory on PATH that has pyHanko. Missing, the test fails:
/// a skipped judgement would pass silently.
fn judges_bin() -> PathBuf {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/judges/bin");
    if installed.join("pyhanko").is_file() {
        return installed;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).find(|dir| dir.join("pyhanko").is_file()))
        .unwrap_or_else(|| {
            panic!(
                "pyHanko is not installed ({} has none and none is on PATH): run \
                 deploy/test.sh, which installs the judges",
                installed.display()
            )
        })
}

/// Runs `program` of the judges' environment.
fn judge(program: &str, args: &[&str]) -> common::Judged {
    let output = std::process::Command::new(judges_bin().join(program))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} could not be run ({e}); deploy/test.sh installs it"));
    common::Judged {
        success: output.status.success(),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

fn write(tsa: &Tsa, name: &str, data: &[u8]) -> String {
    let path = tsa.path(name);
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

/// The last signature of `pdf`: its CMS (DER, padding cut off) and the content its
/// ByteRange covers.
fn signature_of(pdf: &[u8]) -> (Vec<u8>, Vec<u8>) {
    last_field_value(pdf, b"Sig")
}

/// The last signature field value of `pdf` whose /Type is `kind` (`Sig`,
/// `DocTimeStamp`): its /Contents (DER, padding cut off) and what its ByteRange covers.
fn last_field_value(pdf: &[u8], kind: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let document = lopdf::Document::load_mem(pdf).unwrap();
    let catalog = document.catalog().unwrap();
    let form = document
        .dereference(catalog.get(b"AcroForm").unwrap())
        .unwrap()
        .1
        .as_dict()
        .unwrap();
    let value = form
        .get(b"Fields")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| document.dereference(f).unwrap().1.as_dict().ok())
        .filter(|f| f.get(b"FT").and_then(lopdf::Object::as_name).ok() == Some(b"Sig"))
        .filter_map(|f| f.get(b"V").ok())
        .map(|v| document.dereference(v).unwrap().1.as_dict().unwrap())
        .rfind(|v| v.get(b"Type").and_then(lopdf::Object::as_name).ok() == Some(kind))
        .unwrap();
    let contents = value.get(b"Contents").unwrap().as_str().unwrap();
    let mut reader = der::SliceReader::new(contents).unwrap();
    let info = cms::content_info::ContentInfo::decode(&mut reader).unwrap();
    let range: Vec<usize> = value
        .get(b"ByteRange")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|n| usize::try_from(n.as_i64().unwrap()).unwrap())
        .collect();
    let mut content = pdf[range[0]..range[0] + range[1]].to_vec();
    content.extend_from_slice(&pdf[range[2]..range[2] + range[3]]);
    (info.to_der().unwrap(), content)
}

/// openssl's verdict on the CMS over its ByteRange, trusting only our root; and the
/// attributes PAdES wants (no signing-time).
fn openssl_judges(tsa: &Tsa, name: &str, pdf: &[u8]) -> common::Judged {
    let (cms, content) = signature_of(pdf);
    let sig = write(tsa, &format!("{name}.p7s"), &cms);
    let content = write(tsa, &format!("{name}.content"), &content);
    let printed = openssl(&["cms", "-cmsout", "-print", "-inform", "DER", "-in", &sig]);
    assert!(printed.success, "{}", printed.text);
    for attribute in [
        "id-smime-aa-signingCertificateV2",
        "messageDigest",
        "contentType",
    ] {
        assert!(
            printed.text.contains(attribute),
            "{name}: no {attribute} in\n{}",
            printed.text
        );
    }
    assert!(
        !printed.text.contains("signingTime"),
        "{name}: PAdES has no signing-time attribute:\n{}",
        printed.text
    );
    openssl(&[
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-in",
        &sig,
        "-content",
        &content,
        "-CAfile",
        &tsa.root.display().to_string(),
        "-purpose",
        "any",
        "-out",
        "/dev/null",
    ])
}

/// `openssl ts -verify` of the last document time-stamp of `pdf` over the bytes it
/// covers, trusting only our root.
fn openssl_verifies_document_time_stamp(tsa: &Tsa, name: &str, pdf: &[u8]) -> common::Judged {
    let (token, content) = last_field_value(pdf, b"DocTimeStamp");
    let token = write(tsa, &format!("{name}.doc.tst"), &token);
    let content = write(tsa, &format!("{name}.doc.content"), &content);
    openssl(&[
        "ts",
        "-verify",
        "-data",
        &content,
        "-token_in",
        "-in",
        &token,
        "-CAfile",
        &tsa.root.display().to_string(),
    ])
}

/// `pyhanko sign validate`, trusting only our root (revocation checked online at our
/// responder, as a relying party would).
fn pyhanko_validates(tsa: &Tsa, path: &str) -> common::Judged {
    judge(
        "pyhanko",
        &[
            "sign",
            "validate",
            "--pretty-print",
            "--trust",
            &tsa.root.display().to_string(),
            "--trust-replace",
            path,
        ],
    )
}

/// `pyhanko sign validate` of `path` succeeds and judges `signatures` signatures VALID.
fn pyhanko_finds_valid(tsa: &Tsa, path: &str, signatures: usize) -> common::Judged {
    let judged = pyhanko_validates(tsa, path);
    assert!(judged.success, "{path}: {}", judged.text);
    assert_eq!(
        judged
            .text
            .matches("The signature is judged VALID.")
            .count(),
        signatures,
        "{}",
        judged.text
    );
    judged
}

/// pyHanko's validation with only the DSS for revocation data (see the script).
fn pyhanko_ltv(tsa: &Tsa, path: &str) -> common::Judged {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/judges/pyhanko/ltv.py");
    judge(
        "python",
        &[
            &script.display().to_string(),
            &tsa.root.display().to_string(),
            path,
        ],
    )
}

/// Asserts every line of `expected` is in pyHanko's `judged` output.
fn assert_said(name: &str, judged: &common::Judged, expected: &[&str]) {
    for line in expected {
        assert!(
            judged.text.contains(line),
            "{name}: pyHanko did not say {line:?}:\n{}",
            judged.text
        );
    }
}

/// Our own EN 319 102-1 report on a signed PDF.
async fn our_report(tsa: &Tsa, pdf: &[u8]) -> Value {
    let answer = post(
        tsa,
        "/api/v1/validations",
        "application/json",
        json!({ "document": Base64::encode_string(pdf) })
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()
}

async fn count(tsa: &Tsa, sql: &'static str) -> i64 {
    sqlx::query(sql)
        .fetch_one(tsa.ctx.db.pool())
        .await
        .unwrap()
        .get::<i64, _>("n")
}

async fn levels_are_judged_by_pyhanko(backend: TestBackend) {
    journey(backend, Keys::Soft, eid_hsm::KeySpec::EcP256).await;
}

async fn journey(backend: TestBackend, keys: Keys, spec: eid_hsm::KeySpec) {
    let tsa = Tsa::start(backend, keys, "", os_silent()).await;
    let card = Card::issue_with(&tsa, "3900101123456", spec).await;
    let digest = match spec {
        eid_hsm::KeySpec::EcP384 => "'sha384'",
        _ => "'sha256'",
    };
    let plain = sample(&Sample::default());
    let with_form = sample(&Sample {
        form: Form::Indirect,
        ..Sample::default()
    });
    let streamed = sample(&Sample {
        form: Form::Inline,
        xref_stream: true,
        pages: 2,
        ..Sample::default()
    });
    let cases: [(&str, &[u8], &str); 7] = [
        ("plain-b", &plain, "B"),
        ("plain-t", &plain, "B-T"),
        ("plain-lt", &plain, "LT"),
        ("form-t", &with_form, "T"),
        ("stream-b", &streamed, "B-B"),
        ("stream-lt", &streamed, "B-LT"),
        ("form-lta", &with_form, "B-LTA"),
    ];
    let mut signed = Vec::new();
    for (index, (name, pdf, level)) in cases.into_iter().enumerate() {
        // Both answers: the PDF itself, and JSON with the PDF in base64.
        let output = sign(&tsa, &card, pdf, level, index % 2 == 0).await;
        assert!(output.starts_with(pdf), "{name}: the original bytes stay");
        let path = write(&tsa, &format!("{name}.pdf"), &output);
        signed.push((name, level.trim_start_matches("B-"), output, path));
    }
    // Extended afterwards: B-T to B-LT, B-LT to B-LTA, and a B-LTA file's archive
    // renewed (a second document time-stamp over the first and the DSS added for it).
    for (name, from, level) in [
        ("ext-t-to-lt", 1, "LT"),
        ("ext-lt-to-lta", 2, "LTA"),
        ("ext-lta-renewed", 6, "LTA"),
    ] {
        let original = signed[from].2.clone();
        let answer = extend(&tsa, &original, level).await;
        assert_eq!(answer.status, 200, "{name}: {}", answer.text());
        assert!(answer.body.starts_with(&original), "{name}: appended only");
        let path = write(&tsa, &format!("{name}.pdf"), &answer.body);
        signed.push((name, level, answer.body, path));
    }
    // Not extended: B-B (no time-stamp), a level below LT, a changed PDF.
    let answer = extend(&tsa, &signed[0].2, "LTA").await;
    answer.assert_problem(422, "signature-not-extendable");
    assert!(
        answer.text().contains("no signature time-stamp"),
        "{}",
        answer.text()
    );
    extend(&tsa, &signed[1].2, "T")
        .await
        .assert_problem(400, "bad-request");
    let mut changed = signed[1].2.clone();
    let at = changed
        .windows(16)
        .position(|w| w == b"Contract, page 1")
        .unwrap();
    changed[at] = b'K';
    let answer = extend(&tsa, &changed, "LT").await;
    answer.assert_problem(422, "signature-not-extendable");
    assert!(
        answer.text().contains("does not validate"),
        "{}",
        answer.text()
    );

    for (name, level, output, path) in &signed {
        let verdict = openssl_judges(&tsa, name, output);
        assert!(
            verdict.success && verdict.text.contains("Verification successful"),
            "{name}: openssl cms -verify: {}",
            verdict.text
        );
        let judged = pyhanko_validates(&tsa, path);
        assert!(judged.success, "{name}: pyHanko: {}", judged.text);
        assert_said(
            name,
            &judged,
            &[
                "The signer's certificate is trusted.",
                "The signature is cryptographically sound.",
                &format!("The digest algorithm used was {digest}."),
                "Signing time as reported by signer:",
                "The signature is judged VALID.",
            ],
        );
        match *level {
            "B" => {
                assert!(!judged.text.contains("timestamp token"), "{}", judged.text);
                assert_said(name, &judged, &["The signature covers the entire file."]);
            }
            _ => assert_said(
                name,
                &judged,
                &[
                    "Signature timestamp token:",
                    "The timestamp token is cryptographically sound.",
                    "The TSA certificate is trusted.",
                ],
            ),
        }
        if matches!(*level, "LT" | "LTA") {
            // The DSS revision after the signature (and the document time-stamp after
            // that) are signature maintenance only.
            assert_said(
                name,
                &judged,
                &["All modifications relate to signature maintenance"],
            );
        }
        if *level == "LTA" {
            let verdict = openssl_verifies_document_time_stamp(&tsa, name, output);
            assert!(
                verdict.success && verdict.text.contains("Verification: OK"),
                "{name}: openssl ts -verify of the document time-stamp: {}",
                verdict.text
            );
        }
    }

    // A second signer on the LT-signed PDF (its DSS kept and extended): both valid.
    let (_, _, first, _) = &signed[2];
    let twice = sign(&tsa, &card, first, "LT", true).await;
    assert!(twice.starts_with(first));
    let twice_path = write(&tsa, "twice.pdf", &twice);
    let judged = pyhanko_finds_valid(&tsa, &twice_path, 2);
    assert_said("twice", &judged, &["Field 2: Signature2"]);
    // Both signatures extended at once: one DSS revision with a /VRI entry each, then
    // the document time-stamp.
    let answer = extend(&tsa, &twice, "LTA").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let both_path = write(&tsa, "ext-twice-lta.pdf", &answer.body);
    pyhanko_finds_valid(&tsa, &both_path, 2);
    signed.push(("twice", "LT", twice, twice_path));
    signed.push(("ext-twice-lta", "LTA", answer.body, both_path));

    // Changed after signing: one letter of page 2's text.
    let (_, _, original, _) = &signed[1];
    let at = original
        .windows(16)
        .position(|w| w == b"Contract, page 2")
        .unwrap();
    let mut tampered = original.clone();
    tampered[at + 7] = b'b';
    let tampered_path = write(&tsa, "tampered.pdf", &tampered);
    let judged = pyhanko_validates(&tsa, &tampered_path);
    assert!(!judged.success, "a changed PDF must fail: {}", judged.text);
    assert_said(
        "tampered",
        &judged,
        &["The signature is cryptographically unsound."],
    );
    let verdict = openssl_judges(&tsa, "tampered", &tampered);
    assert!(!verdict.success, "openssl: {}", verdict.text);

    // Our own validation reports agree with pyHanko on every one of them.
    for (name, level, output, _) in &signed {
        let report = our_report(&tsa, output).await;
        let signatures = report["signatures"].as_array().unwrap();
        assert_eq!(
            signatures.len(),
            if name.contains("twice") { 2 } else { 1 },
            "{report}"
        );
        for (index, entry) in signatures.iter().enumerate() {
            assert_eq!(entry["indication"], "TOTAL-PASSED", "{name}: {report}");
            assert_eq!(entry["qualification"], "QESig", "{name}: {report}");
            let last = index + 1 == signatures.len();
            let expected_level = if *name == "twice" { "LT" } else { level };
            assert_eq!(
                entry["format"],
                format!("PAdES-BASELINE-{expected_level}"),
                "{name}: {report}"
            );
            // Only a signature with nothing after it covers the whole file; LT adds
            // its DSS revision after (and LTA a document time-stamp after that).
            assert_eq!(
                entry["pdf"]["covers_whole_file"],
                !matches!(*level, "LT" | "LTA") && last,
                "{name}: {report}"
            );
            if *level != "B" {
                assert!(entry["timestamp"]["valid"] == true, "{name}: {report}");
            }
        }
        let stamps = report["document_time_stamps"].as_array();
        if *level == "LTA" {
            let stamps = stamps.unwrap_or_else(|| panic!("{name}: {report}"));
            let expected = if *name == "ext-lta-renewed" { 2 } else { 1 };
            assert_eq!(stamps.len(), expected, "{name}: {report}");
            assert!(
                stamps.iter().all(|s| s["valid"] == true),
                "{name}: {report}"
            );
            let last = stamps.last().unwrap();
            assert_eq!(last["covers_whole_file"], true, "{name}: {report}");
        } else {
            assert!(stamps.is_none(), "{name}: {report}");
        }
    }
    // The LTA file with its DSS revision changed after the document time-stamp: the
    // signature stands (it covers neither), the time-stamp fails, the level drops to LT.
    let (_, _, archived, _) = &signed[6];
    let stamp_at = archived
        .windows(13)
        .rposition(|w| w == b"/DocTimeStamp")
        .unwrap();
    let dss_eof = archived[..stamp_at]
        .windows(5)
        .rposition(|w| w == b"%%EOF")
        .unwrap();
    let mut changed = archived.clone();
    changed[dss_eof + 4] = b'G';
    let report = our_report(&tsa, &changed).await;
    assert_eq!(
        report["signatures"][0]["indication"], "TOTAL-PASSED",
        "{report}"
    );
    assert_eq!(
        report["signatures"][0]["format"], "PAdES-BASELINE-LT",
        "{report}"
    );
    let stamp = &report["document_time_stamps"][0];
    assert_eq!(stamp["valid"], false, "{report}");
    assert!(
        stamp["problem"]
            .as_str()
            .unwrap()
            .contains("message imprint"),
        "{report}"
    );
    let report = our_report(&tsa, &tampered).await;
    assert_eq!(
        report["signatures"][0]["indication"], "TOTAL-FAILED",
        "{report}"
    );
    assert_eq!(
        report["signatures"][0]["sub_indication"], "HASH_FAILURE",
        "{report}"
    );
    let answer = post(
        &tsa,
        "/api/v1/validations",
        "application/json",
        json!({ "document": Base64::encode_string(&plain) })
            .to_string()
            .into_bytes(),
    )
    .await;
    answer.assert_problem(400, "bad-request");
    assert!(answer.text().contains("no signature"), "{}", answer.text());
    let answer = post(
        &tsa,
        "/api/v1/validations",
        "application/json",
        json!({ "document": Base64::encode_string(b"not a pdf") })
            .to_string()
            .into_bytes(),
    )
    .await;
    answer.assert_problem(400, "not-a-pdf");

    // B-LT and B-LTA: with our OCSP responder gone, only the DSS can vouch for the
    // signer's certificate; B-T, with no DSS, must then fail the same judge.
    tsa.stop_ca().await;
    for (name, level, output, path) in &signed {
        // Our report too: LT and LTA from their DSS, T with nobody to ask.
        let report = our_report(&tsa, output).await;
        for entry in report["signatures"].as_array().unwrap() {
            match *level {
                "LT" | "LTA" => {
                    assert_eq!(entry["indication"], "TOTAL-PASSED", "{name}: {report}");
                    assert_eq!(
                        entry["certificate_status"]["source"], "dss-ocsp",
                        "{name}: {report}"
                    );
                }
                "T" => {
                    assert_eq!(entry["indication"], "INDETERMINATE", "{name}: {report}");
                    assert_eq!(entry["sub_indication"], "TRY_LATER", "{name}: {report}");
                }
                _ => {}
            }
        }
        let judged = pyhanko_ltv(&tsa, path);
        if matches!(*level, "LT" | "LTA") {
            assert!(judged.success, "{name}: LTV: {}", judged.text);
            // Signer, CA, root, TSU, responder and the root's CRL, each stored once (the
            // second signer shares them). OCSP responses are answered when asked, after
            // the time-stamp: one for each signing at LT or above and one for each
            // signature an extension covers.
            let ocsp = match *name {
                "twice" | "ext-lt-to-lta" | "ext-lta-renewed" => 2,
                "ext-twice-lta" => 4,
                _ => 1,
            };
            assert_said(
                name,
                &judged,
                &[&format!(
                    "DSS: 5 certificates, {ocsp} OCSP responses, 1 CRLs"
                )],
            );
            if name.contains("twice") {
                assert_eq!(judged.text.matches("LTV PASSED").count(), 2);
            }
            assert_said(
                name,
                &judged,
                &[
                    "present",
                    "The signer's certificate is trusted.",
                    "The timestamp token is cryptographically sound.",
                    "AdES indication (with time, DSS only) AdESPassed.OK",
                    "LTV: PASSED",
                ],
            );
            // Long-term (past) validation needs the document time-stamp as proof that
            // the DSS's data existed: only B-LTA passes it.
            let long_term_passed = judged
                .text
                .contains("AdES long-term indication (for information) AdESPassed.OK");
            assert_eq!(long_term_passed, *level == "LTA", "{name}: {}", judged.text);
        } else if *level == "T" {
            assert!(!judged.success, "{name}: no DSS, no LTV: {}", judged.text);
            assert_said(
                name,
                &judged,
                &[
                    "AdES indication (with time, DSS only) AdESIndeterminate",
                    "LTV FAILED",
                ],
            );
        }
    }

    // Recorded and audited: the signed PDF kept, the prepared copy dropped.
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM pending_signature WHERE format = 'pades' \
             AND state = 'completed' AND signed_document IS NOT NULL \
             AND prepared_document IS NULL AND cades IS NOT NULL"
        )
        .await,
        8
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.finalize' \
             AND outcome = 'success' AND details LIKE '%signed_pdf_sha256%'"
        )
        .await,
        8
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.prepare' \
             AND details LIKE '%\"format\":\"pades\"%'"
        )
        .await,
        8
    );
    // Ten time-stamps: signature time-stamps (plain-t, plain-lt, form-t, stream-lt,
    // form-lta, twice) and the document time-stamps of form-lta, ext-lt-to-lta,
    // ext-lta-renewed and ext-twice-lta.
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM timestamp_token").await,
        10
    );
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.extend' \
             AND outcome = 'success' AND details LIKE '%extended_pdf_sha256%'"
        )
        .await,
        4
    );
    eid_core::audit::verify(&tsa.ctx.db, &tsa.checkpoint_key)
        .await
        .unwrap();
}

async fn bad_pdfs_get_a_specific_problem(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;

    prepare(&tsa, pades_request(&card, b"GIF89a, not a PDF", "T"))
        .await
        .assert_problem(400, "not-a-pdf");
    let encrypted = sample(&Sample {
        encrypted: true,
        ..Sample::default()
    });
    prepare(&tsa, pades_request(&card, &encrypted, "T"))
        .await
        .assert_problem(422, "pdf-encrypted");
    let plain = sample(&Sample::default());
    let at = plain.windows(9).rposition(|w| w == b"startxref").unwrap();
    let mut broken = plain[..at].to_vec();
    broken.extend_from_slice(b"startxref\n9\n%%EOF\n");
    prepare(&tsa, pades_request(&card, &broken, "T"))
        .await
        .assert_problem(422, "pdf-broken-xref");
    let certified = sample(&Sample {
        certified: Some(1),
        ..Sample::default()
    });
    let answer = prepare(&tsa, pades_request(&card, &certified, "T")).await;
    answer.assert_problem(422, "pdf-changes-forbidden");
    assert!(answer.json()["detail"].as_str().unwrap().contains("DocMDP"));

    // A digest alone cannot be signed into a PDF.
    prepare(
        &tsa,
        json!({
            "certificate": card.certificate_pem,
            "format": "pades",
            "digest": Base64::encode_string(&[7u8; 32]),
            "digest_algorithm": "sha256",
        }),
    )
    .await
    .assert_problem(400, "bad-request");
    let mut unknown = pades_request(&card, &plain, "T");
    unknown["format"] = json!("xades");
    prepare(&tsa, unknown)
        .await
        .assert_problem(400, "bad-request");

    // Too large: a PDF over the limit, then a request over the body limit.
    let mut large = plain.clone();
    large.resize(eid_signing::pades::MAX_PDF_BYTES + 1, b' ');
    let answer = prepare(&tsa, pades_request(&card, &large, "T")).await;
    answer.assert_problem(413, "document-too-large");
    let (status, answer) = announce_too_large(&tsa, "/api/v1/signatures/prepare").await;
    assert_eq!(status, "413", "{answer}");
    assert!(
        answer.contains("application/problem+json")
            && answer.contains("urn:eid:problem:request-too-large"),
        "{answer}"
    );

    // Extension: not a PDF, a PDF with no signature, a damaged or oversized one,
    // base64 that is not, an unknown field: each its own problem, nothing audited.
    extend(&tsa, b"GIF89a, not a PDF", "LTA")
        .await
        .assert_problem(400, "not-a-pdf");
    let answer = extend(&tsa, &plain, "LTA").await;
    answer.assert_problem(400, "bad-request");
    assert!(answer.text().contains("no signature"), "{}", answer.text());
    extend(&tsa, &encrypted, "LT")
        .await
        .assert_problem(400, "bad-request");
    extend(&tsa, &large, "LTA")
        .await
        .assert_problem(413, "document-too-large");
    for body in [
        json!({ "document": "***" }),
        json!({ "document": Base64::encode_string(&plain), "colour": "blue" }),
        json!({ "digest": Base64::encode_string(&[7u8; 32]), "digest_algorithm": "sha256" }),
    ] {
        post(
            &tsa,
            "/api/v1/signatures/extend",
            "application/json",
            body.to_string().into_bytes(),
        )
        .await
        .assert_problem(400, "bad-request");
    }
    let (status, answer) = announce_too_large(&tsa, "/api/v1/signatures/extend").await;
    assert_eq!(status, "413", "{answer}");
    assert_eq!(
        count(
            &tsa,
            "SELECT COUNT(*) AS n FROM audit_log WHERE action = 'signature.extend'"
        )
        .await,
        0
    );

    // Nothing stored for any of them.
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM pending_signature").await,
        0
    );
    // A good one still goes through after all that.
    let output = sign(&tsa, &card, &plain, "B", true).await;
    assert!(output.starts_with(&plain));
}

/// A page rendered by poppler's `pdftoppm` (an independent renderer that draws widget
/// appearances), in grey, at 36 dots per inch (half a point per pixel): width, height
/// and the pixels, top row first.
fn render(tsa: &Tsa, path: &str, page: usize) -> (usize, usize, Vec<u8>) {
    let out = tsa.dir.path().join(format!("render-{page}"));
    let page = page.to_string();
    let rendered = std::process::Command::new("pdftoppm")
        .args(["-gray", "-r", "36", "-f", &page, "-l", &page, "-singlefile"])
        .arg(path)
        .arg(&out)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run pdftoppm ({e}): deploy/test.sh installs poppler-utils")
        });
    assert!(
        rendered.status.success(),
        "pdftoppm: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let pgm = std::fs::read(out.with_extension("pgm")).unwrap();
    // P5 header: magic, width, height, maxval, each after whitespace, then raw pixels.
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !pgm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8(pgm[start..at].to_vec()).unwrap());
    }
    assert_eq!(fields[0], "P5");
    let (width, height) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    (width, height, pgm[at + 1..].to_vec())
}

async fn visible_signature_is_drawn_where_asked(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let plain = sample(&Sample::default());
    let visible = |page: usize, rect: [f64; 4]| {
        let mut request = pades_request(&card, &plain, "T");
        request["visible_signature"] = json!({ "page": page, "rect": rect });
        request
    };
    // Where it cannot go: each refused with the reason, nothing stored.
    for (request, words) in [
        (visible(4, [56.0, 56.0, 306.0, 126.0]), "3 page(s)"),
        (visible(2, [400.0, 56.0, 650.0, 126.0]), "not inside page 2"),
        (visible(2, [56.0, 56.0, 60.0, 126.0]), "too small"),
        (visible(0, [56.0, 56.0, 306.0, 126.0]), "no page 0"),
    ] {
        let answer = prepare(&tsa, request).await;
        answer.assert_problem(400, "bad-visible-signature");
        let detail = answer.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(words), "{words} not in {detail}");
    }
    let mut cades = visible(1, [56.0, 56.0, 306.0, 126.0]);
    cades["format"] = json!("cades");
    prepare(&tsa, cades)
        .await
        .assert_problem(400, "bad-request");
    assert_eq!(
        count(&tsa, "SELECT COUNT(*) AS n FROM pending_signature").await,
        0
    );

    // On page 2, lower left: prepared, signed on the card, finalized.
    let rect = [56.0, 56.0, 306.0, 126.0];
    let signed = sign_request(&tsa, &card, visible(2, rect), true).await;
    assert!(signed.starts_with(&plain));
    let signed_path = write(&tsa, "visible.pdf", &signed);
    let plain_path = write(&tsa, "plain.pdf", &plain);

    // pyHanko judges it as any other signature: valid, covering the whole file.
    let judged = pyhanko_validates(&tsa, &signed_path);
    assert!(judged.success, "pyHanko: {}", judged.text);
    assert_said(
        "visible",
        &judged,
        &[
            "The signature is cryptographically sound.",
            "The signature covers the entire file.",
            "The signature is judged VALID.",
        ],
    );
    // poppler draws the appearance on page 2, inside the box and nowhere else; pages 1
    // and 3 are as they were.
    let (width, height, before) = render(&tsa, &plain_path, 2);
    let (width_after, height_after, after) = render(&tsa, &signed_path, 2);
    assert_eq!((width, height), (width_after, height_after));
    // Points to pixels at 36 dpi (half a point per pixel), y counted from the top.
    let inside = |x: usize, y: usize| {
        let (px, py) = (x as f64 * 2.0, (height - 1 - y) as f64 * 2.0);
        px >= rect[0] - 2.0 && px <= rect[2] + 2.0 && py >= rect[1] - 2.0 && py <= rect[3] + 2.0
    };
    let mut changed_inside = 0;
    for y in 0..height {
        for x in 0..width {
            let at = y * width + x;
            if before[at] != after[at] {
                assert!(
                    inside(x, y),
                    "page 2 changed outside the box at pixel ({x}, {y})"
                );
                changed_inside += 1;
            }
        }
    }
    // The box is 125 by 35 pixels: its fill, frame and text change most of it.
    assert!(changed_inside > 2000, "only {changed_inside} pixels drawn");
    for page in [1, 3] {
        assert_eq!(
            render(&tsa, &plain_path, page),
            render(&tsa, &signed_path, page)
        );
    }

    // On a page viewers turn a quarter clockwise (/Rotate 90, inherited from the page
    // tree): a box tall in the page's own space is wide on screen, and the text must
    // run across the screen, not down it.
    let turned = sample(&Sample {
        pages: 1,
        rotate: 90,
        ..Sample::default()
    });
    let mut request = pades_request(&card, &turned, "T");
    request["visible_signature"] = json!({ "page": 1, "rect": [56.0, 300.0, 126.0, 550.0] });
    let signed = sign_request(&tsa, &card, request, true).await;
    let signed_path = write(&tsa, "visible-turned.pdf", &signed);
    let judged = pyhanko_validates(&tsa, &signed_path);
    assert!(judged.success, "pyHanko: {}", judged.text);
    let plain_path = write(&tsa, "turned.pdf", &turned);
    let (width, height, before) = render(&tsa, &plain_path, 1);
    let (_, _, after) = render(&tsa, &signed_path, 1);
    assert!(
        width > height,
        "poppler shows the page turned: {width}x{height}"
    );
    // The box as drawn on screen: every changed pixel.
    let changed: Vec<(usize, usize)> = (0..height)
        .flat_map(|y| (0..width).map(move |x| (x, y)))
        .filter(|&(x, y)| before[y * width + x] != after[y * width + x])
        .collect();
    let span = |pixels: &[(usize, usize)]| {
        let xs = pixels.iter().map(|p| p.0);
        let ys = pixels.iter().map(|p| p.1);
        (
            xs.clone().min().unwrap(),
            xs.max().unwrap(),
            ys.clone().min().unwrap(),
            ys.max().unwrap(),
        )
    };
    let (x0, x1, y0, y1) = span(&changed);
    assert!(x1 - x0 > 3 * (y1 - y0), "the box is not wide on screen");
    // The text: dark pixels away from the frame. Lines across the screen make ink
    // wider than tall; lines down it, the reverse.
    let ink: Vec<(usize, usize)> = changed
        .iter()
        .copied()
        .filter(|&(x, y)| x > x0 + 3 && x + 3 < x1 && y > y0 + 3 && y + 3 < y1)
        .filter(|&(x, y)| after[y * width + x] < 128)
        .collect();
    assert!(ink.len() > 50, "only {} dark pixels of text", ink.len());
    let (ix0, ix1, iy0, iy1) = span(&ink);
    assert!(
        ix1 - ix0 > 2 * (iy1 - iy0),
        "the text does not read across the screen: ink {}x{}",
        ix1 - ix0,
        iy1 - iy0
    );
}

/// A B-T PDF whose signer is revoked after the time-stamp is extended to LTA with the
/// responder's answer saying so in the DSS: the signature stands for our report and for
/// pyHanko's DSS-only validation; a B-T PDF signed after the revocation cannot be made.
async fn revoked_after_the_time_stamp_is_kept_as_evidence(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let card = Card::issue(&tsa, "3900101123456").await;
    let plain = sample(&Sample::default());
    let signed = sign(&tsa, &card, &plain, "T", true).await;
    // OCSP gives revocation times in whole seconds: one within the time-stamp's second
    // could not be told to come after it.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    card.revoke(&tsa).await;
    let answer = extend(&tsa, &signed, "LTA").await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let report = our_report(&tsa, &answer.body).await;
    let entry = &report["signatures"][0];
    assert_eq!(entry["indication"], "TOTAL-PASSED", "{report}");
    assert_eq!(entry["format"], "PAdES-BASELINE-LTA", "{report}");
    assert_eq!(entry["certificate_status"]["status"], "revoked", "{report}");
    assert_eq!(
        entry["certificate_status"]["source"], "dss-ocsp",
        "{report}"
    );
    let path = write(&tsa, "revoked-after.pdf", &answer.body);
    tsa.stop_ca().await;
    let judged = pyhanko_ltv(&tsa, &path);
    assert!(judged.success, "{}", judged.text);
    assert_said("revoked-after", &judged, &["LTV: PASSED"]);
}

on_both_backends!(
    levels_are_judged_by_pyhanko,
    bad_pdfs_get_a_specific_problem,
    visible_signature_is_drawn_where_asked,
    revoked_after_the_time_stamp_is_kept_as_evidence
);

/// The instance's own keys on a SoftHSM2 token too, and a P-384 card (ECDSA with
/// SHA-384: the ByteRange digest and the signed attributes follow the key).
mod softhsm {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_p384_card() {
        journey(TestBackend::Sqlite, Keys::SoftHsm, eid_hsm::KeySpec::EcP384).await;
    }
}
