//! The certificate authority through `eid`: the hierarchy, citizen certificates from
//! requests, and refusals, judged by openssl and pkilint.

use std::path::Path;

use eid_tests::{TestBackend, on_both_backends};

use super::{Eid, SoftHsmToken, assert_fails_with, text};

/// Runs an external judge; a missing judge fails the test (never skips it).
pub(crate) fn judge(program: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): deploy/test.sh installs the judges")
        })
}

/// `openssl verify` of `leaf` against the exported root and intermediate.
pub(crate) fn openssl_verifies(pki: &Path, intermediate: &str, leaf: &Path) {
    let root = pki.join("root.pem");
    let intermediate = pki.join(format!("{intermediate}.pem"));
    let output = judge(
        "openssl",
        &[
            "verify",
            "-x509_strict",
            "-CAfile",
            &root.display().to_string(),
            "-untrusted",
            &intermediate.display().to_string(),
            &leaf.display().to_string(),
        ],
    );
    assert!(
        output.status.success() && text(&output.stdout).contains(": OK"),
        "openssl verify {}: {}{}",
        leaf.display(),
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// pkilint finds nothing at WARNING or above (its exit code counts findings).
pub(crate) fn pkilint_clean(tool: &str, args: &[&str], file: &Path) {
    let mut all = args.to_vec();
    let file = file.display().to_string();
    all.extend(["-s", "WARNING", &file]);
    let output = judge(tool, &[&["lint"], &all[..]].concat());
    assert!(
        output.status.success(),
        "{tool} {all:?}: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A certificate's serial number as openssl prints it (upper-case hex).
/// What `openssl x509 -noout` prints of a PEM certificate with `print` (e.g. `-subject`).
fn openssl_x509(certificate: &Path, print: &[&str]) -> String {
    let path = certificate.display().to_string();
    let output = judge(
        "openssl",
        &[&["x509", "-in", path.as_str(), "-noout"][..], print].concat(),
    );
    text(&output.stdout)
}

pub(crate) fn openssl_serial(certificate: &Path) -> String {
    openssl_x509(certificate, &["-serial"])
        .trim()
        .trim_start_matches("serial=")
        .to_owned()
}

/// An address nothing listens on now: for a server and the CLI to agree on one.
/// A loopback address with a port free now, for a server started later. The port is
/// below Linux's ephemeral range (32768-60999): a port the kernel handed out for
/// port 0 and that was let go could be taken by any outgoing connection before the
/// server binds it (seen in CI: "Address already in use" on the ID-card listener).
/// Ports are taken in turn from a random start, so parallel tests do not meet.
pub(crate) fn free_address() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let mut seed = [0u8; 4];
        getrandom::fill(&mut seed).unwrap();
        let _ = NEXT.compare_exchange(
            u32::MAX,
            u32::from_le_bytes(seed) % SPAN,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }
    loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let address = format!("127.0.0.1:{port}");
        if std::net::TcpListener::bind(&address).is_ok() {
            return address;
        }
    }
}

pub(crate) fn openssl_csr(dir: &Path, name: &str, key_args: &[&str]) -> String {
    let key = dir.join(format!("{name}.key"));
    let csr = dir.join(format!("{name}.csr"));
    let generated = judge(
        "openssl",
        &[
            &["genpkey"],
            key_args,
            &["-out", &key.display().to_string()],
        ]
        .concat(),
    );
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let request = judge(
        "openssl",
        &[
            "req",
            "-new",
            "-key",
            &key.display().to_string(),
            "-subj",
            "/CN=anything",
            "-out",
            &csr.display().to_string(),
        ],
    );
    assert!(request.status.success(), "{}", text(&request.stderr));
    csr.display().to_string()
}

const CITIZEN: [&str; 6] = [
    "--national-id",
    "3900101123456",
    "--given-name",
    "Mary",
    "--surname",
    "Seacole",
];

async fn issue(
    eid: &Eid,
    config: &str,
    profile: &str,
    csr: &str,
    extra: &[&str],
) -> std::process::Output {
    let args = [
        &[
            "--config",
            config,
            "ca",
            "issue",
            "--profile",
            profile,
            "--csr",
            csr,
        ][..],
        &CITIZEN[..],
        extra,
    ]
    .concat();
    eid.command(&args)
        .env("SOFTHSM2_CONF", eid.dir.path().join("softhsm2.conf"))
        .output()
        .await
        .unwrap()
}

/// A SoftHSM2 "card" (class smartcard, PIN 48213) with the two citizen key pairs
/// generated on it: the token, the config file opening it, and a request (CSR file)
/// signed by its signing key.
async fn card_with_keys(eid: &Eid, dir: &Path, label: &str) -> (SoftHsmToken, String, String) {
    let token = SoftHsmToken::create(dir, label, "48213");
    std::fs::write(dir.join("card-pin"), "48213\n").unwrap();
    let card = dir.join(format!("{label}.toml"));
    std::fs::write(
        &card,
        format!(
            "[keys]\nbackend = \"pkcs11\"\n[keys.pkcs11]\nmodule = \"{}\"\ntoken_label = \"{label}\"\npin_file = \"card-pin\"\nclass = \"smartcard\"\n",
            token.module
        ),
    )
    .unwrap();
    let card = card.display().to_string();
    let generated = token
        .run(eid, Path::new(&card), &["keys", "generate-citizen"])
        .await;
    assert!(generated.status.success(), "{}", text(&generated.stderr));
    let pin_file = dir.join("card-pin").display().to_string();
    let request = token
        .run(
            eid,
            Path::new(&card),
            &[
                "keys",
                "csr",
                "--label",
                "citizen-signing",
                "--pin-file",
                &pin_file,
            ],
        )
        .await;
    assert!(request.status.success(), "{}", text(&request.stderr));
    let sign_csr = dir.join(format!("{label}-sign.csr"));
    std::fs::write(&sign_csr, &request.stdout).unwrap();
    (token, card, sign_csr.display().to_string())
}

async fn citizen_certificates_pass_openssl_and_pkilint(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    // A public URL, as production has: ETSI profiles refuse internal addresses.
    let config = dir.join("eid.toml");
    std::fs::write(&config, "[ca]\npublic_url = \"http://pki.eid.gov.tt\"\n").unwrap();
    let config = config.display().to_string();
    let init = eid.run(&["--config", &config, "init"]).await;
    assert!(init.status.success(), "{}", text(&init.stderr));
    let pki = dir.join("pki");
    let export = eid
        .run(&[
            "--config",
            &config,
            "ca",
            "export",
            "--out",
            &pki.display().to_string(),
        ])
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    for role in [
        "root",
        "citizen-auth-ca",
        "citizen-sign-ca",
        "ocsp-citizen-auth",
        "ocsp-citizen-sign",
        "org-seal-ca",
        "ocsp-org-seal",
        "tsa",
        "idp-tls",
        "desk-tls",
    ] {
        pkilint_clean("lint_pkix_cert", &[], &pki.join(format!("{role}.pem")));
    }
    openssl_verifies(&pki, "citizen-auth-ca", &pki.join("ocsp-citizen-auth.pem"));

    // Authentication certificate from an openssl request.
    let csr = openssl_csr(
        dir,
        "auth",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let issued = issue(&eid, &config, "citizen-auth", &csr, &[]).await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let auth = dir.join("auth.pem");
    std::fs::write(&auth, &issued.stdout).unwrap();
    openssl_verifies(&pki, "citizen-auth-ca", &auth);
    pkilint_clean(
        "lint_etsi_cert",
        &["-t", "NCP-NATURAL-PERSON-CERTIFICATE"],
        &auth,
    );
    let subject = openssl_x509(&auth, &["-subject"]);
    assert!(
        subject.contains("serialNumber = PNOTT-3900101123456"),
        "{}",
        subject
    );

    // Qualified signature certificate for a key generated on a citizen card.
    let (token, card, sign_csr) = card_with_keys(&eid, dir, "citizen-card").await;
    let issued = issue(
        &eid,
        &config,
        "citizen-sign",
        &sign_csr,
        &["--key-store", &card, "--key-label", "citizen-signing"],
    )
    .await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let sign = dir.join("sign.pem");
    std::fs::write(&sign, &issued.stdout).unwrap();
    openssl_verifies(&pki, "citizen-sign-ca", &sign);
    pkilint_clean(
        "lint_etsi_cert",
        &["-t", "QCP-N-QSCD-EIDAS-FINAL-CERTIFICATE"],
        &sign,
    );

    // An organisation's qualified seal certificate (EN 319 412-3) for a key on a QSCD.
    let (_seal_device, device, seal_csr) = card_with_keys(&eid, dir, "seal-device").await;
    let issued = eid
        .command(&[
            "--config",
            &config,
            "ca",
            "issue",
            "--profile",
            "org-seal",
            "--csr",
            &seal_csr,
            "--organisation",
            "Ministry of Health",
            "--organisation-id",
            "NTRTT-4021877",
            "--seal-name",
            "Ministry of Health records seal",
            "--key-store",
            &device,
            "--key-label",
            "citizen-signing",
        ])
        .env("SOFTHSM2_CONF", eid.dir.path().join("softhsm2.conf"))
        .output()
        .await
        .unwrap();
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let seal = dir.join("seal.pem");
    std::fs::write(&seal, &issued.stdout).unwrap();
    openssl_verifies(&pki, "org-seal-ca", &seal);
    pkilint_clean("lint_etsi_cert", &["-d", "-o"], &seal);
    let subject = openssl_x509(&seal, &["-subject"]);
    assert!(
        subject.contains("organizationIdentifier = NTRTT-4021877"),
        "{subject}"
    );

    // The same request again: the same certificate (a retry after a lost answer),
    // audited as repeated. (The same key for other names is refused: see the RA API.)
    let again = issue(&eid, &config, "citizen-auth", &csr, &[]).await;
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(text(&again.stdout), std::fs::read_to_string(&auth).unwrap());

    // Refusals, each in its own words; the audit chain stays intact.
    let no_evidence = issue(&eid, &config, "citizen-sign", &csr, &[]).await;
    assert_fails_with(&no_evidence, &["qualified signature creation device"]);
    let auth_request = token
        .run(
            &eid,
            Path::new(&card),
            &["keys", "csr", "--label", "citizen-authentication"],
        )
        .await;
    let auth_csr = dir.join("card-auth.csr");
    std::fs::write(&auth_csr, &auth_request.stdout).unwrap();
    let not_qscd = issue(
        &eid,
        &config,
        "citizen-sign",
        &auth_csr.display().to_string(),
        &[
            "--key-store",
            &card,
            "--key-label",
            "citizen-authentication",
        ],
    )
    .await;
    assert_fails_with(&not_qscd, &["not on a qualified signature creation device"]);
    let mismatch = issue(
        &eid,
        &config,
        "citizen-sign",
        &auth_csr.display().to_string(),
        &["--key-store", &card, "--key-label", "citizen-signing"],
    )
    .await;
    assert_fails_with(&mismatch, &["different key"]);
    let weak = openssl_csr(
        dir,
        "weak",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    assert_fails_with(
        &issue(&eid, &config, "citizen-auth", &weak, &[]).await,
        &["3072 to 4096 bits"],
    );
    let unknown = issue(&eid, &config, "citizen-vip", &csr, &[]).await;
    assert_fails_with(&unknown, &["unknown profile \"citizen-vip\""]);
    let mut forged = std::fs::read_to_string(&csr).unwrap();
    // Flip one base64 character in the signature near the end of the PEM.
    let at = forged.rfind("-----END").unwrap() - 8;
    let flipped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, flipped);
    let forged_path = dir.join("forged.csr");
    std::fs::write(&forged_path, forged).unwrap();
    let forged = issue(
        &eid,
        &config,
        "citizen-auth",
        &forged_path.display().to_string(),
        &[],
    )
    .await;
    assert_fails_with(&forged, &["bad request"]);
    let garbage = dir.join("garbage.csr");
    std::fs::write(&garbage, b"\x30\x03\x02\x01").unwrap();
    let garbage = issue(
        &eid,
        &config,
        "citizen-auth",
        &garbage.display().to_string(),
        &[],
    )
    .await;
    assert_fails_with(&garbage, &["not a PKCS#10 request"]);
    // A seal certificate is an organisation's, for a key on a QSCD.
    let citizen_seal = issue(&eid, &config, "org-seal", &csr, &[]).await;
    assert_fails_with(&citizen_seal, &["qualified signature creation device"]);
    let seal_args = |identifier: &'static str| {
        [
            "--config",
            config.as_str(),
            "ca",
            "issue",
            "--profile",
            "org-seal",
            "--csr",
            weak.as_str(),
            "--organisation",
            "Ministry of Health",
            "--organisation-id",
            identifier,
            "--seal-name",
            "Ministry of Health records seal",
        ]
    };
    let bad_identifier = eid
        .command(&seal_args("TT-4021877"))
        .output()
        .await
        .unwrap();
    assert_fails_with(&bad_identifier, &["EN 319 412-1"]);
    let both = eid
        .command(&[&seal_args("NTRTT-4021877")[..], &CITIZEN[..]].concat())
        .output()
        .await
        .unwrap();
    assert_fails_with(&both, &["cannot be used with"]);

    let tail = eid
        .run(&["--config", &config, "audit", "tail", "-n", "40"])
        .await;
    let tail = text(&tail.stdout);
    assert_eq!(
        tail.matches("certificate.issue success").count(),
        4,
        "{tail}"
    );
    assert_eq!(tail.matches("\"repeated\":true").count(), 1, "{tail}");
    assert!(
        tail.matches("certificate.issue denied").count() >= 7,
        "{tail}"
    );
    assert_eq!(
        tail.matches("ca.certificate.create success").count(),
        10,
        "{tail}"
    );
    let verify = eid.run(&["--config", &config, "audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

async fn ca_certificates_are_published_at_their_ca_issuers_url(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let server = eid.serve(&["ca"]).await;
    let pki = eid.dir.path().join("pki");
    let export = eid
        .run(&["ca", "export", "--out", &pki.display().to_string()])
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    let url = &server.urls["ca"];
    for role in ["root", "citizen-auth-ca", "citizen-sign-ca", "tsa"] {
        let response = reqwest::get(format!("{url}/ca/{role}.crt")).await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/pkix-cert");
        let served = response.bytes().await.unwrap();
        let exported = std::fs::read_to_string(pki.join(format!("{role}.pem"))).unwrap();
        let (_, der) = der::pem::decode_vec(exported.as_bytes()).unwrap();
        assert_eq!(served.as_ref(), der.as_slice(), "{role}");
    }
    let missing = reqwest::get(format!("{url}/ca/nobody.crt")).await.unwrap();
    assert_eq!(missing.status(), 404);
    server.stop().await;
}

async fn issuance_api_serves_only_the_registration_authority(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    let token = "ra-token-0123456789abcdef0123456789abcdef";
    std::fs::write(dir.join("ra-token"), format!("{token}\n")).unwrap();
    let config = dir.join("eid.toml");
    std::fs::write(
        &config,
        "[[ca.issuance_client]]\nname = \"enrolment\"\ntoken_file = \"ra-token\"\n",
    )
    .unwrap();
    let server = {
        let mut command = eid.command(&["--config", &config.display().to_string(), "serve", "ca"]);
        command.stdout(std::process::Stdio::piped());
        super::Server::start(command, 1).await
    };
    let url = format!("{}/api/v1/certificates", server.urls["ca"]);
    let csr = openssl_csr(
        dir,
        "api",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
    );
    let body = serde_json::json!({
        "profile": "citizen-auth",
        "csr": std::fs::read_to_string(&csr).unwrap(),
        "national_id": "3900101123456",
        "given_name": "Mary",
        "surname": "Seacole",
    });
    let http = reqwest::Client::new();
    let anonymous = http.post(&url).json(&body).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(anonymous.headers()["www-authenticate"], "Bearer");
    let wrong = http
        .post(&url)
        .bearer_auth("not-the-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    let issued = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), 201);
    let issued: serde_json::Value = issued.json().await.unwrap();
    let pem = issued["certificate"].as_str().unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(issued["profile"], "citizen-auth");

    // The same request again (a retry whose answer was lost): 200 and the same
    // certificate, not a second one. The same key for other names: refused.
    let again = http
        .post(&url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["certificate"], issued["certificate"]);
    assert_eq!(again["serial"], issued["serial"]);
    let mut renamed = body.clone();
    renamed["surname"] = "Grant".into();
    let other = http
        .post(&url)
        .bearer_auth(token)
        .json(&renamed)
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 422);
    assert_eq!(other.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = other.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("already certified"),
        "{problem}"
    );
    let malformed = http
        .post(&url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body("{\"profile\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);
    let mut unknown_field = body.clone();
    unknown_field["colour"] = serde_json::json!("blue");
    let unknown = http
        .post(&url)
        .bearer_auth(token)
        .json(&unknown_field)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 400);
    assert!(unknown.text().await.unwrap().contains("colour"));

    // The RA's listing and status changes: token required, bad input in its own terms.
    let serial = issued["serial"].as_str().unwrap();
    let listed = |national_id: &str| {
        http.get(&url)
            .query(&[("national_id", national_id)])
            .bearer_auth(token)
            .send()
    };
    let list: serde_json::Value = listed("3900101123456").await.unwrap().json().await.unwrap();
    assert_eq!(list["certificates"][0]["serial"], serial);
    assert_eq!(list["certificates"][0]["status"], "active");
    assert_eq!(listed("12").await.unwrap().status(), 400);
    let change = |serial: String, body: serde_json::Value, bearer: Option<&'static str>| {
        let mut request = http
            .post(format!("{url}/{serial}/status"))
            .header("x-eid-actor", "staff:ann@desk:desk-1")
            .json(&body);
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        request.send()
    };
    let hold = serde_json::json!({ "change": "certificateHold" });
    let anonymous = change(serial.to_owned(), hold.clone(), None).await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let bad_reason = change(
        serial.to_owned(),
        serde_json::json!({ "change": "lostIt" }),
        Some(token),
    )
    .await
    .unwrap();
    assert_eq!(bad_reason.status(), 400);
    assert!(bad_reason.text().await.unwrap().contains("lostIt"));
    let unknown_serial = change("7f01".into(), hold.clone(), Some(token))
        .await
        .unwrap();
    assert_eq!(unknown_serial.status(), 404);
    let resume = serde_json::json!({ "change": "resume" });
    let not_held = change(serial.to_owned(), resume.clone(), Some(token))
        .await
        .unwrap();
    assert_eq!(not_held.status(), 409);
    let held = change(serial.to_owned(), hold, Some(token)).await.unwrap();
    assert_eq!(held.status(), 200);
    let list: serde_json::Value = listed("3900101123456").await.unwrap().json().await.unwrap();
    assert_eq!(list["certificates"][0]["status"], "suspended");
    let resumed = change(serial.to_owned(), resume, Some(token))
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    server.stop().await;

    let tail = text(
        &eid.run(&["--config", &config.display().to_string(), "audit", "tail"])
            .await
            .stdout,
    );
    assert!(
        tail.contains("certificate.issue success") && tail.contains("by service:enrolment"),
        "{tail}"
    );
    assert!(!tail.contains(token));
}

/// `openssl ocsp` against the running responder: the status line it prints for `leaf`
/// (and "Response verify OK" required).
fn openssl_ocsp_status(dir: &Path, url: &str, leaf: &Path, extra: &[&str]) -> String {
    let pki = dir.join("pki");
    let chain = dir.join("chain.pem");
    let chain_text = [
        std::fs::read_to_string(pki.join("root.pem")).unwrap(),
        std::fs::read_to_string(pki.join("citizen-auth-ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(&chain, chain_text).unwrap();
    let issuer = pki.join("citizen-auth-ca.pem").display().to_string();
    let leaf = leaf.display().to_string();
    let chain = chain.display().to_string();
    let output = judge(
        "openssl",
        &[
            &["ocsp", "-issuer", &issuer][..],
            extra,
            &["-cert", &leaf, "-url", url, "-CAfile", &chain],
        ]
        .concat(),
    );
    let out = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(out.contains("Response verify OK"), "openssl ocsp: {out}");
    out.lines()
        .find(|l| l.starts_with(&format!("{leaf}: ")))
        .map(|l| l.trim_start_matches(&format!("{leaf}: ")).to_owned())
        .unwrap_or_else(|| panic!("no status line in {out}"))
}

/// openssl's text of the PEM CRL `pem`, whose signature it must verify against
/// `ca_file`.
fn openssl_crl_text(pem: &str, ca_file: &Path) -> String {
    let listed = judge(
        "openssl",
        &[
            "crl",
            "-in",
            pem,
            "-noout",
            "-text",
            "-CAfile",
            &ca_file.display().to_string(),
        ],
    );
    let listed = format!("{}{}", text(&listed.stdout), text(&listed.stderr));
    assert!(listed.contains("verify OK"), "{pem}: {listed}");
    listed
}

/// Fetches `/crl/{file}` from the running CA, checks its HTTP headers and signature
/// (`openssl crl -CAfile`, against `ca_file`) and returns its PEM path and the text
/// openssl prints of it.
async fn fetch_crl(dir: &Path, ca_url: &str, file: &str, ca_file: &Path) -> (String, String) {
    let response = reqwest::get(format!("{ca_url}/crl/{file}")).await.unwrap();
    assert_eq!(response.status(), 200, "{file}");
    assert_eq!(response.headers()["content-type"], "application/pkix-crl");
    let der = dir.join(format!("{file}.der"));
    std::fs::write(&der, response.bytes().await.unwrap()).unwrap();
    let pem = dir.join(format!("{file}.pem")).display().to_string();
    let converted = judge(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &der.display().to_string(),
            "-out",
            &pem,
        ],
    );
    assert!(converted.status.success(), "{file}");
    let listed = openssl_crl_text(&pem, ca_file);
    (pem, listed)
}

/// `openssl verify` of `leaf` against the exported chain with `crls`, extra flags
/// first: its whole output.
fn openssl_verify_with_crls(dir: &Path, flags: &[&str], crls: &[&str], leaf: &Path) -> String {
    let chain = dir.join("chain.pem").display().to_string();
    let leaf = leaf.display().to_string();
    let mut args = vec!["verify"];
    args.extend(flags);
    for crl in crls {
        args.extend(["-CRLfile", crl]);
    }
    args.extend(["-CAfile", &chain, &leaf]);
    let output = judge("openssl", &args);
    format!("{}{}", text(&output.stdout), text(&output.stderr))
}

async fn revocation_reaches_ocsp_and_the_crl(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    assert!(eid.run(&["init"]).await.status.success());
    let pki = dir.join("pki").display().to_string();
    assert!(
        eid.run(&["ca", "export", "--out", &pki])
            .await
            .status
            .success()
    );
    let mut leaves = Vec::new();
    for name in ["first", "second"] {
        let csr = openssl_csr(
            dir,
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let issued = eid
            .run(
                &[
                    &["ca", "issue", "--profile", "citizen-auth", "--csr", &csr][..],
                    &CITIZEN[..],
                ]
                .concat(),
            )
            .await;
        assert!(issued.status.success(), "{}", text(&issued.stderr));
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &issued.stdout).unwrap();
        let serial = openssl_serial(&path);
        leaves.push((path, serial));
    }
    // One concrete address for the server and the CLI, so `eid ca revoke` can reach
    // the running server as it would in production.
    let address = free_address();
    let server = {
        let mut command = eid.command(&["serve", "ca"]);
        command
            .env("EID_CA_LISTEN", &address)
            .stdout(std::process::Stdio::piped());
        super::Server::start(command, 1).await
    };
    let url = format!("{}/ocsp/citizen-auth-ca", server.urls["ca"]);
    let (first, first_serial) = &leaves[0];
    let (second, _) = &leaves[1];
    assert_eq!(openssl_ocsp_status(dir, &url, first, &[]), "good");
    assert_eq!(
        openssl_ocsp_status(dir, &url, first, &["-sha256", "-no_nonce"]),
        "good"
    );

    // Through the CLI (another process): the server answers revoked at once.
    let revoked = eid
        .command(&[
            "ca",
            "revoke",
            "--serial",
            first_serial,
            "--reason",
            "keyCompromise",
        ])
        .env("EID_CA_LISTEN", &address)
        .output()
        .await
        .unwrap();
    assert!(
        text(&revoked.stderr).is_empty() || !text(&revoked.stderr).contains("warning"),
        "{}",
        text(&revoked.stderr)
    );
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    // No pause: the command returns only after the running server has dropped the
    // answers the revocation made stale.
    let response = dir.join("revoked.ocsp").display().to_string();
    assert_eq!(
        openssl_ocsp_status(dir, &url, first, &["-no_nonce", "-respout", &response]),
        "revoked"
    );
    pkilint_clean("lint_ocsp_response", &[], Path::new(&response));
    let response = dir.join("good.ocsp").display().to_string();
    assert_eq!(
        openssl_ocsp_status(dir, &url, second, &["-respout", &response]),
        "good"
    );
    pkilint_clean("lint_ocsp_response", &[], Path::new(&response));

    let crl = reqwest::get(format!("{}/crl/citizen-auth-ca.crl", server.urls["ca"]))
        .await
        .unwrap();
    assert_eq!(crl.status(), 200);
    assert_eq!(crl.headers()["content-type"], "application/pkix-crl");
    let crl_der = dir.join("crl.der");
    std::fs::write(&crl_der, crl.bytes().await.unwrap()).unwrap();
    let crl_pem = dir.join("crl.pem").display().to_string();
    let converted = judge(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            &crl_der.display().to_string(),
            "-out",
            &crl_pem,
        ],
    );
    assert!(converted.status.success());
    let listed = openssl_crl_text(&crl_pem, &dir.join("chain.pem"));
    assert!(
        listed.contains(&format!("Serial Number: {first_serial}")),
        "{listed}"
    );
    assert!(listed.contains("Key Compromise"), "{listed}");
    pkilint_clean(
        "lint_crl",
        &["-t", "CRL", "-p", "PKIX"],
        Path::new(&crl_pem),
    );
    let check = judge(
        "openssl",
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            &crl_pem,
            "-CAfile",
            &dir.join("chain.pem").display().to_string(),
            &first.display().to_string(),
        ],
    );
    assert!(
        text(&check.stdout).contains("certificate revoked")
            || text(&check.stderr).contains("certificate revoked")
    );
    // The root publishes its CRL (the authority revocation list) at the URL in the
    // issuing CA's certificate: with it, openssl checks every level of the chain.
    let ca_url = &server.urls["ca"];
    let pki_dir = dir.join("pki");
    let (root_crl, root_listed) =
        fetch_crl(dir, ca_url, "root.crl", &pki_dir.join("root.pem")).await;
    assert!(
        root_listed.contains("No Revoked Certificates"),
        "{root_listed}"
    );
    pkilint_clean(
        "lint_crl",
        &["-t", "ARL", "-p", "PKIX"],
        Path::new(&root_crl),
    );
    let issuing_ca = openssl_x509(
        &pki_dir.join("citizen-auth-ca.pem"),
        &["-ext", "crlDistributionPoints"],
    );
    assert!(issuing_ca.contains("/crl/root.crl"), "{}", issuing_ca);
    let all_levels = ["-crl_check_all"];
    let crls = [root_crl.as_str(), crl_pem.as_str()];
    let out = openssl_verify_with_crls(dir, &all_levels, &crls, second);
    assert!(out.contains(": OK"), "{out}");
    let out = openssl_verify_with_crls(dir, &all_levels, &crls, first);
    assert!(out.contains("certificate revoked"), "{out}");
    // The delta CRL the leaf's freshestCRL names; with full CRLs re-issued on every
    // change (the default), it lists nothing the full CRL does not.
    let leaf_text = openssl_x509(second, &["-text"]);
    assert!(
        leaf_text.contains("/crl/citizen-auth-ca-delta.crl"),
        "{}",
        leaf_text
    );
    let (delta, delta_listed) = fetch_crl(
        dir,
        ca_url,
        "citizen-auth-ca-delta.crl",
        &dir.join("chain.pem"),
    )
    .await;
    assert!(
        delta_listed.contains("Delta CRL Indicator"),
        "{delta_listed}"
    );
    pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], Path::new(&delta));
    let missing = reqwest::get(format!("{ca_url}/crl/root-delta.crl"))
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Bad input, in the protocol's own terms; nothing changes.
    let http = reqwest::Client::new();
    let garbage = http
        .post(&url)
        .body(vec![0x30, 0x82, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 200);
    assert_eq!(
        garbage.headers()["content-type"],
        "application/ocsp-response"
    );
    let garbage_path = dir.join("garbage.der");
    std::fs::write(&garbage_path, garbage.bytes().await.unwrap()).unwrap();
    let parsed = judge(
        "openssl",
        &[
            "ocsp",
            "-respin",
            &garbage_path.display().to_string(),
            "-resp_text",
            "-noverify",
        ],
    );
    assert!(
        format!("{}{}", text(&parsed.stdout), text(&parsed.stderr)).contains("malformedrequest"),
        "{}{}",
        text(&parsed.stdout),
        text(&parsed.stderr)
    );
    let resume = eid.run(&["ca", "resume", "--serial", first_serial]).await;
    assert_fails_with(&resume, &["not suspended", "revoked for good"]);
    let unknown = eid
        .run(&[
            "ca",
            "revoke",
            "--serial",
            "7fffffffffffffff",
            "--reason",
            "keyCompromise",
        ])
        .await;
    assert_fails_with(&unknown, &["no certificate with serial 7fffffffffffffff"]);
    let bad_reason = eid
        .run(&[
            "ca",
            "revoke",
            "--serial",
            first_serial,
            "--reason",
            "lostIt",
        ])
        .await;
    assert_fails_with(&bad_reason, &["not an RFC 5280 CRLReason"]);
    assert_eq!(openssl_ocsp_status(dir, &url, first, &[]), "revoked");
    server.stop().await;
    let verify = eid.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// With full CRLs on their schedule only (`crl_full_on_change = false`, for national
/// scale), status changes reach relying parties through delta CRLs: openssl, given
/// the full CRL and the delta, refuses the revoked certificate and accepts the one
/// taken off hold again (removeFromCRL).
async fn delta_crls_carry_changes_between_full_crls(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    let config = crate::write_config(&eid, "[ca]\ncrl_full_on_change = false\n").await;
    let run = |args: Vec<String>| {
        let eid = &eid;
        let config = config.clone();
        async move {
            let args: Vec<&str> = ["--config", config.as_str()]
                .into_iter()
                .chain(args.iter().map(String::as_str))
                .collect();
            eid.run(&args).await
        }
    };
    let owned = |args: &[&str]| args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
    assert!(run(owned(&["init"])).await.status.success());
    let pki = dir.join("pki");
    let export = run(owned(&[
        "ca",
        "export",
        "--out",
        &pki.display().to_string(),
    ]))
    .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    std::fs::write(
        dir.join("chain.pem"),
        [
            std::fs::read_to_string(pki.join("root.pem")).unwrap(),
            std::fs::read_to_string(pki.join("citizen-auth-ca.pem")).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let mut leaves = Vec::new();
    for name in ["held", "compromised", "untouched"] {
        let csr = openssl_csr(
            dir,
            name,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        );
        let issued = run(owned(
            &[
                &["ca", "issue", "--profile", "citizen-auth", "--csr", &csr][..],
                &CITIZEN[..],
            ]
            .concat(),
        ))
        .await;
        assert!(issued.status.success(), "{}", text(&issued.stderr));
        let path = dir.join(format!("{name}.pem"));
        std::fs::write(&path, &issued.stdout).unwrap();
        let serial = openssl_serial(&path);
        leaves.push((path, serial));
    }
    let [
        (held, held_serial),
        (compromised, compromised_serial),
        (untouched, _),
    ] = &leaves[..]
    else {
        unreachable!()
    };
    let crl = run(owned(&["ca", "crl"])).await;
    assert!(crl.status.success(), "{}", text(&crl.stderr));
    let address = free_address();
    let server = {
        let mut command = eid.command(&["--config", &config, "serve", "ca"]);
        command
            .env("EID_CA_LISTEN", &address)
            .stdout(std::process::Stdio::piped());
        super::Server::start(command, 1).await
    };
    let ca_url = server.urls["ca"].clone();
    let chain = dir.join("chain.pem");
    let (full, _) = fetch_crl(dir, &ca_url, "citizen-auth-ca.crl", &chain).await;
    for (serial, change) in [
        (
            held_serial,
            vec!["ca", "suspend", "--serial", held_serial.as_str()],
        ),
        (
            compromised_serial,
            vec![
                "ca",
                "revoke",
                "--serial",
                compromised_serial.as_str(),
                "--reason",
                "keyCompromise",
            ],
        ),
    ] {
        let changed = eid
            .command(&[&["--config", config.as_str()][..], &change[..]].concat())
            .env("EID_CA_LISTEN", &address)
            .output()
            .await
            .unwrap();
        assert!(
            changed.status.success(),
            "{serial}: {}",
            text(&changed.stderr)
        );
    }
    // The full CRL is the one from before the changes; the delta carries them.
    let (full_again, full_listed) = fetch_crl(dir, &ca_url, "citizen-auth-ca.crl", &chain).await;
    assert_eq!(
        std::fs::read(&full).unwrap(),
        std::fs::read(&full_again).unwrap()
    );
    assert!(
        full_listed.contains("No Revoked Certificates"),
        "{full_listed}"
    );
    let (delta, listed) = fetch_crl(dir, &ca_url, "citizen-auth-ca-delta.crl", &chain).await;
    assert!(listed.contains("Delta CRL Indicator"), "{listed}");
    for needle in [
        held_serial.as_str(),
        "Certificate Hold",
        compromised_serial.as_str(),
        "Key Compromise",
    ] {
        assert!(listed.contains(needle), "{needle} missing from {listed}");
    }
    pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], Path::new(&delta));
    let with_deltas = ["-crl_check", "-use_deltas"];
    let crls = [full.as_str(), delta.as_str()];
    let out = openssl_verify_with_crls(dir, &with_deltas, &crls, compromised);
    assert!(out.contains("certificate revoked"), "{out}");
    let out = openssl_verify_with_crls(dir, &with_deltas, &crls, held);
    assert!(out.contains("certificate revoked"), "{out}");
    let out = openssl_verify_with_crls(dir, &with_deltas, &crls, untouched);
    assert!(out.contains(": OK"), "{out}");

    // Found again: the next delta takes it off (removeFromCRL).
    let resumed = eid
        .command(&["--config", &config, "ca", "resume", "--serial", held_serial])
        .env("EID_CA_LISTEN", &address)
        .output()
        .await
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    let (delta, listed) = fetch_crl(dir, &ca_url, "citizen-auth-ca-delta.crl", &chain).await;
    assert!(listed.contains("Remove From CRL"), "{listed}");
    let crls = [full.as_str(), delta.as_str()];
    let out = openssl_verify_with_crls(dir, &with_deltas, &crls, held);
    assert!(out.contains(": OK"), "{out}");
    let out = openssl_verify_with_crls(dir, &with_deltas, &crls, compromised);
    assert!(out.contains("certificate revoked"), "{out}");
    server.stop().await;
    let verify = run(owned(&["audit", "verify"])).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// An issuing CA revoked by the operator: the root's CRL lists it (openssl and
/// pkilint judge it), `openssl verify -crl_check_all` then refuses a citizen's
/// certificate under it that was good a moment before, and the revoked CA issues
/// nothing more; the root, a second revocation and a hold are refused.
async fn a_revoked_issuing_ca_is_on_the_roots_crl_and_issues_nothing(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    assert!(eid.run(&["init"]).await.status.success());
    let pki = dir.join("pki");
    let exported = eid
        .run(&["ca", "export", "--out", &pki.display().to_string()])
        .await;
    assert!(exported.status.success());
    let key = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];
    let citizen_auth = |csr: String| {
        let eid = &eid;
        async move {
            eid.run(
                &[
                    &["ca", "issue", "--profile", "citizen-auth", "--csr", &csr][..],
                    &CITIZEN[..],
                ]
                .concat(),
            )
            .await
        }
    };
    let issued = citizen_auth(openssl_csr(dir, "before", &key)).await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, &issued.stdout).unwrap();
    let crls = dir.join("crls");
    let crl_files = |crls: &Path| {
        ["root.crl", "citizen-auth-ca.crl"].map(|file| {
            let pem = crls.join(format!("{file}.pem")).display().to_string();
            let converted = judge(
                "openssl",
                &[
                    "crl",
                    "-inform",
                    "DER",
                    "-in",
                    &crls.join(file).display().to_string(),
                    "-out",
                    &pem,
                ],
            );
            assert!(converted.status.success(), "{}", text(&converted.stderr));
            pem
        })
    };
    let published = eid
        .run(&["ca", "crl", "--out", &crls.display().to_string()])
        .await;
    assert!(published.status.success(), "{}", text(&published.stderr));
    let before = crl_files(&crls);
    // The chain openssl_verify_with_crls trusts.
    let chain = [
        std::fs::read_to_string(pki.join("root.pem")).unwrap(),
        std::fs::read_to_string(pki.join("citizen-auth-ca.pem")).unwrap(),
    ]
    .concat();
    std::fs::write(dir.join("chain.pem"), chain).unwrap();
    let out = openssl_verify_with_crls(
        dir,
        &["-crl_check_all"],
        &[before[0].as_str(), before[1].as_str()],
        &leaf,
    );
    assert!(out.contains(": OK"), "{out}");

    let revoke = |role: &str, reason: &str| {
        let (eid, role, reason) = (&eid, role.to_owned(), reason.to_owned());
        async move {
            eid.run(&["ca", "revoke-ca", "--role", &role, "--reason", &reason])
                .await
        }
    };
    let revoked = revoke("citizen-auth-ca", "cACompromise").await;
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    assert!(
        text(&revoked.stdout).contains("root's CRL"),
        "{}",
        text(&revoked.stdout)
    );
    let serial = openssl_serial(&pki.join("citizen-auth-ca.pem"));
    let published = eid
        .run(&["ca", "crl", "--out", &crls.display().to_string()])
        .await;
    assert!(published.status.success(), "{}", text(&published.stderr));
    let after = crl_files(&crls);
    let root_text = openssl_crl_text(&after[0], &pki.join("root.pem"));
    assert!(
        root_text.contains(&format!("Serial Number: {serial}")),
        "{serial}: {root_text}"
    );
    assert!(root_text.contains("CA Compromise"), "{root_text}");
    pkilint_clean(
        "lint_crl",
        &["-t", "ARL", "-p", "PKIX"],
        Path::new(&after[0]),
    );
    let out = openssl_verify_with_crls(
        dir,
        &["-crl_check_all"],
        &[after[0].as_str(), after[1].as_str()],
        &leaf,
    );
    assert!(out.contains("certificate revoked"), "{out}");

    // Refusals, each saying why; nothing changes.
    let refused = citizen_auth(openssl_csr(dir, "after", &key)).await;
    assert_fails_with(&refused, &["revoked"]);
    let again = revoke("citizen-auth-ca", "superseded").await;
    assert_fails_with(&again, &["already revoked"]);
    let root = revoke("root", "cACompromise").await;
    assert_fails_with(&root, &["self-signed"]);
    let hold = revoke("citizen-sign-ca", "certificateHold").await;
    assert_fails_with(&hold, &["not a reason"]);
    let unknown = revoke("nobody-ca", "cACompromise").await;
    assert_fails_with(&unknown, &["not a CA role"]);
    let not_revoked = eid.run(&["ca", "rekey", "--role", "citizen-sign-ca"]).await;
    assert_fails_with(&not_revoked, &["not revoked"]);
    let root = eid.run(&["ca", "rekey", "--role", "root"]).await;
    assert_fails_with(&root, &["self-signed"]);

    // A new key for the CA: it issues again, its responder is renewed under the new
    // key, and the root's CRL still lists the revoked certificate.
    let rekeyed = eid.run(&["ca", "rekey", "--role", "citizen-auth-ca"]).await;
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    assert!(
        text(&rekeyed.stdout).to_uppercase().contains(&serial),
        "{}",
        text(&rekeyed.stdout)
    );
    let again = eid.run(&["ca", "rekey", "--role", "citizen-auth-ca"]).await;
    assert_fails_with(&again, &["not revoked"]);
    let exported = eid
        .run(&["ca", "export", "--out", &pki.display().to_string()])
        .await;
    assert!(exported.status.success());
    assert_ne!(openssl_serial(&pki.join("citizen-auth-ca.pem")), serial);
    let issued = citizen_auth(openssl_csr(dir, "rekeyed", &key)).await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let new_leaf = dir.join("new-leaf.pem");
    std::fs::write(&new_leaf, &issued.stdout).unwrap();
    openssl_verifies(&pki, "citizen-auth-ca", &new_leaf);
    openssl_verifies(&pki, "citizen-auth-ca", &pki.join("ocsp-citizen-auth.pem"));
    let published = eid
        .run(&["ca", "crl", "--out", &crls.display().to_string()])
        .await;
    assert!(published.status.success(), "{}", text(&published.stderr));
    let [root_crl, _] = crl_files(&crls);
    let listed = judge("openssl", &["crl", "-in", &root_crl, "-noout", "-text"]);
    assert!(
        text(&listed.stdout).contains(&format!("Serial Number: {serial}")),
        "{}",
        text(&listed.stdout)
    );

    let log = eid.run(&["audit", "tail", "-n", "50"]).await;
    let log = text(&log.stdout);
    assert!(
        log.lines()
            .any(|l| l.contains("ca.certificate.revoke") && l.contains("citizen-auth-ca")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ca.certificate.rekey") && l.contains("citizen-auth-ca")),
        "{log}"
    );
    let verify = eid.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// Who signed the OCSP response the running responder gives for `leaf`: the subject
/// of the certificate the response carries, as openssl prints it (verified).
fn ocsp_signer(dir: &Path, url: &str, leaf: &Path) -> String {
    let out = judge(
        "openssl",
        &[
            "ocsp",
            "-issuer",
            &dir.join("pki/citizen-auth-ca.pem").display().to_string(),
            "-cert",
            &leaf.display().to_string(),
            "-url",
            url,
            "-CAfile",
            &dir.join("chain.pem").display().to_string(),
            "-resp_text",
            "-no_nonce",
        ],
    );
    let out = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.contains("Response verify OK"), "{out}");
    out.lines()
        .find(|l| l.trim_start().starts_with("Subject:"))
        .unwrap_or_else(|| panic!("no certificate in the response: {out}"))
        .to_owned()
}

/// A time-stamp from the running TSA for a fresh query: openssl's text of the reply.
async fn time_stamp(dir: &Path, signing_url: &str, name: &str) -> (std::path::PathBuf, String) {
    let document = dir.join(format!("{name}.txt"));
    std::fs::write(&document, name).unwrap();
    let (query, reply) = (
        dir.join(format!("{name}.tsq")),
        dir.join(format!("{name}.tsr")),
    );
    let made = judge(
        "openssl",
        &[
            "ts",
            "-query",
            "-data",
            &document.display().to_string(),
            "-sha256",
            "-cert",
            "-out",
            &query.display().to_string(),
        ],
    );
    assert!(made.status.success(), "{}", text(&made.stderr));
    let response = reqwest::Client::new()
        .post(format!("{signing_url}/tsa"))
        .header("content-type", "application/timestamp-query")
        .body(std::fs::read(&query).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    std::fs::write(&reply, response.bytes().await.unwrap()).unwrap();
    let shown = judge(
        "openssl",
        &["ts", "-reply", "-in", &reply.display().to_string(), "-text"],
    );
    (
        query,
        format!("{}{}", text(&shown.stdout), text(&shown.stderr)),
    )
}

/// A delegated OCSP responder and the time-stamping unit revoked for key compromise
/// while the server runs: their issuers' CRLs list them, the CA answers OCSP itself
/// (openssl verifies it) and the TSA refuses with systemFailure, before the command
/// returns. The next start gives both new keys and certificates; the old serials stay
/// on the CRLs, openssl verifies the new chain, a new time-stamp and the responder's
/// signature again.
async fn revoked_service_certificates_stop_signing_and_get_new_keys(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let dir = eid.dir.path();
    assert!(eid.run(&["init"]).await.status.success());
    let pki = dir.join("pki").display().to_string();
    assert!(
        eid.run(&["ca", "export", "--out", &pki])
            .await
            .status
            .success()
    );
    let old_responder = openssl_serial(&dir.join("pki/ocsp-citizen-auth.pem"));
    let old_tsu = openssl_serial(&dir.join("pki/tsa.pem"));
    let csr = openssl_csr(
        dir,
        "leaf",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let issued = eid
        .run(
            &[
                &["ca", "issue", "--profile", "citizen-auth", "--csr", &csr][..],
                &CITIZEN[..],
            ]
            .concat(),
        )
        .await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let leaf = dir.join("leaf.pem");
    std::fs::write(&leaf, &issued.stdout).unwrap();
    let (address, card) = (free_address(), free_address());
    let serve = || {
        let mut command = eid.command(&["serve"]);
        command
            .env("EID_CA_LISTEN", &address)
            .env("EID_IDP_CARD_LISTEN", &card)
            .env("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped());
        super::Server::start(command, 4)
    };
    let server = serve().await;
    let old_tls = openssl_serial(&dir.join("pki/idp-tls.pem"));
    assert_eq!(tls_certificate_serial(dir, &card), Some(old_tls.clone()));
    let url = format!("{}/ocsp/citizen-auth-ca", server.urls["ca"]);
    assert_eq!(openssl_ocsp_status(dir, &url, &leaf, &[]), "good");
    assert!(ocsp_signer(dir, &url, &leaf).contains("OCSP Responder"));
    let (_, stamped) = time_stamp(dir, &server.urls["signing"], "before").await;
    assert!(stamped.contains("Status: Granted"), "{stamped}");

    let revoke = |role: &str| {
        let mut command = eid.command(&[
            "ca",
            "revoke-ca",
            "--role",
            role,
            "--reason",
            "keyCompromise",
        ]);
        command.env("EID_CA_LISTEN", &address);
        async move { command.output().await.unwrap() }
    };
    // Each command re-keys what the ones before it revoked (any process opening the CA
    // does): the running server still refuses those roles, as replaced, until restart.
    for role in ["idp-tls", "ocsp-citizen-auth", "tsa"] {
        let revoked = revoke(role).await;
        assert!(
            revoked.status.success(),
            "{role}: {}",
            text(&revoked.stderr)
        );
    }
    // The card listener offers no certificate once its own is revoked.
    assert_eq!(tls_certificate_serial(dir, &card), None);
    // No pause: the commands return once the running server knows.
    assert_eq!(openssl_ocsp_status(dir, &url, &leaf, &[]), "good");
    let signer = ocsp_signer(dir, &url, &leaf);
    assert!(
        signer.contains("Citizen Authentication CA") && !signer.contains("OCSP"),
        "{signer}"
    );
    let (_, refused) = time_stamp(dir, &server.urls["signing"], "during").await;
    assert!(
        refused.contains("Status: Rejected")
            && refused.contains("system failure")
            && refused.contains("revoked"),
        "{refused}"
    );
    old_serials_listed(dir, &server.urls["ca"], &old_tsu, &old_responder).await;
    server.stop().await;

    // The next start: new keys and certificates for both; the old serials stay listed.
    let server = serve().await;
    assert!(
        eid.run(&["ca", "export", "--out", &pki])
            .await
            .status
            .success()
    );
    let new_responder = dir.join("pki/ocsp-citizen-auth.pem");
    let new_tsu = dir.join("pki/tsa.pem");
    assert_ne!(openssl_serial(&new_responder), old_responder);
    assert_ne!(openssl_serial(&new_tsu), old_tsu);
    let new_tls = openssl_serial(&dir.join("pki/idp-tls.pem"));
    assert_ne!(new_tls, old_tls);
    assert_eq!(tls_certificate_serial(dir, &card), Some(new_tls));
    openssl_verifies(&dir.join("pki"), "citizen-auth-ca", &new_responder);
    assert_eq!(
        openssl_ocsp_status(dir, &url_of(&server), &leaf, &[]),
        "good"
    );
    assert!(ocsp_signer(dir, &url_of(&server), &leaf).contains("OCSP Responder"));
    let (query, stamped) = time_stamp(dir, &server.urls["signing"], "after").await;
    assert!(stamped.contains("Status: Granted"), "{stamped}");
    let verified = judge(
        "openssl",
        &[
            "ts",
            "-verify",
            "-in",
            &dir.join("after.tsr").display().to_string(),
            "-queryfile",
            &query.display().to_string(),
            "-CAfile",
            &dir.join("pki/root.pem").display().to_string(),
        ],
    );
    let verified = format!("{}{}", text(&verified.stdout), text(&verified.stderr));
    assert!(verified.contains("Verification: OK"), "{verified}");
    old_serials_listed(dir, &server.urls["ca"], &old_tsu, &old_responder).await;
    server.stop().await;

    let log = text(&eid.run(&["audit", "tail", "-n", "80"]).await.stdout);
    for role in ["ocsp-citizen-auth", "tsa", "idp-tls"] {
        assert!(
            log.lines()
                .any(|l| l.contains("ca.certificate.rekey") && l.contains(role)),
            "{role}: {log}"
        );
    }
    let verify = eid.run(&["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));
}

/// The running CA's root CRL lists the revoked TSU's serial, and the citizen
/// authentication CA's CRL the revoked responder's (openssl checks both signatures).
async fn old_serials_listed(dir: &Path, ca_url: &str, tsu: &str, responder: &str) {
    for (file, issuer, serial) in [
        ("root.crl", "pki/root.pem", tsu),
        ("citizen-auth-ca.crl", "chain.pem", responder),
    ] {
        let (_, listed) = fetch_crl(dir, ca_url, file, &dir.join(issuer)).await;
        assert!(
            listed.contains(&format!("Serial Number: {serial}")),
            "{file}: {listed}"
        );
    }
}

/// The serial of the certificate the TLS listener at `address` presents, verified by
/// `openssl s_client` against the exported root; none if the handshake offers none.
fn tls_certificate_serial(dir: &Path, address: &str) -> Option<String> {
    let out = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            address,
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(dir.join("pki/root.pem"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let shown = text(&out.stdout);
    let start = shown.find("-----BEGIN CERTIFICATE-----")?;
    let end = shown.find("-----END CERTIFICATE-----")? + "-----END CERTIFICATE-----".len();
    assert!(shown.contains("Verify return code: 0 (ok)"), "{shown}");
    let presented = dir.join("presented.pem");
    std::fs::write(&presented, &shown[start..end]).unwrap();
    Some(openssl_serial(&presented))
}

fn url_of(server: &super::Server) -> String {
    format!("{}/ocsp/citizen-auth-ca", server.urls["ca"])
}

on_both_backends!(
    revoked_service_certificates_stop_signing_and_get_new_keys,
    a_revoked_issuing_ca_is_on_the_roots_crl_and_issues_nothing,
    revocation_reaches_ocsp_and_the_crl,
    delta_crls_carry_changes_between_full_crls,
    citizen_certificates_pass_openssl_and_pkilint,
    ca_certificates_are_published_at_their_ca_issuers_url,
    issuance_api_serves_only_the_registration_authority,
);

#[tokio::test]
async fn key_ceremony_creates_the_hierarchy_on_the_token_with_a_transcript() {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let dir = eid.dir.path();
    let token = SoftHsmToken::create(dir, "eid-ca", "246810");
    std::fs::write(dir.join("hsm-pin"), "246810\n").unwrap();
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/ceremony.example.toml"),
    )
    .unwrap();
    // The documented example, pointed at this test's token, database and folder.
    let ceremony_text = example
        .replace("profile = \"production\"\n", "")
        .replace("data_dir = \"/var/lib/eid\"\n", "")
        .replace("[database]\nurl = \"postgres://eid@db.internal:5432/eid\"\npassword_file = \"/run/secrets/eid-db-password\"\n", "")
        .replace("/usr/lib/softhsm/libsofthsm2.so", &token.module)
        .replace("/run/secrets/eid-hsm-pin", "hsm-pin");
    let file = dir.join("ceremony.toml");
    std::fs::write(&file, &ceremony_text).unwrap();
    let run = token.run(&eid, &file, &["ca", "ceremony"]).await;
    assert!(run.status.success(), "{}", text(&run.stderr));

    let transcript: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("ceremony-2026.json")).unwrap())
            .unwrap();
    let file_hash = judge("sha256sum", &[&file.display().to_string()]);
    assert!(text(&file_hash.stdout).starts_with(transcript["file_sha256"].as_str().unwrap()));
    assert_eq!(transcript["witnesses"].as_array().unwrap().len(), 2);
    let certificates = transcript["certificates"].as_array().unwrap();
    assert_eq!(certificates.len(), 10);
    let pki = dir.join("pki");
    let export = token
        .run(
            &eid,
            &file,
            &["ca", "export", "--out", &pki.display().to_string()],
        )
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    for certificate in certificates {
        let role = certificate["role"].as_str().unwrap();
        assert_eq!(certificate["key_attributes"]["local"], true, "{role}");
        assert_eq!(
            certificate["key_attributes"]["extractable"], false,
            "{role}"
        );
        let exported = std::fs::read_to_string(pki.join(format!("{role}.pem"))).unwrap();
        assert_eq!(certificate["pem"].as_str().unwrap(), exported, "{role}");
    }
    let subject = openssl_x509(&pki.join("root.pem"), &["-subject"]);
    assert!(subject.contains("eID Trinidad and Tobago Root CA 2026"));
    openssl_verifies(&pki, "citizen-auth-ca", &pki.join("ocsp-citizen-auth.pem"));
    let policies = openssl_x509(
        &pki.join("citizen-sign-ca.pem"),
        &["-ext", "certificatePolicies"],
    );
    assert!(policies.contains("0.4.0.194112.1.2"));

    // Once only: the roles, keys and transcript exist now.
    let again = token.run(&eid, &file, &["ca", "ceremony"]).await;
    assert_fails_with(&again, &["ceremony-2026.json exists"]);
    std::fs::remove_file(dir.join("ceremony-2026.json")).unwrap();
    let again = token.run(&eid, &file, &["ca", "ceremony"]).await;
    assert_fails_with(&again, &["already exists"]);
    let verify = token.run(&eid, &file, &["audit", "verify"]).await;
    assert!(verify.status.success(), "{}", text(&verify.stderr));

    // Issuance, OCSP and the CRL with every CA key on the token.
    let csr = openssl_csr(
        dir,
        "onhsm",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let issued = token
        .run(
            &eid,
            &file,
            &[
                &["ca", "issue", "--profile", "citizen-auth", "--csr", &csr][..],
                &CITIZEN[..],
            ]
            .concat(),
        )
        .await;
    assert!(issued.status.success(), "{}", text(&issued.stderr));
    let leaf = dir.join("onhsm.pem");
    std::fs::write(&leaf, &issued.stdout).unwrap();
    openssl_verifies(&pki, "citizen-auth-ca", &leaf);
    let serial = openssl_serial(&leaf);
    let address = free_address();
    let server = {
        let mut command = eid.command(&["--config", &file.display().to_string(), "serve", "ca"]);
        command
            .env("EID_CA_LISTEN", &address)
            .env("SOFTHSM2_CONF", &token.conf)
            .stdout(std::process::Stdio::piped());
        super::Server::start(command, 1).await
    };
    let url = format!("{}/ocsp/citizen-auth-ca", server.urls["ca"]);
    assert_eq!(openssl_ocsp_status(dir, &url, &leaf, &[]), "good");
    let revoked = eid
        .command(&[
            "--config",
            &file.display().to_string(),
            "ca",
            "revoke",
            "--serial",
            &serial,
            "--reason",
            "superseded",
        ])
        .env("EID_CA_LISTEN", &address)
        .env("SOFTHSM2_CONF", &token.conf)
        .output()
        .await
        .unwrap();
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let response = dir.join("onhsm.ocsp").display().to_string();
    assert_eq!(
        openssl_ocsp_status(dir, &url, &leaf, &["-no_nonce", "-respout", &response]),
        "revoked"
    );
    let (crl, listed) = fetch_crl(
        dir,
        &server.urls["ca"],
        "citizen-auth-ca.crl",
        &dir.join("chain.pem"),
    )
    .await;
    assert!(listed.contains(&serial), "{listed}");
    server.stop().await;
    // pkilint on what the token's keys signed: the hierarchy, a citizen certificate,
    // an OCSP response and a CRL.
    for certificate in certificates {
        let role = certificate["role"].as_str().unwrap();
        pkilint_clean("lint_pkix_cert", &[], &pki.join(format!("{role}.pem")));
    }
    pkilint_clean(
        "lint_etsi_cert",
        &["-t", "NCP-NATURAL-PERSON-CERTIFICATE"],
        &leaf,
    );
    pkilint_clean("lint_ocsp_response", &[], Path::new(&response));
    pkilint_clean("lint_crl", &["-t", "CRL", "-p", "PKIX"], Path::new(&crl));

    // Revoked and re-keyed on the token: the issuing CA by the operator, the TSU by
    // the next start; pkcs11-tool sees the old keys gone and the new ones made there.
    for (role, reason) in [
        ("citizen-auth-ca", "cACompromise"),
        ("tsa", "keyCompromise"),
    ] {
        let revoked = token
            .run(
                &eid,
                &file,
                &["ca", "revoke-ca", "--role", role, "--reason", reason],
            )
            .await;
        assert!(
            revoked.status.success(),
            "{role}: {}",
            text(&revoked.stderr)
        );
    }
    let rekeyed = token
        .run(&eid, &file, &["ca", "rekey", "--role", "citizen-auth-ca"])
        .await;
    assert!(rekeyed.status.success(), "{}", text(&rekeyed.stderr));
    let export = token
        .run(
            &eid,
            &file,
            &["ca", "export", "--out", &pki.display().to_string()],
        )
        .await;
    assert!(export.status.success(), "{}", text(&export.stderr));
    openssl_verifies(&pki, "citizen-auth-ca", &pki.join("ocsp-citizen-auth.pem"));
    let objects = token.private_keys("eid-ca", "246810");
    let labels: Vec<&str> = objects
        .lines()
        .filter_map(|l| l.trim().strip_prefix("label:"))
        .map(str::trim)
        .collect();
    for role in ["citizen-auth-ca", "tsa"] {
        let old = format!("ca-{role}");
        assert!(!labels.contains(&old.as_str()), "{role}: {labels:?}");
        assert!(
            labels.iter().any(|l| l
                .strip_prefix(&format!("{old}-"))
                .is_some_and(|n| n.parse::<u64>().is_ok())),
            "{role}: {labels:?}"
        );
    }
    assert!(
        !objects.contains("extractable") || objects.contains("never extractable"),
        "{objects}"
    );

    // A ceremony needs two witnesses.
    let lonely = dir.join("lonely.toml");
    std::fs::write(
        &lonely,
        ceremony_text.replace(
            "witnesses = [\"Key custodian A. Baptiste\", \"Auditor R. Mohammed\"]",
            "witnesses = [\"Alone\"]",
        ),
    )
    .unwrap();
    let refused = token.run(&eid, &lonely, &["ca", "ceremony"]).await;
    assert_fails_with(&refused, &["at least two named witnesses"]);
}
