//! Remote qualified signing end to end: the instance's keys on a SoftHSM2 token (class
//! hsm), a credential created by `eid signing credential create` (key generated on the
//! token, qualified certificate from our CA on the token's QSCD evidence), a citizen
//! logged in with the ID card getting an access token for the CSC scopes, and pyHanko's
//! own CSC client signing a PDF through `/csc/v2/` (PIN, SAD bound to the hash) with a
//! time-stamp from our TSA; pyHanko then judges the PDF trusting only our root. Every
//! bad input of the API gets its CSC error; three wrong PINs lock the credential until
//! an operator unlocks it. On SQLite and PostgreSQL.

use std::{path::Path, process::Stdio};

use base64ct::{Base64, Encoding};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::{Value, json};
use sha2::Digest;

use super::{
    Addresses, card_browser, command,
    csc_authorization::encoded,
    free_address, http,
    mobile::{answer_of, assert_pyhanko_valid, pyhanko, sample_pdf},
    openssl_csr, pkce_challenge, query_of, redeem_code,
};
use crate::{Eid, Server, SoftHsmToken, text};

const NATIONAL_ID: &str = "3900101123456";
const PIN: &str = "48213";
pub(super) const PORTAL_TOKEN: &str = "a-signature-api-token-for-the-portal-0123";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-0123456789";

/// The instance: its folder, the token, the config naming it, the listeners.
pub(super) struct Instance {
    pub(super) eid: Eid,
    pub(super) addresses: Addresses,
    pub(super) token: SoftHsmToken,
    config: std::path::PathBuf,
    pub(super) signing: String,
}

impl Instance {
    /// An initialised instance whose keys are on a SoftHSM2 token of class hsm
    /// ("eid-service", user PIN 246810), with a signature API client (`PORTAL_TOKEN`)
    /// and its CA certificates exported to `pki/`.
    pub(super) async fn on_hsm(backend: TestBackend) -> Self {
        let eid = Eid::new(backend).await;
        let dir = eid.dir.path().to_path_buf();
        let token = SoftHsmToken::create(&dir, "eid-service", "246810");
        let config = token.config(&eid, "eid-service", "246810");
        // A caller of the signature API, for validation reports.
        std::fs::write(dir.join("portal-token"), PORTAL_TOKEN).unwrap();
        let mut toml = std::fs::read_to_string(&config).unwrap();
        toml.push_str(&format!(
            "[[signing.api_client]]\nname = \"portal\"\ntoken_file = {:?}\n",
            dir.join("portal-token")
        ));
        std::fs::write(&config, toml).unwrap();
        let instance = Self {
            eid,
            addresses: Addresses::new(),
            token,
            config,
            signing: free_address(),
        };
        instance.ok(&["init"]).await;
        let pki = dir.join("pki").display().to_string();
        instance.ok(&["ca", "export", "--out", &pki]).await;
        instance
    }

    /// The objects pkcs11-tool lists on the token.
    pub(super) fn token_objects(&self) -> String {
        let objects = std::process::Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.token.conf)
            .args([
                "--module",
                &self.token.module,
                "--token-label",
                "eid-service",
            ])
            .args(["--login", "--pin", "246810", "--list-objects"])
            .output()
            .unwrap();
        text(&objects.stdout)
    }

    pub(super) fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = command(&self.eid, &self.addresses, args);
        command
            .env("EID_CONFIG", &self.config)
            .env("SOFTHSM2_CONF", &self.token.conf)
            .env("EID_SIGNING_LISTEN", &self.signing)
            .env("EID_SIGNING_PUBLIC_URL", format!("http://{}", self.signing));
        command
    }

    pub(super) async fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().await.unwrap()
    }

    pub(super) async fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args).await;
        assert!(
            output.status.success(),
            "eid {args:?}: {}",
            text(&output.stderr)
        );
        text(&output.stdout)
    }
}

