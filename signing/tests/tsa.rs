//! The time-stamp authority end to end over HTTP: requests made by `openssl ts -query`,
//! tokens judged by `openssl ts -verify` trusting only the instance's root, refusals
//! read by our parser and by `openssl ts -reply -text`. On SQLite and PostgreSQL, with
//! the soft key store and a SoftHSM2 token.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod common;

use common::{Keys, SntpServer, Tsa, openssl, os_says, os_silent, silent_udp};
use eid_signing::tsa::{FailureInfo, asn1::PkiStatus, token::response_status};
use eid_tests::{TestBackend, on_both_backends};
use sqlx::Row;

/// `openssl ts -query` for `data` (written first) with the given extra options.
fn query(tsa: &Tsa, data: &[u8], name: &str, options: &[&str]) -> std::path::PathBuf {
    let file = tsa.path(&format!("{name}.txt"));
    std::fs::write(&file, data).unwrap();
    let out = tsa.path(&format!("{name}.tsq"));
    let mut args = vec![
        "ts".to_owned(),
        "-query".to_owned(),
        "-data".to_owned(),
        file.display().to_string(),
        "-out".to_owned(),
        out.display().to_string(),
    ];
    args.extend(options.iter().map(|o| (*o).to_owned()));
    let made = openssl(&args);
    assert!(made.success, "openssl ts -query: {}", made.text);
    out
}

fn reply_text(reply: &std::path::Path) -> String {
    let printed = openssl(&["ts", "-reply", "-in", &reply.display().to_string(), "-text"]);
    assert!(printed.success, "openssl ts -reply -text: {}", printed.text);
    printed.text
}

fn verify(tsa: &Tsa, reply: &std::path::Path, against: &[&str], untrusted: bool) -> String {
    let mut args = vec![
        "ts".to_owned(),
        "-verify".to_owned(),
        "-in".to_owned(),
        reply.display().to_string(),
        "-CAfile".to_owned(),
        tsa.root.display().to_string(),
    ];
    args.extend(against.iter().map(|a| (*a).to_owned()));
    if untrusted {
        args.push("-untrusted".into());
        args.push(tsa.tsu.display().to_string());
    }
    let judged = openssl(&args);
    judged.text
}

/// Asserts a refusal with exactly `reason`, by our parser and by openssl.
fn assert_refused(tsa: &Tsa, body: &[u8], reason: FailureInfo, openssl_says: &str) {
    let (status, reasons) = response_status(body).unwrap();
    assert_eq!((status, reasons), (PkiStatus::Rejection, vec![reason]));
    let file = tsa.path(&format!("refused-{}.tsr", reason.name()));
    std::fs::write(&file, body).unwrap();
    let text = reply_text(&file);
    assert!(
        text.contains("Status: Rejected") && text.contains(openssl_says),
        "openssl shows:\n{text}"
    );
}

async fn openssl_verifies_tokens_with_and_without_the_certificate(backend: TestBackend) {
    openssl_journey(backend, Keys::Soft).await;
}

