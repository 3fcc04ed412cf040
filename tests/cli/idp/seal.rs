//! Organisation e-seals end to end: the instance's keys on a SoftHSM2 token (class hsm),
//! a seal created by `eid signing seal create` (key generated on the token, qualified
//! seal certificate from the organisation seal CA, judged by openssl and pkilint), an
//! agency's system getting an access token from our provider by the client credentials
//! grant and sealing a PDF (PAdES B-LT, visible) and a file (CAdES B-LT) through
//! `/api/v1/seals/{id}/sign`; pyHanko and openssl judge the results trusting only our
//! root. A client the seal does not list, a token without the scope, an unknown seal
//! and a withdrawn one each get their own answer. On SQLite and PostgreSQL.

use std::process::Stdio;

use base64ct::{Base64, Encoding};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::{Value, json};

use super::{
    csc_signing::{Instance, PORTAL_TOKEN},
    http,
    mobile::{MAINTENANCE_ONLY, answer_of, assert_pyhanko_valid, sample_pdf},
};
use crate::{Server, ca::openssl_verifies, text};

const ORGANISATION_ID: &str = "NTRTT-4021877";

/// `eid signing seal create` for the Ministry of Health's records seal (clients to add).
pub(super) const CREATE_SEAL: [&str; 9] = [
    "signing",
    "seal",
    "create",
    "--organisation",
    "Ministry of Health",
    "--organisation-id",
    ORGANISATION_ID,
    "--name",
    "Ministry of Health records seal",
];

/// A client of the client credentials grant, allowed `scope`s: its id and secret.
async fn service_client(instance: &Instance, name: &str, scopes: &[&str]) -> (String, String) {
    let mut args = vec!["rp", "add", "--name", name, "--grant", "client_credentials"];
    for scope in scopes {
        args.extend(["--scope", scope]);
    }
    let out = instance.ok(&args).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        v["client_id"].as_str().unwrap().to_owned(),
        v["client_secret"].as_str().unwrap().to_owned(),
    )
}