/// A CSC call with `token`: status and JSON.
async fn csc(signing: &str, method: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = http()
        .post(format!("http://{signing}/csc/v2/{method}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    answer_of(request).await
}

fn b64_sha256(data: &[u8]) -> String {
    Base64::encode_string(&sha2::Sha256::digest(data))
}

/// Asserts a CSC error: the status, the error code, and `words` in the description.
fn assert_refused(status: u16, answer: &Value, expected: u16, error: &str, words: &str) {
    assert_eq!(
        (status, answer["error"].as_str()),
        (expected, Some(error)),
        "{answer}"
    );
    assert!(
        answer["error_description"]
            .as_str()
            .unwrap()
            .contains(words),
        "{words} not in {answer}"
    );
}

/// Logs the card holder in for `client` with `scope` (and `extra` parameters) and
/// returns the token response.
async fn login(instance: &Instance, client: &(String, String), scope: &str, extra: &str) -> Value {
    let issuer = format!("http://{}", instance.addresses.idp);
    let dir = instance.eid.dir.path();
    let start = format!(
        "{issuer}/authorize?client_id={}&response_type=code&scope={scope}&state=st&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={}&\
         code_challenge_method=S256{extra}",
        client.0,
        pkce_challenge(VERIFIER)
    );
    let back = card_browser(
        &issuer,
        &start,
        dir,
        &dir.join("card.pem"),
        &dir.join("card.key"),
    );
    redeem_code(
        &issuer,
        (&client.0, &client.1),
        &query_of(&back)["code"],
        VERIFIER,
    )
    .await
}

async fn remote_signing_through_the_csc_api(backend: TestBackend) {
    let instance = Instance::on_hsm(backend).await;
    let dir = instance.eid.dir.path().to_path_buf();
    // The ID card the citizen logs in with (a key in a file, for curl).
    let csr = openssl_csr(
        &dir,
        "card",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let card = instance
        .ok(&[
            "ca",
            "issue",
            "--profile",
            "citizen-auth",
            "--csr",
            &csr,
            "--national-id",
            NATIONAL_ID,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
        ])
        .await;
    std::fs::write(dir.join("card.pem"), card).unwrap();

    // The credential: a weak PIN is refused, then the key is made on the token.
    let create = |pin: &str| {
        let pin_file = dir.join(format!("pin-{pin}"));
        std::fs::write(&pin_file, format!("{pin}\n")).unwrap();
        let pin_file = pin_file.display().to_string();
        let command = instance.command(&[
            "signing",
            "credential",
            "create",
            "--national-id",
            NATIONAL_ID,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
            "--pin-file",
            &pin_file,
        ]);
        async move {
            let mut command = command;
            command.output().await.unwrap()
        }
    };
    let weak = create("12345").await;
    assert!(!weak.status.success());
    assert!(
        text(&weak.stderr).contains("consecutive"),
        "{}",
        text(&weak.stderr)
    );
    let made = create(PIN).await;
    assert!(made.status.success(), "{}", text(&made.stderr));
    let created: Value = serde_json::from_str(&text(&made.stdout)).unwrap();
    let credential = created["credential_id"].as_str().unwrap().to_owned();
    // openssl: the certificate chains to our root through the qualified signing CA.
    let cert_path = dir.join("remote-sign.pem");
    std::fs::write(&cert_path, created["certificate"].as_str().unwrap()).unwrap();
    let verify = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("pki/root.pem"))
        .arg("-untrusted")
        .arg(dir.join("pki/citizen-sign-ca.pem"))
        .arg(&cert_path)
        .output()
        .unwrap();
    assert!(verify.status.success(), "{}", text(&verify.stdout));
    // pkcs11-tool sees the key and the certificate on the token, under the credential id.
    let listing = instance.token_objects();
    assert!(
        listing.matches(&credential).count() >= 3,
        "private key, public key and certificate of {credential}: {listing}"
    );

    let client: (String, String) = {
        let out = instance
            .ok(&[
                "rp",
                "add",
                "--name",
                "Document portal",
                "--redirect-uri",
                "http://127.0.0.1:9/callback",
                "--scope",
                "service",
                "--scope",
                "credential",
            ])
            .await;
        let v: Value = serde_json::from_str(&out).unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let plain: (String, String) = {
        let out = instance
            .ok(&[
                "rp",
                "add",
                "--name",
                "Library",
                "--redirect-uri",
                "http://127.0.0.1:9/callback",
            ])
            .await;
        let v: Value = serde_json::from_str(&out).unwrap();
        (
            v["client_id"].as_str().unwrap().to_owned(),
            v["client_secret"].as_str().unwrap().to_owned(),
        )
    };
    let mut serve = instance.command(&["serve"]);
    serve.stdout(Stdio::piped());
    let _server = Server::start(serve, 4).await;
    let signing = instance.signing.clone();

    // info needs no token and names our provider.
    let (status, info) = csc(&signing, "info", None, json!({})).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["oauth2"], format!("http://{}", instance.addresses.idp));
    assert!(
        info["methods"]
            .as_array()
            .unwrap()
            .contains(&json!("signatures/signHash"))
    );

    let tokens = login(&instance, &client, "openid%20service", "").await;
    let access = tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"))
        .to_owned();

    // list and info.
    let (status, listed) = csc(&signing, "credentials/list", Some(&access), json!({})).await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(listed["credentialIDs"], json!([credential]));
    let (status, listed) = csc(
        &signing,
        "credentials/list",
        Some(&access),
        json!({ "credentialInfo": true, "certificates": "chain" }),
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    assert_eq!(
        listed["credentialInfos"][0]["credentialID"],
        credential.as_str()
    );
    assert_eq!(
        listed["credentialInfos"][0]["cert"]["certificates"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    let (status, described) = csc(
        &signing,
        "credentials/info",
        Some(&access),
        json!({ "credentialID": credential, "certificates": "chain", "certInfo": true }),
    )
    .await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["SCAL"], "2");
    assert_eq!(described["auth"]["mode"], "explicit");
    assert_eq!(
        described["cert"]["certificates"].as_array().unwrap().len(),
        3
    );
    assert!(
        described["cert"]["subjectDN"]
            .as_str()
            .unwrap()
            .contains(NATIONAL_ID)
    );

    // pyHanko's CSC client signs a PDF through the API; pyHanko judges it.
    let source = dir.join("contract.pdf");
    std::fs::write(&source, sample_pdf()).unwrap();
    let signed = dir.join("contract-signed.pdf");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/judges/pyhanko/csc_sign.py");
    let python = pyhanko().with_file_name("python3");
    let output = std::process::Command::new(&python)
        .arg(&script)
        .arg(format!("http://{signing}"))
        .arg(&credential)
        .arg(&access)
        .arg(PIN)
        .arg(format!("http://{signing}/tsa"))
        .arg(&source)
        .arg(&signed)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "pyHanko CSC client: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert_pyhanko_valid(
        &dir.join("pki/root.pem"),
        &signed,
        &format!("PNOTT-{NATIONAL_ID}"),
        "The signature covers the entire file.",
    );

    // Our validator agrees (pyHanko made this CMS, not us): a qualified signature.
    let (status, report) = answer_of(
        http()
            .post(format!("http://{signing}/api/v1/validations"))
            .bearer_auth(PORTAL_TOKEN)
            .json(&json!({ "document": Base64::encode_string(&std::fs::read(&signed).unwrap()) })),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    let entry = &report["signatures"][0];
    assert_eq!(entry["indication"], "TOTAL-PASSED", "{report}");
    assert_eq!(entry["format"], "PAdES-BASELINE-T", "{report}");
    assert_eq!(entry["qualification"], "QESig", "{report}");
    assert_eq!(entry["pdf"]["covers_whole_file"], true, "{report}");

    // Explicit authorisation and signHash by hand; openssl checks the signature value.
    let document = b"a deed of gift";
    let hash = b64_sha256(document);
    let authorize = |pin: &str, hashes: Vec<String>| {
        json!({
            "credentialID": credential,
            "numSignatures": hashes.len(),
            "hashes": hashes,
            "hashAlgorithmOID": SHA256,
            "authData": [{ "id": "PIN", "value": pin }],
        })
    };
    let (status, sad) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![hash.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{sad}");
    let sad = sad["SAD"].as_str().unwrap().to_owned();
    let (status, check) = csc(
        &signing,
        "credentials/authorizeCheck",
        Some(&access),
        json!({ "credentialID": credential, "SAD": sad }),
    )
    .await;
    assert_eq!(
        (status, check["status"].as_str()),
        (200, Some("valid")),
        "{check}"
    );
    let sign = |sad: &str, hashes: Vec<String>| {
        json!({
            "credentialID": credential,
            "SAD": sad,
            "hashes": hashes,
            "hashAlgorithmOID": SHA256,
            "signAlgo": ECDSA_SHA256,
        })
    };
    // A hash the SAD does not cover is refused without spending it.
    let (status, refused) = csc(
        &signing,
        "signatures/signHash",
        Some(&access),
        sign(&sad, vec![b64_sha256(b"another deed")]),
    )
    .await;
    assert_refused(status, &refused, 400, "invalid_request", "not authorised");
    let (status, signed_hash) = csc(
        &signing,
        "signatures/signHash",
        Some(&access),
        sign(&sad, vec![hash.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{signed_hash}");
    let signature = Base64::decode_vec(signed_hash["signatures"][0].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("deed.sig"), &signature).unwrap();
    std::fs::write(dir.join("deed.txt"), document).unwrap();
    let key = std::process::Command::new("openssl")
        .args(["x509", "-pubkey", "-noout", "-in"])
        .arg(&cert_path)
        .output()
        .unwrap();
    std::fs::write(dir.join("remote-sign.pub"), &key.stdout).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(dir.join("remote-sign.pub"))
        .arg("-signature")
        .arg(dir.join("deed.sig"))
        .arg(dir.join("deed.txt"))
        .output()
        .unwrap();
    assert!(
        text(&verified.stdout).contains("Verified OK"),
        "{}",
        text(&verified.stdout)
    );
    // Single use.
    let (status, again) = csc(
        &signing,
        "signatures/signHash",
        Some(&access),
        sign(&sad, vec![hash.clone()]),
    )
    .await;
    assert_refused(status, &again, 400, "invalid_request", "already used");

    // signatures/timestamp: openssl verifies the token over the hash.
    let (status, stamped) = csc(
        &signing,
        "signatures/timestamp",
        Some(&access),
        json!({ "hash": hash, "hashAlgorithmOID": SHA256, "nonce": "000a1b2c3d" }),
    )
    .await;
    assert_eq!(status, 200, "{stamped}");
    std::fs::write(
        dir.join("deed.tst"),
        Base64::decode_vec(stamped["timestamp"].as_str().unwrap()).unwrap(),
    )
    .unwrap();
    let ts = std::process::Command::new("openssl")
        .args(["ts", "-verify", "-token_in", "-in"])
        .arg(dir.join("deed.tst"))
        .arg("-data")
        .arg(dir.join("deed.txt"))
        .arg("-CAfile")
        .arg(dir.join("pki/root.pem"))
        .output()
        .unwrap();
    assert!(
        text(&ts.stdout).contains("Verification: OK"),
        "{}{}",
        text(&ts.stdout),
        text(&ts.stderr)
    );

    // Bad input, each with its CSC error.
    let other = b64_sha256(b"x");
    for (method, token, body, status, error, words) in [
        (
            "signatures/timestamp",
            Some(access.as_str()),
            json!({ "hash": hash, "hashAlgorithmOID": SHA256, "nonce": "0000" }),
            400,
            "invalid_request",
            "nonce",
        ),
        (
            "credentials/list",
            None,
            json!({}),
            401,
            "invalid_token",
            "access token is required",
        ),
        (
            "credentials/list",
            Some("not-a-jwt"),
            json!({}),
            401,
            "invalid_token",
            "not a JWT",
        ),
        (
            "credentials/info",
            Some(access.as_str()),
            json!({}),
            400,
            "invalid_request",
            "credentialID",
        ),
        (
            "credentials/info",
            Some(access.as_str()),
            json!({ "credentialID": "csc-unknown" }),
            400,
            "invalid_request",
            "not a credential of this user",
        ),
        (
            "credentials/authorize",
            Some(access.as_str()),
            json!({ "credentialID": credential, "numSignatures": 1, "hashes": [other], "hashAlgorithmOID": "1.3.14.3.2.26", "PIN": PIN }),
            400,
            "invalid_request",
            "SHA-1",
        ),
        (
            "credentials/authorize",
            Some(access.as_str()),
            json!({ "credentialID": credential, "numSignatures": 1, "hashes": [Base64::encode_string(b"short")], "hashAlgorithmOID": SHA256, "PIN": PIN }),
            400,
            "invalid_request",
            "octets",
        ),
        (
            "credentials/authorize",
            Some(access.as_str()),
            json!({ "credentialID": credential, "numSignatures": 2, "hashes": [other], "hashAlgorithmOID": SHA256, "PIN": PIN }),
            400,
            "invalid_request",
            "numSignatures",
        ),
        (
            "credentials/authorize",
            Some(access.as_str()),
            json!({ "credentialID": credential, "numSignatures": 1, "hashAlgorithmOID": SHA256, "PIN": PIN }),
            400,
            "invalid_request",
            "SCAL2",
        ),
        (
            "signatures/signHash",
            Some(access.as_str()),
            json!({ "credentialID": credential, "SAD": "sad-forged", "hashes": [other], "hashAlgorithmOID": SHA256, "signAlgo": ECDSA_SHA256 }),
            400,
            "invalid_request",
            "unknown",
        ),
        (
            "signatures/signHash",
            Some(access.as_str()),
            json!({ "credentialID": credential, "SAD": sad, "hashes": [other], "hashAlgorithmOID": SHA256, "signAlgo": "1.2.840.113549.1.1.11" }),
            400,
            "invalid_request",
            "signAlgo",
        ),
        (
            "signatures/signHash",
            Some(access.as_str()),
            json!({ "credentialID": credential, "hashes": [other], "hashAlgorithmOID": SHA256, "signAlgo": ECDSA_SHA256 }),
            400,
            "invalid_request",
            "SAD",
        ),
    ] {
        let (got, answer) = csc(&signing, method, token, body).await;
        assert_refused(got, &answer, status, error, words);
    }
    // A token of a client without the CSC scopes is not for this API.
    let plain_tokens = login(&instance, &plain, "openid", "&prompt=login").await;
    let (status, answer) = csc(
        &signing,
        "credentials/list",
        plain_tokens["access_token"].as_str(),
        json!({}),
    )
    .await;
    assert_refused(status, &answer, 401, "invalid_token", "aud");

    // Three wrong PINs lock the credential; the right one then does not help; an
    // operator unlocks it.
    for left in ["2 attempt", "1 attempt"] {
        let (status, answer) = csc(
            &signing,
            "credentials/authorize",
            Some(&access),
            authorize("97531", vec![other.clone()]),
        )
        .await;
        assert_refused(status, &answer, 400, "invalid_pin", left);
    }
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize("97531", vec![other.clone()]),
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("access_denied")),
        "{answer}"
    );
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![other.clone()]),
    )
    .await;
    assert_refused(status, &answer, 403, "access_denied", "locked");
    instance
        .ok(&["signing", "credential", "unlock", &credential])
        .await;
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![other.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    // Guesses sent all at once get no more tries: a check is reserved before the PIN
    // is compared, and those beyond the attempts left are turned away (busy, or
    // locked once the third wrong one is counted).
    let all_at_once = |pin: &'static str| {
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..6 {
            let (signing, access) = (signing.clone(), access.clone());
            let body = authorize(pin, vec![other.clone()]);
            calls.spawn(async move {
                csc(&signing, "credentials/authorize", Some(&access), body).await
            });
        }
        calls.join_all()
    };
    let answers = all_at_once("97531").await;
    let count = |status: u16, error: &str| {
        answers
            .iter()
            .filter(|(got, answer)| *got == status && answer["error"] == error)
            .count()
    };
    let (checked, denied, busy) = (
        count(400, "invalid_pin"),
        count(403, "access_denied"),
        count(503, "temporarily_unavailable"),
    );
    assert_eq!((checked, denied + busy), (2, 4), "{answers:?}");
    assert!(denied >= 1, "the third wrong PIN locks: {answers:?}");
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![other.clone()]),
    )
    .await;
    assert_refused(status, &answer, 403, "access_denied", "locked");
    instance
        .ok(&["signing", "credential", "unlock", &credential])
        .await;
    // The right PIN sent all at once never locks the credential: each call is
    // authorised or told to try again.
    let answers = all_at_once(PIN).await;
    assert!(
        answers.iter().all(|(status, answer)| *status == 200
            || (*status == 503 && answer["error"] == "temporarily_unavailable")),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![other.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");

    // A credential authorised at the provider (authorization_details, fresh login):
    // the access token itself covers the hash, once.
    let details = json!([{
        "type": "credential",
        "credentialID": credential,
        "documentDigests": [{ "hash": hash, "label": "Deed of gift" }],
        "hashAlgorithmOID": SHA256,
    }]);
    let tokens = login(
        &instance,
        &client,
        "openid%20credential",
        &format!("&authorization_details={}", encoded(&details.to_string())),
    )
    .await;
    let authorised = tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"))
        .to_owned();
    let by_token = |hashes: Vec<String>| json!({ "credentialID": credential, "hashes": hashes, "hashAlgorithmOID": SHA256, "signAlgo": ECDSA_SHA256 });
    let (status, answer) = csc(
        &signing,
        "signatures/signHash",
        Some(&authorised),
        by_token(vec![other.clone()]),
    )
    .await;
    assert_refused(status, &answer, 400, "invalid_request", "not authorised");
    let (status, answer) = csc(
        &signing,
        "signatures/signHash",
        Some(&authorised),
        by_token(vec![hash.clone()]),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = csc(
        &signing,
        "signatures/signHash",
        Some(&authorised),
        by_token(vec![hash.clone()]),
    )
    .await;
    assert_refused(status, &answer, 400, "invalid_request", "already used");

    // A suspended, then revoked certificate signs nothing: our responder says so
    // before the CA command returns.
    let serial = created["serial"].as_str().unwrap().to_owned();
    for (args, words) in [
        (
            vec!["ca", "suspend", "--serial", serial.as_str()],
            "suspended",
        ),
        (
            vec![
                "ca",
                "revoke",
                "--serial",
                serial.as_str(),
                "--reason",
                "keyCompromise",
            ],
            "revoked",
        ),
    ] {
        instance.ok(&args).await;
        let document = format!("after {words}");
        let (status, sad) = csc(
            &signing,
            "credentials/authorize",
            Some(&access),
            authorize(PIN, vec![b64_sha256(document.as_bytes())]),
        )
        .await;
        assert_eq!(status, 200, "{sad}");
        let (status, answer) = csc(
            &signing,
            "signatures/signHash",
            Some(&access),
            sign(
                sad["SAD"].as_str().unwrap(),
                vec![b64_sha256(document.as_bytes())],
            ),
        )
        .await;
        assert_refused(status, &answer, 403, "access_denied", words);
    }

    // Withdrawn for good: disabled, its key destroyed on the token (the certificate
    // was revoked above; withdrawing again is no error).
    for _ in 0..2 {
        let out = instance
            .ok(&["signing", "credential", "withdraw", &credential])
            .await;
        assert!(out.contains("withdrew"), "{out}");
    }
    let listed: Value = serde_json::from_str(
        &instance
            .ok(&[
                "signing",
                "credential",
                "list",
                "--national-id",
                NATIONAL_ID,
            ])
            .await,
    )
    .unwrap();
    assert_eq!(listed[0]["credential_id"], credential.as_str(), "{listed}");
    assert_eq!(listed[0]["status"], "disabled", "{listed}");
    let (status, answer) = csc(
        &signing,
        "credentials/authorize",
        Some(&access),
        authorize(PIN, vec![b64_sha256(b"after withdrawal")]),
    )
    .await;
    assert_refused(status, &answer, 403, "access_denied", "disabled");
    let listing = instance.token_objects();
    assert!(!listing.contains(&credential), "{listing}");

    // A token revoked at the provider (RFC 7009) is refused at once, not at expiry.
    let revoked = http()
        .post(format!("http://{}/revoke", instance.addresses.idp))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let (status, answer) = csc(&signing, "credentials/list", Some(&access), json!({})).await;
    assert_refused(status, &answer, 401, "invalid_token", "revoked");

    // The audit log has it all, and the chain is intact.
    let tail = instance.ok(&["audit", "tail", "-n", "80"]).await;
    for action in [
        "csc.credential.create",
        "csc.credential.authorize",
        "csc.credential.unlock",
        "csc.credential.withdraw",
        "csc.signature.sign_hash",
    ] {
        assert!(
            tail.contains(action),
            "{action} missing from the audit log: {tail}"
        );
    }
    instance.ok(&["audit", "verify"]).await;
}

/// On the embedded soft store a remote credential is refused: it is no QSCD.
async fn soft_store_keys_for_others_are_refused(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let init = command(&eid, &addresses, &["init"]).output().await.unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    std::fs::write(eid.dir.path().join("sign-pin"), format!("{PIN}\n")).unwrap();
    let output = command(
        &eid,
        &addresses,
        &[
            "signing",
            "credential",
            "create",
            "--national-id",
            NATIONAL_ID,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
            "--pin-file",
        ],
    )
    .arg(eid.dir.path().join("sign-pin"))
    .output()
    .await
    .unwrap();
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(said.contains("HSM") && said.contains("soft"), "{said}");
    // Nor an organisation's seal key.
    let output = command(&eid, &addresses, &super::seal::CREATE_SEAL)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let said = text(&output.stderr);
    assert!(
        said.contains("seal keys live on an HSM") && said.contains("soft"),
        "{said}"
    );
}

on_both_backends!(
    remote_signing_through_the_csc_api,
    soft_store_keys_for_others_are_refused
);