async fn openssl_journey(backend: TestBackend, keys: Keys) {
    let tsa = Tsa::start(backend, keys, "", os_silent()).await;
    let data = b"a document worth a time-stamp\n";
    let document = tsa.path("doc.txt");
    std::fs::write(&document, data).unwrap();
    let document = document.display().to_string();

    // certReq and a nonce: the TSU certificate travels in the token.
    let request = query(&tsa, data, "with-cert", &["-sha256", "-cert"]);
    let reply = tsa.stamp(&request, "with-cert.tsr").await;
    let text = reply_text(&reply);
    assert!(text.contains("Status: Granted"), "{text}");
    assert!(text.contains("Policy OID: 0.4.0.2023.1.1"), "{text}");
    assert!(text.contains("Nonce: 0x"), "{text}");
    assert!(text.contains("Accuracy: 0x01 seconds"), "{text}");
    assert!(text.contains("Ordering: no"), "{text}");
    assert!(text.contains("Time-Stamping Unit"), "TSA name: {text}");
    let verified = verify(&tsa, &reply, &["-data", &document], false);
    assert!(verified.contains("Verification: OK"), "{verified}");
    let request_path = request.display().to_string();
    let verified = verify(&tsa, &reply, &["-queryfile", &request_path], false);
    assert!(
        verified.contains("Verification: OK"),
        "nonce and imprint: {verified}"
    );

    // No certReq, no nonce: the verifier is given the TSU certificate itself.
    for (hash, name) in [("-sha384", "sha384"), ("-sha512", "sha512")] {
        let request = query(&tsa, data, name, &[hash, "-no_nonce"]);
        let reply = tsa.stamp(&request, &format!("{name}.tsr")).await;
        let text = reply_text(&reply);
        assert!(text.contains("Nonce: unspecified"), "{text}");
        let without = verify(&tsa, &reply, &["-data", &document], false);
        assert!(
            !without.contains("Verification: OK"),
            "the certificate should be missing: {without}"
        );
        let verified = verify(&tsa, &reply, &["-data", &document], true);
        assert!(verified.contains("Verification: OK"), "{verified}");
    }

    // A token does not verify for other data.
    let other = tsa.path("other.txt");
    std::fs::write(&other, b"something else").unwrap();
    let wrong = verify(&tsa, &reply, &["-data", &other.display().to_string()], true);
    assert!(!wrong.contains("Verification: OK"), "{wrong}");

    // Every token is recorded (distinct serials) and audited.
    let rows = sqlx::query("SELECT serial, hash_algorithm FROM timestamp_token")
        .fetch_all(tsa.ctx.db.pool())
        .await
        .unwrap();
    assert_eq!(rows.len(), 3);
    let mut serials: Vec<String> = rows.iter().map(|r| r.get("serial")).collect();
    serials.sort();
    serials.dedup();
    assert_eq!(serials.len(), 3);
    let audited: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'tsa.timestamp.issue'")
            .fetch_one(tsa.ctx.db.pool())
            .await
            .unwrap()
            .get("n");
    assert_eq!(audited, 3);
    let started: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'tsa.start'")
            .fetch_one(tsa.ctx.db.pool())
            .await
            .unwrap()
            .get("n");
    assert_eq!(started, 1);
    eid_core::audit::verify(&tsa.ctx.db, &tsa.checkpoint_key)
        .await
        .unwrap();
}

async fn bad_requests_get_their_failure_info(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let data = b"data";
    let sha1 = query(&tsa, data, "sha1", &["-sha1"]);
    let (status, _, body) = tsa
        .post("application/timestamp-query", std::fs::read(sha1).unwrap())
        .await;
    assert_eq!(status, 200);
    assert_refused(
        &tsa,
        &body,
        FailureInfo::BadAlg,
        "unrecognized or unsupported algorithm identifier",
    );

    let (status, kind, body) = tsa
        .post("application/timestamp-query", b"\x30\x03garbage".to_vec())
        .await;
    assert_eq!(
        (status, kind.as_str()),
        (200, "application/timestamp-reply")
    );
    assert_refused(
        &tsa,
        &body,
        FailureInfo::BadDataFormat,
        "the data submitted has the wrong format",
    );

    let policy = query(&tsa, data, "policy", &["-sha256", "-tspolicy", "1.2.3.4.5"]);
    let (_, _, body) = tsa
        .post(
            "application/timestamp-query",
            std::fs::read(policy).unwrap(),
        )
        .await;
    assert_refused(
        &tsa,
        &body,
        FailureInfo::UnacceptedPolicy,
        "the requested TSA policy is not supported by the TSA",
    );

    // The TSA's own policy asked for by name is fine.
    let ours = query(
        &tsa,
        data,
        "ours",
        &["-sha256", "-tspolicy", "0.4.0.2023.1.1"],
    );
    let (_, _, body) = tsa
        .post("application/timestamp-query", std::fs::read(ours).unwrap())
        .await;
    assert_eq!(response_status(&body).unwrap().0, PkiStatus::Granted);

    // A body over the limit: still a DER reply.
    let (status, _, body) = tsa
        .post("application/timestamp-query", vec![0x30; 64 * 1024])
        .await;
    assert_eq!(status, 200);
    assert_refused(
        &tsa,
        &body,
        FailureInfo::BadRequest,
        "transaction not permitted or supported",
    );

    // Not a time-stamp query at all: HTTP says so.
    let (status, kind, _) = tsa.post("application/json", b"{}".to_vec()).await;
    assert_eq!((status, kind.as_str()), (415, "application/problem+json"));

    // Nothing refused was recorded.
    let recorded: i64 = sqlx::query("SELECT COUNT(*) AS n FROM timestamp_token")
        .fetch_one(tsa.ctx.db.pool())
        .await
        .unwrap()
        .get("n");
    assert_eq!(recorded, 1);
}