/// An access token for `client` by the client credentials grant, with `scope`.
async fn access_token(instance: &Instance, client: &(String, String), scope: &str) -> String {
    let mut form = vec![("grant_type", "client_credentials")];
    if !scope.is_empty() {
        form.push(("scope", scope));
    }
    let (status, body) = answer_of(
        http()
            .post(format!("http://{}/token", instance.addresses.idp))
            .basic_auth(&client.0, Some(&client.1))
            .form(&form),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

/// A judge's command: asserts it succeeded and returns what it printed.
fn judge(command: &mut std::process::Command) -> String {
    let output = command.output().unwrap();
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{command:?}: {said}");
    said
}

async fn agencies_seal_documents_with_their_hsm_key(backend: TestBackend) {
    let instance = Instance::on_hsm(backend).await;
    let dir = instance.eid.dir.path().to_path_buf();
    let pki = dir.join("pki");
    let agency = service_client(&instance, "Health records system", &["eseal"]).await;
    let other = service_client(&instance, "Tax office system", &["eseal"]).await;

    // The seal: key on the token, certificate from the organisation seal CA.
    let created: Value = serde_json::from_str(
        &instance
            .ok(&[&CREATE_SEAL[..], &["--client", &agency.0]].concat())
            .await,
    )
    .unwrap();
    let seal_id = created["seal_id"].as_str().unwrap().to_owned();
    assert_eq!(created["clients"], json!([agency.0]));
    let certificate = dir.join("seal.pem");
    std::fs::write(&certificate, created["certificate"].as_str().unwrap()).unwrap();
    openssl_verifies(&pki, "org-seal-ca", &certificate);
    let subject = judge(
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-in"])
            .arg(&certificate),
    );
    assert!(
        subject.contains("O = Ministry of Health")
            && subject.contains(ORGANISATION_ID)
            && subject.contains("CN = Ministry of Health records seal"),
        "{subject}"
    );
    let listing = instance.token_objects();
    assert!(
        listing.matches(&seal_id).count() >= 3,
        "private key, public key and certificate of {seal_id}: {listing}"
    );

    let mut serve = instance.command(&["serve"]);
    serve.stdout(Stdio::piped());
    let _server = Server::start(serve, 4).await;
    let signing = instance.signing.clone();
    let api = |method: reqwest::Method, path: &str, token: Option<&str>| {
        let mut request = http().request(method, format!("http://{signing}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
    };
    let sign_path = format!("/api/v1/seals/{seal_id}/sign");
    let token = access_token(&instance, &agency, "eseal").await;

    // The agency sees its seal.
    let (status, listed) =
        answer_of(api(reqwest::Method::GET, "/api/v1/seals", Some(&token))).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["seals"][0]["seal_id"], seal_id.as_str(), "{listed}");
    assert_eq!(listed["seals"][0]["sign"], sign_path.as_str(), "{listed}");

    // A PDF sealed at B-LT with a visible seal: pyHanko trusts it from our root.
    let sealed = api(reqwest::Method::POST, &sign_path, Some(&token))
        .header("accept", "application/pdf")
        .json(&json!({
            "document": Base64::encode_string(&sample_pdf()),
            "format": "pades",
            "level": "LT",
            "visible_signature": { "page": 1, "rect": [320, 40, 560, 110] },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(sealed.status(), 200);
    let pdf = dir.join("sealed.pdf");
    std::fs::write(&pdf, sealed.bytes().await.unwrap()).unwrap();
    assert_pyhanko_valid(
        &pki.join("root.pem"),
        &pdf,
        ORGANISATION_ID,
        MAINTENANCE_ONLY,
    );
    // Our validator calls it a qualified seal.
    let (status, report) = answer_of(
        http()
            .post(format!("http://{signing}/api/v1/validations"))
            .bearer_auth(PORTAL_TOKEN)
            .json(&json!({ "document": Base64::encode_string(&std::fs::read(&pdf).unwrap()) })),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let entry = &report["signatures"][0];
    assert_eq!(entry["indication"], "TOTAL-PASSED", "{report}");
    assert_eq!(entry["qualification"], "QESeal", "{report}");

    // A file sealed as detached CAdES: openssl verifies it over the file.
    let document = b"Vaccination record 2026-0419";
    let (status, body) = answer_of(
        api(reqwest::Method::POST, &sign_path, Some(&token))
            .json(&json!({ "document": Base64::encode_string(document) })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let p7s = dir.join("record.p7s");
    std::fs::write(
        &p7s,
        Base64::decode_vec(body["signature"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let content = dir.join("record.txt");
    std::fs::write(&content, document).unwrap();
    let verified = judge(
        std::process::Command::new("openssl")
            .args(["cms", "-verify", "-binary", "-inform", "DER", "-in"])
            .arg(&p7s)
            .arg("-content")
            .arg(&content)
            .arg("-CAfile")
            .arg(pki.join("root.pem"))
            .args(["-purpose", "any", "-out", "/dev/null"]),
    );
    assert!(verified.contains("Verification successful"), "{verified}");

    // Refusals, each in its own terms; nothing is sealed.
    let seal_body = json!({ "document": Base64::encode_string(document) });
    let refused = |status: u16, kind: &str, answer: &Value| {
        assert_eq!(
            (status, answer["type"].as_str().unwrap_or_default()),
            (status, format!("urn:eid:problem:{kind}").as_str()),
            "{answer}"
        );
    };
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, None).json(&seal_body)).await;
    assert_eq!(status, 401, "{answer}");
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some("not.a.token")).json(&seal_body))
            .await;
    assert_eq!(status, 401, "{answer}");
    // Without the scope the token is the provider's own, not this API's.
    let unscoped = access_token(&instance, &agency, "").await;
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some(&unscoped)).json(&seal_body)).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["detail"]
            .as_str()
            .unwrap()
            .contains("not meant for this API"),
        "{answer}"
    );
    let stranger = access_token(&instance, &other, "eseal").await;
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some(&stranger)).json(&seal_body)).await;
    assert_eq!(status, 403, "{answer}");
    refused(status, "forbidden", &answer);
    let (status, listed) =
        answer_of(api(reqwest::Method::GET, "/api/v1/seals", Some(&stranger))).await;
    assert_eq!((status, &listed["seals"]), (200, &json!([])), "{listed}");
    let (status, answer) = answer_of(
        api(
            reqwest::Method::POST,
            "/api/v1/seals/seal-00000000000000000000000000000000/sign",
            Some(&token),
        )
        .json(&seal_body),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, answer) = answer_of(api(reqwest::Method::POST, &sign_path, Some(&token)).json(
        &json!({
            "document": Base64::encode_string(b"not a pdf"),
            "format": "pades",
        }),
    ))
    .await;
    assert_eq!(status, 400, "{answer}");
    refused(status, "not-a-pdf", &answer);

    // The other agency is allowed, then not again.
    instance
        .ok(&["signing", "seal", "allow", &seal_id, "--client", &other.0])
        .await;
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some(&stranger)).json(&seal_body)).await;
    assert_eq!(status, 200, "{answer}");
    instance
        .ok(&[
            "signing", "seal", "disallow", &seal_id, "--client", &other.0,
        ])
        .await;
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some(&stranger)).json(&seal_body)).await;
    assert_eq!(status, 403, "{answer}");

    // Withdrawn: refused, the certificate revoked at OCSP, the key gone from the token.
    let bad_reason = instance
        .run(&["signing", "seal", "withdraw", &seal_id, "--reason", "tired"])
        .await;
    assert!(!bad_reason.status.success());
    instance
        .ok(&[
            "signing",
            "seal",
            "withdraw",
            &seal_id,
            "--reason",
            "keyCompromise",
        ])
        .await;
    let (status, answer) =
        answer_of(api(reqwest::Method::POST, &sign_path, Some(&token)).json(&seal_body)).await;
    assert_eq!(status, 410, "{answer}");
    refused(status, "seal-withdrawn", &answer);
    let ocsp_url = judge(
        std::process::Command::new("openssl")
            .args(["x509", "-noout", "-ocsp_uri", "-in"])
            .arg(&certificate),
    );
    let status = judge(
        std::process::Command::new("openssl")
            .args(["ocsp", "-issuer"])
            .arg(pki.join("org-seal-ca.pem"))
            .arg("-cert")
            .arg(&certificate)
            .args(["-url", ocsp_url.trim(), "-CAfile"])
            .arg(pki.join("root.pem")),
    );
    assert!(
        status.contains("revoked") && status.contains("keyCompromise"),
        "{status}"
    );
    assert!(!instance.token_objects().contains(&seal_id));

    let tail = instance.ok(&["audit", "tail", "-n", "80"]).await;
    for action in [
        "seal.create success",
        "seal.apply success",
        "seal.apply denied",
        "seal.client.add success",
        "seal.client.remove success",
        "seal.withdraw success",
    ] {
        assert!(tail.contains(action), "{action} not in {tail}");
    }
    instance.ok(&["audit", "verify"]).await;
}

on_both_backends!(agencies_seal_documents_with_their_hsm_key);