async fn ntp_drift_decides_whether_the_clock_is_trusted(backend: TestBackend) {
    let sntp = SntpServer::start().await;
    let (_silent, silent) = silent_udp().await;
    let config = format!(
        "[signing.tsa.clock]\nos_sync = \"ignored\"\nntp_servers = [\"{}\", \"{}\"]\nmax_drift_millis = 500\nntp_timeout_millis = 300\n",
        sntp.address, silent
    );
    let tsa = Tsa::start(backend, Keys::Soft, &config, os_silent()).await;
    let data = b"drift";
    let request = std::fs::read(query(&tsa, data, "drift", &["-sha256", "-cert"])).unwrap();
    let stamp = || tsa.post("application/timestamp-query", request.clone());

    // In step with the reference (the silent one does not count against it).
    let (_, _, body) = stamp().await;
    assert_eq!(response_status(&body).unwrap().0, PkiStatus::Granted);

    // Two seconds off: refused with timeNotAvailable, and the change is audited.
    sntp.set_offset(2000);
    let verdict = tsa.tsa.refresh_clock_trust().await;
    assert!(!verdict.is_trusted(), "{verdict:?}");
    assert!(
        verdict.detail().contains("more than the 500 ms"),
        "{verdict:?}"
    );
    let (status, _, body) = stamp().await;
    assert_eq!(status, 200);
    assert_refused(
        &tsa,
        &body,
        FailureInfo::TimeNotAvailable,
        "the TSA's time source is not available",
    );

    // Back in step: trusted again, the refusal counted in the audit record.
    sntp.set_offset(-100);
    assert!(tsa.tsa.refresh_clock_trust().await.is_trusted());
    let (_, _, body) = stamp().await;
    assert_eq!(response_status(&body).unwrap().0, PkiStatus::Granted);
    let rows = sqlx::query(
        "SELECT action, details FROM audit_log WHERE action LIKE 'tsa.clock.%' ORDER BY seq",
    )
    .fetch_all(tsa.ctx.db.pool())
    .await
    .unwrap();
    let actions: Vec<String> = rows.iter().map(|r| r.get("action")).collect();
    assert_eq!(actions, ["tsa.clock.untrusted", "tsa.clock.trusted"]);
    let details: String = rows[1].get("details");
    assert!(
        details.contains("\"refused_since_last_change\":1"),
        "{details}"
    );
}

async fn no_answering_reference_is_not_trusted(backend: TestBackend) {
    let (_silent, silent) = silent_udp().await;
    let config = format!(
        "[signing.tsa.clock]\nos_sync = \"ignored\"\nntp_servers = [\"{silent}\"]\nntp_timeout_millis = 200\n"
    );
    let tsa = Tsa::start(backend, Keys::Soft, &config, os_silent()).await;
    let request = std::fs::read(query(&tsa, b"x", "silent", &["-sha256"])).unwrap();
    let (_, _, body) = tsa.post("application/timestamp-query", request).await;
    assert_refused(
        &tsa,
        &body,
        FailureInfo::TimeNotAvailable,
        "the TSA's time source is not available",
    );
}

async fn an_unsynchronised_os_clock_is_refused(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_says("no")).await;
    let request = std::fs::read(query(&tsa, b"x", "os", &["-sha256"])).unwrap();
    let (_, _, body) = tsa
        .post("application/timestamp-query", request.clone())
        .await;
    assert_refused(
        &tsa,
        &body,
        FailureInfo::TimeNotAvailable,
        "the TSA's time source is not available",
    );
    // "required" with an OS that reports nothing is refused too; "yes" is trusted.
    let tsa = Tsa::start(
        backend,
        Keys::Soft,
        "[signing.tsa.clock]\nos_sync = \"required\"\n",
        os_silent(),
    )
    .await;
    let (_, _, body) = tsa
        .post("application/timestamp-query", request.clone())
        .await;
    assert_eq!(
        response_status(&body).unwrap().1,
        [FailureInfo::TimeNotAvailable]
    );
    let tsa = Tsa::start(
        backend,
        Keys::Soft,
        "[signing.tsa.clock]\nos_sync = \"required\"\n",
        os_says("yes"),
    )
    .await;
    let (_, _, body) = tsa.post("application/timestamp-query", request).await;
    assert_eq!(response_status(&body).unwrap().0, PkiStatus::Granted);
}

async fn qualified_tokens_carry_the_etsi_statement(backend: TestBackend) {
    let tsa = Tsa::start(
        backend,
        Keys::Soft,
        "[signing.tsa]\nqualified = true\naccuracy_millis = 250\n[signing.tsa.clock]\nmax_drift_millis = 200\n",
        os_silent(),
    )
    .await;
    let data = b"qualified";
    let request = query(&tsa, data, "qualified", &["-sha256", "-cert"]);
    let reply = tsa.stamp(&request, "qualified.tsr").await;
    let text = reply_text(&reply);
    assert!(
        text.contains("Accuracy: unspecified seconds, 0xFA millis"),
        "{text}"
    );
    // openssl prints the extension by OID: qcStatements.
    assert!(
        text.contains("qcStatements") || text.contains("1.3.6.1.5.5.7.1.3"),
        "{text}"
    );
    // openssl's own DER parser, into the eContent OCTET STRING (the TSTInfo).
    let reply_path = reply.display().to_string();
    let dump = openssl(&["asn1parse", "-inform", "DER", "-in", &reply_path]);
    let lines: Vec<&str> = dump.text.lines().collect();
    let content_type = lines
        .iter()
        .position(|l| l.contains("id-smime-ct-TSTInfo"))
        .unwrap_or_else(|| panic!("no TSTInfo content type:\n{}", dump.text));
    let econtent = lines[content_type..]
        .iter()
        .find(|l| l.contains("OCTET STRING"))
        .and_then(|l| l.split(':').next())
        .unwrap()
        .trim()
        .to_owned();
    let tst_info = openssl(&[
        "asn1parse",
        "-inform",
        "DER",
        "-in",
        &reply_path,
        "-strparse",
        &econtent,
    ]);
    assert!(tst_info.success, "{}", tst_info.text);
    assert!(tst_info.text.contains("qcStatements"), "{}", tst_info.text);
    // The statement sits inside the extension's OCTET STRING: parse that too.
    let tst_lines: Vec<&str> = tst_info.text.lines().collect();
    let extension = tst_lines
        .iter()
        .position(|l| l.contains("qcStatements"))
        .unwrap();
    let value = tst_lines[extension..]
        .iter()
        .find(|l| l.contains("OCTET STRING"))
        .unwrap();
    // SEQUENCE { SEQUENCE { OID 0.4.0.19422.1.1 } }: esi4-qtstStatement-1, no info.
    let statement = value.split("[HEX DUMP]:").nth(1).unwrap().trim();
    assert_eq!(statement, "300B30090607040081975E0101", "{value}");
    let document = tsa.path("qualified.txt").display().to_string();
    let verified = verify(&tsa, &reply, &["-data", &document], false);
    assert!(verified.contains("Verification: OK"), "{verified}");
}

async fn concurrent_tokens_are_all_recorded_and_audited(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let request = std::fs::read(query(&tsa, b"burst", "burst", &["-sha256"])).unwrap();
    // Another writer appends to the audit chain meanwhile: the record writer finds the
    // head moved under it and must chain after that writer's entries.
    let other = {
        let ctx = tsa.ctx.clone();
        tokio::spawn(async move {
            for i in 0..32 {
                let event =
                    eid_core::AuditEvent::new("test", "test.other_writer", "test", i.to_string());
                eid_core::audit::record(&ctx.db, ctx.clock.as_ref(), &event)
                    .await
                    .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (url, body) = (format!("{}/tsa", tsa.url), request.clone());
        requests.spawn(async move {
            let response = reqwest::Client::new()
                .post(url)
                .header("content-type", "application/timestamp-query")
                .body(body)
                .send()
                .await
                .unwrap();
            response.bytes().await.unwrap().to_vec()
        });
    }
    while let Some(body) = requests.join_next().await {
        assert_eq!(
            response_status(&body.unwrap()).unwrap().0,
            PkiStatus::Granted
        );
    }
    other.await.unwrap();
    assert_recorded(&tsa, 64).await;
    let others: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'test.other_writer'")
            .fetch_one(tsa.ctx.db.pool())
            .await
            .unwrap()
            .get("n");
    assert_eq!(others, 32);
}

/// Exactly `tokens` tokens are recorded, each under a serial of its own and with its
/// audit entry, and the audit chain verifies.
async fn assert_recorded(tsa: &Tsa, tokens: i64) {
    let count = |sql: &'static str| async move {
        sqlx::query(sql)
            .fetch_one(tsa.ctx.db.pool())
            .await
            .unwrap()
            .get::<i64, _>("n")
    };
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM timestamp_token").await,
        tokens
    );
    assert_eq!(
        count("SELECT COUNT(DISTINCT serial) AS n FROM timestamp_token").await,
        tokens
    );
    assert_eq!(
        count("SELECT COUNT(*) AS n FROM audit_log WHERE action = 'tsa.timestamp.issue'").await,
        tokens
    );
    eid_core::audit::verify(&tsa.ctx.db, &tsa.checkpoint_key)
        .await
        .unwrap();
}

/// A batch that fails part-way leaves nothing behind, its callers are told
/// `systemFailure` (no token released), and the writer goes on with the next one. The
/// failure is forced with a unique index on the imprint of the records, so a second
/// token for the same data fails to be recorded (a clash not of serials, so the TSA does
/// not draw new ones).
async fn a_failed_record_batch_leaves_nothing_and_the_next_one_is_written(backend: TestBackend) {
    let tsa = Tsa::start(backend, Keys::Soft, "", os_silent()).await;
    let imprint = match backend {
        TestBackend::Sqlite => "json_extract(details, '$.message_imprint')",
        TestBackend::Postgres => "(details::json ->> 'message_imprint')",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE UNIQUE INDEX test_one_token_per_imprint ON audit_log ({imprint}) \
         WHERE action = 'tsa.timestamp.issue'"
    )))
    .execute(tsa.ctx.db.pool())
    .await
    .unwrap();
    let body =
        |name: &str| std::fs::read(query(&tsa, name.as_bytes(), name, &["-sha256"])).unwrap();
    let (first, again, other) = (body("first"), body("first"), body("other"));
    let (_, _, reply) = tsa.post("application/timestamp-query", first).await;
    assert_eq!(response_status(&reply).unwrap().0, PkiStatus::Granted);
    let (_, _, reply) = tsa.post("application/timestamp-query", again).await;
    assert_eq!(
        response_status(&reply).unwrap(),
        (PkiStatus::Rejection, vec![FailureInfo::SystemFailure])
    );
    let (_, _, reply) = tsa.post("application/timestamp-query", other).await;
    assert_eq!(response_status(&reply).unwrap().0, PkiStatus::Granted);
    assert_recorded(&tsa, 2).await;
}

on_both_backends!(
    a_failed_record_batch_leaves_nothing_and_the_next_one_is_written,
    concurrent_tokens_are_all_recorded_and_audited,
    openssl_verifies_tokens_with_and_without_the_certificate,
    bad_requests_get_their_failure_info,
    ntp_drift_decides_whether_the_clock_is_trusted,
    no_answering_reference_is_not_trusted,
    an_unsynchronised_os_clock_is_refused,
    qualified_tokens_carry_the_etsi_statement,
);

/// The TSU key on a SoftHSM2 token: the same journey, on both backends.
mod softhsm {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        openssl_journey(TestBackend::Sqlite, Keys::SoftHsm).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        openssl_journey(TestBackend::Postgres, Keys::SoftHsm).await;
    }
}

/// Tokens are written from prepared DER, not from the `cms` crate's structures: each
/// variant must decode with those structures, encode back to the same octets (so it
/// is DER, attributes and certificates in SET OF order), carry what was asked for,
/// and verify under the TSU key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_canonical_der_in_every_variant() {
    use cms::{content_info::ContentInfo, signed_data::SignedData};
    use der::{Decode, Encode};
    use eid_signing::tsa::{
        asn1::{ID_SHA384, MessageImprint, TimeStampReq, TimeStampResp, TstInfo},
        token::{TokenSigner, parse_request},
    };

    let tsa = Tsa::start(TestBackend::Sqlite, Keys::Soft, "", os_silent()).await;
    let policy = der::asn1::ObjectIdentifier::new_unwrap("1.2.3.4.5");
    let now = time::OffsetDateTime::now_utc();
    for (qualified, named, accuracy_millis, cert_req, nonce) in [
        (false, true, 1000, true, true),
        (true, true, 1500, false, true),
        (true, false, 0, true, false),
        (false, false, 250, false, false),
    ] {
        let variant = format!(
            "qualified {qualified}, named {named}, accuracy {accuracy_millis} ms, certReq {cert_req}, nonce {nonce}"
        );
        let signer = TokenSigner::new(
            &tsa.unit,
            policy,
            std::time::Duration::from_millis(accuracy_millis),
            qualified,
            named,
        )
        .unwrap();
        let request = TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: spki::AlgorithmIdentifierOwned {
                    oid: ID_SHA384,
                    parameters: None,
                },
                hashed_message: der::asn1::OctetString::new(vec![0xAB; 48]).unwrap(),
            },
            req_policy: None,
            nonce: nonce.then(|| der::asn1::Int::new(&[0x01, 0x02, 0x83]).unwrap()),
            cert_req,
            extensions: None,
        }
        .to_der()
        .unwrap();
        let parsed = parse_request(&request, policy).unwrap();
        let serial = [0x01, 0x7F, 0x00, 0xFF, 0x10];
        let der = signer.sign(&parsed, &serial, now).unwrap();

        let response = TimeStampResp::from_der(&der).unwrap();
        assert_eq!(response.to_der().unwrap(), der, "{variant}");
        assert_eq!(response.status.status, PkiStatus::Granted, "{variant}");
        let token: ContentInfo = response.time_stamp_token.unwrap();
        let signed = token.content.decode_as::<SignedData>().unwrap();
        assert_eq!(signed.certificates.is_some(), cert_req, "{variant}");
        if let Some(certificates) = &signed.certificates {
            assert_eq!(certificates.0.len(), 1 + tsa.unit.chain.len(), "{variant}");
        }
        let econtent = signed.encap_content_info.econtent.as_ref().unwrap();
        let tst = TstInfo::from_der(econtent.value()).unwrap();
        assert_eq!(tst.to_der().unwrap(), econtent.value(), "{variant}");
        assert_eq!(tst.policy, policy, "{variant}");
        assert_eq!(tst.message_imprint, parsed.imprint, "{variant}");
        assert_eq!(tst.serial_number.as_bytes(), serial, "{variant}");
        assert_eq!(tst.nonce, parsed.nonce, "{variant}");
        assert_eq!(tst.tsa.is_some(), named, "{variant}");
        assert_eq!(tst.extensions.is_some(), qualified, "{variant}");
        assert_eq!(tst.accuracy.is_some(), accuracy_millis > 0, "{variant}");
        assert!(!tst.ordering, "{variant}");

        let info = signed.signer_infos.0.get(0).unwrap();
        let attributes = info.signed_attrs.as_ref().unwrap();
        let digest = attributes
            .iter()
            .find(|a| a.oid == eid_signing::tsa::asn1::ID_MESSAGE_DIGEST)
            .unwrap();
        assert_eq!(
            digest.values.get(0).unwrap().value(),
            <sha2::Sha256 as sha2::Digest>::digest(econtent.value()).as_slice(),
            "{variant}"
        );
        tsa.unit
            .signer
            .public_key()
            .verify(
                tsa.unit.signer.scheme(),
                &attributes.to_der().unwrap(),
                info.signature.as_bytes(),
            )
            .unwrap();
    }
}
