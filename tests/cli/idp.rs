//! The identity provider through `eid serve`: an ID-card login judged end to end by an
//! independent, certified relying-party library (openid-client, Node) and by the
//! `openidconnect` crate, and the error
//! behaviour the OpenID conformance suite checks, on SQLite and PostgreSQL.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
};

use eid_tests::{TestBackend, on_both_backends};
use serde_json::Value;

use super::{
    Eid, Server,
    ca::{free_address, openssl_csr, openssl_serial},
    text,
};

mod conformance;
mod csc_authorization;
mod csc_signing;
mod mobile;
mod seal;

/// The addresses one provider instance uses (the CA's is written into certificates as
/// the OCSP URL, the card listener's into the login page), fixed for the whole test.
struct Addresses {
    idp: String,
    ca: String,
    card: String,
}

impl Addresses {
    fn new() -> Self {
        Self {
            idp: free_address(),
            ca: free_address(),
            card: free_address(),
        }
    }
}

fn command(eid: &Eid, addresses: &Addresses, args: &[&str]) -> tokio::process::Command {
    let mut command = eid.command(args);
    command
        .env("EID_IDP_LISTEN", &addresses.idp)
        .env("EID_CA_LISTEN", &addresses.ca)
        .env("EID_IDP_CARD_LISTEN", &addresses.card)
        .env("EID_ENROLMENT_CARD_LISTEN", "127.0.0.1:0");
    command
}

async fn run(eid: &Eid, addresses: &Addresses, args: &[&str]) -> String {
    let output = command(eid, addresses, args).output().await.unwrap();
    assert!(
        output.status.success(),
        "eid {args:?}: {}",
        text(&output.stderr)
    );
    text(&output.stdout)
}

async fn serve(eid: &Eid, addresses: &Addresses) -> Server {
    let mut command = command(eid, addresses, &["serve"]);
    command.stdout(Stdio::piped());
    Server::start(command, 4).await
}

async fn issue_card(
    eid: &Eid,
    addresses: &Addresses,
    dir: &Path,
    name: &str,
    national_id: &str,
) -> (PathBuf, PathBuf, String) {
    // A test ID card: a P-256 key in a file, certified by our citizen authentication CA.
    let csr = openssl_csr(
        dir,
        name,
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let key = dir.join(format!("{name}.key"));
    let pem = run(
        eid,
        addresses,
        &[
            "ca",
            "issue",
            "--profile",
            "citizen-auth",
            "--csr",
            &csr,
            "--national-id",
            national_id,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
        ],
    )
    .await;
    let cert = dir.join(format!("{name}.pem"));
    std::fs::write(&cert, &pem).unwrap();
    let serial = openssl_serial(&cert);
    (cert, key, serial)
}

/// A fresh instance with a test ID card ("card", national id 3900101123456) and the CA
/// certificates exported to `dir`/pki, as curl needs them: the instance, its addresses,
/// its folder, the card's certificate and key.
async fn instance_with_card(backend: TestBackend) -> (Eid, Addresses, PathBuf, PathBuf, PathBuf) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let dir = eid.dir.path().to_path_buf();
    run(&eid, &addresses, &["init"]).await;
    let (cert, key, _) = issue_card(&eid, &addresses, &dir, "card", "3900101123456").await;
    let pki = dir.join("pki").display().to_string();
    run(&eid, &addresses, &["ca", "export", "--out", &pki]).await;
    (eid, addresses, dir, cert, key)
}

async fn register(eid: &Eid, addresses: &Addresses, extra: &[&str]) -> (String, String) {
    let out = run(
        eid,
        addresses,
        &[
            &[
                "rp",
                "add",
                "--name",
                "Board of Inland Revenue",
                "--redirect-uri",
                "http://127.0.0.1:9/callback",
            ][..],
            extra,
        ]
        .concat(),
    )
    .await;
    let client: Value = serde_json::from_str(&out).unwrap();
    (
        client["client_id"].as_str().unwrap().to_owned(),
        client["client_secret"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Where deploy/test.sh installed the Node relying party (openid-client).
fn relying_party_dir() -> PathBuf {
    let dir = std::env::var_os("EID_TEST_OIDC_RP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/judges/oidc-rp"));
    assert!(
        dir.join("node_modules/openid-client").is_dir(),
        "openid-client is not installed in {}: deploy/test.sh installs it",
        dir.display()
    );
    dir
}

/// Runs the relying-party judge; returns what it accepted.
fn relying_party(envs: &BTreeMap<&str, String>) -> Value {
    let dir = relying_party_dir();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/judges/oidc-rp/rp.mjs");
    // The script runs from the judge's folder so that its imports resolve there.
    let copy = dir.join(format!("rp-{}.mjs", std::process::id()));
    std::fs::copy(&script, &copy).unwrap();
    let output = std::process::Command::new("node")
        .arg(&copy)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("cannot run node ({e}): deploy/test.sh installs it"));
    let _ = std::fs::remove_file(&copy);
    assert!(
        output.status.success(),
        "the relying party failed: {}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    serde_json::from_str(text(&output.stdout).trim()).unwrap()
}

async fn id_card_login_is_accepted_by_an_independent_relying_party(backend: TestBackend) {
    let (eid, addresses, dir, cert, key) = instance_with_card(backend).await;
    let (_, revoked_key, revoked_serial) =
        issue_card(&eid, &addresses, &dir, "lost", "3900101654321").await;
    let pki = dir.join("pki");
    let (client_id, secret) = register(
        &eid,
        &addresses,
        &["--scope", "profile", "--scope", "national_id"],
    )
    .await;
    let server = serve(&eid, &addresses).await;

    let mut envs = BTreeMap::from([
        ("EID_ISSUER", format!("http://{}", addresses.idp)),
        ("EID_CLIENT_ID", client_id.clone()),
        ("EID_CLIENT_SECRET", secret.clone()),
        ("EID_REDIRECT_URI", "http://127.0.0.1:9/callback".to_owned()),
        ("EID_CARD_CERT", cert.display().to_string()),
        ("EID_CARD_KEY", key.display().to_string()),
        ("EID_ROOT_CA", pki.join("root.pem").display().to_string()),
        ("EID_SCOPE", "openid profile national_id".to_owned()),
        ("EID_ACR", "http://eidas.europa.eu/LoA/high".to_owned()),
    ]);
    let accepted = relying_party(&envs);
    let id_token = &accepted["id_token"];
    assert_eq!(id_token["acr"], "http://eidas.europa.eu/LoA/high");
    assert_eq!(
        id_token["amr"],
        serde_json::json!(["hwk", "mfa", "pin", "sc"])
    );
    assert_eq!(id_token["aud"], client_id.as_str());
    assert!(id_token["auth_time"].is_i64() && id_token["sid"].is_string());
    let sub = id_token["sub"].as_str().unwrap();
    // Pairwise: not the national identity number, which travels only as its own claim.
    assert!(!sub.contains("3900101123456"), "{sub}");
    assert_eq!(accepted["userinfo"]["national_id"], "3900101123456");
    assert_eq!(accepted["userinfo"]["given_name"], "Mary");
    assert_eq!(accepted["userinfo"]["family_name"], "Seacole");
    assert_eq!(accepted["userinfo"]["sub"], sub);
    assert_eq!(accepted["refreshed"]["sub"], sub);
    assert_eq!(accepted["refreshed"]["rotated"], true);
    assert_eq!(accepted["code_reuse"]["status"], 400);
    assert_eq!(accepted["code_reuse"]["error"], "invalid_grant");
    assert_eq!(accepted["userinfo_after_reuse"], "refused");

    assert_eq!(accepted["token_type"], "bearer");

    // The same with DPoP: openid-client binds the tokens to its key and proves it.
    envs.insert("EID_DPOP", "1".to_owned());
    let bound = relying_party(&envs);
    assert_eq!(bound["token_type"], "dpop");
    assert_eq!(bound["bearer_only"], 401);
    assert_eq!(bound["userinfo"]["national_id"], "3900101123456");
    assert_eq!(bound["refreshed"]["rotated"], true);
    envs.remove("EID_DPOP");

    assert_card_asked_anew(&addresses.card, &pki.join("root.pem"), &cert, &key);

    // A suspended card does not log in: the provider asks the OCSP responder.
    run(
        &eid,
        &addresses,
        &["ca", "suspend", "--serial", &revoked_serial],
    )
    .await;
    envs.insert("EID_CARD_CERT", dir.join("lost.pem").display().to_string());
    envs.insert("EID_CARD_KEY", revoked_key.display().to_string());
    let dir_for_judge = relying_party_dir();
    let copy = dir_for_judge.join(format!("rp-suspended-{}.mjs", std::process::id()));
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/judges/oidc-rp/rp.mjs"),
        &copy,
    )
    .unwrap();
    let refused = std::process::Command::new("node")
        .arg(&copy)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&copy);
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("card login: 403"),
        "{}",
        text(&refused.stderr)
    );

    // Every login, grant and refusal is in the audit chain, which still verifies.
    server.stop().await;
    let verified = eid.run(&["audit", "verify"]).await;
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    let tail = eid.run(&["audit", "tail", "--count", "200"]).await;
    let tail = text(&tail.stdout);
    for action in [
        "rp.register",
        "idp.login",
        "idp.consent.grant",
        "idp.authorize",
        "idp.token.code",
        "idp.token.refresh",
        "idp.code.reuse",
        "idp.login.idcard",
    ] {
        assert!(
            tail.contains(action),
            "no {action} in the audit log:\n{tail}"
        );
    }
}

/// The card listener at `address` takes every request on a new connection with a full
/// handshake (the card asked again), judged by OpenSSL and curl: `s_client -reconnect`
/// resumes no session, and curl's second request on one command line connects anew.
fn assert_card_asked_anew(address: &str, root: &Path, cert: &Path, key: &Path) {
    for version in ["-tls1_2", "-tls1_3"] {
        let output = std::process::Command::new("openssl")
            .args([
                "s_client",
                version,
                "-connect",
                address,
                "-reconnect",
                "-CAfile",
            ])
            .arg(root)
            .arg("-cert")
            .arg(cert)
            .arg("-key")
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let said = text(&output.stdout);
        assert!(said.matches("New, TLS").count() >= 2, "{version}: {said}");
        assert!(!said.contains("Reused, TLS"), "{version} resumed: {said}");
    }
    let output = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-o", "/dev/null"])
        .args(["-w", "%{num_connects} ", "--cacert"])
        .arg(root)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .arg(format!("https://{address}/card-login/none"))
        .arg(format!("https://{address}/card-login/none"))
        .output()
        .unwrap();
    assert_eq!(text(&output.stdout), "1 1 ", "one request per connection");
}

/// A relying party's own endpoints, as a test server: its JWKS (for private_key_jwt)
/// and its back-channel logout endpoint, which records what it receives.
struct RelyingPartyEndpoints {
    base: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RelyingPartyEndpoints {
    async fn start(jwks: Value) -> Self {
        use axum::routing::{get, post};
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = received.clone();
        let app = axum::Router::new()
            .route("/jwks", get(move || async move { axum::Json(jwks) }))
            .route(
                "/backchannel-logout",
                post(move |body: String| async move {
                    sink.lock().unwrap().push(body);
                    axum::http::StatusCode::OK
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, received }
    }
}

/// A compact ES256 JWS made by the test (standing in for a client's own library).
fn es256_jws(key: &p256::ecdsa::SigningKey, kid: &str, claims: &Value) -> String {
    use base64ct::{Base64UrlUnpadded, Encoding};
    use p256::ecdsa::signature::Signer;
    let header = serde_json::json!({ "alg": "ES256", "kid": kid, "typ": "JWT" });
    let input = format!(
        "{}.{}",
        Base64UrlUnpadded::encode_string(header.to_string().as_bytes()),
        Base64UrlUnpadded::encode_string(claims.to_string().as_bytes())
    );
    let signature: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!(
        "{input}.{}",
        Base64UrlUnpadded::encode_string(&signature.to_bytes())
    )
}

fn jwk_of(key: &p256::ecdsa::SigningKey, kid: &str) -> Value {
    use base64ct::{Base64UrlUnpadded, Encoding};
    use p256::elliptic_curve::sec1::ToSec1Point;
    let point = key.verifying_key().as_affine().to_sec1_point(false);
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig", "alg": "ES256",
        "x": Base64UrlUnpadded::encode_string(point.x().unwrap()),
        "y": Base64UrlUnpadded::encode_string(point.y().unwrap()),
    })
}

fn payload_of(jws: &str) -> Value {
    use base64ct::{Base64UrlUnpadded, Encoding};
    let payload = jws.split('.').nth(1).unwrap();
    serde_json::from_slice(&Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap()
}

/// The JSON document at `url` (discovery, a JWKS).
async fn get_json(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// The S256 PKCE challenge of `verifier`.
fn pkce_challenge(verifier: &str) -> String {
    use base64ct::Encoding;
    use sha2::Digest;
    base64ct::Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(verifier.as_bytes()))
}

/// The token endpoint's answer to a code (redirect URI `http://127.0.0.1:9/callback`)
/// redeemed by `client` (id, secret) with its PKCE `verifier`.
async fn redeem_code(issuer: &str, client: (&str, &str), code: &str, verifier: &str) -> Value {
    http()
        .post(format!("{issuer}/token"))
        .basic_auth(client.0, Some(client.1))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A client that follows no redirects and keeps no cookies: each answer is inspected.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn query_of(location: &str) -> BTreeMap<String, String> {
    let url = reqwest::Url::parse(location).unwrap();
    url.query_pairs().into_owned().collect()
}

const ADMIN_TOKEN: &str = "an-operator-tooling-token-of-some-length-0123";

async fn protocol_errors_follow_the_specifications(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    run(&eid, &addresses, &["init"]).await;
    let (client_id, secret) = register(&eid, &addresses, &[]).await;
    let (service_id, service_secret) = register(
        &eid,
        &addresses,
        &[
            "--grant",
            "client_credentials",
            "--auth-method",
            "client_secret_post",
            "--scope",
            "profile",
        ],
    )
    .await;
    let (par_id, par_secret) = register(&eid, &addresses, &["--require-par"]).await;
    let server = {
        let config = eid.dir.path().join("admin.toml");
        std::fs::write(
            &config,
            "[[idp.admin_client]]\nname = \"tooling\"\ntoken_env = \"EID_TEST_ADMIN_TOKEN\"\n",
        )
        .unwrap();
        let mut command = command(
            &eid,
            &addresses,
            &["--config", &config.display().to_string(), "serve"],
        );
        command
            .env("EID_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdout(Stdio::piped());
        Server::start(command, 4).await
    };
    let issuer = format!("http://{}", addresses.idp);
    let http = http();
    let discovery: Value =
        get_json(&http, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(discovery["issuer"], issuer.as_str());
    assert_eq!(
        discovery["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(discovery["request_parameter_supported"], false);
    assert_eq!(
        discovery["authorization_response_iss_parameter_supported"],
        true
    );
    let jwks: Value = get_json(&http, discovery["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks["keys"][0]["alg"], "ES256");

    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let authorize = |extra: &str, client: &str| {
        format!(
            "{issuer}/authorize?client_id={client}&response_type=code&scope=openid&state=st&\
             redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={challenge}&\
             code_challenge_method=S256{extra}"
        )
    };

    // An unregistered redirect URI: an error page at the provider, never a redirect.
    let response = http
        .get(authorize("", &client_id).replace("callback", "elsewhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());
    assert!(response.text().await.unwrap().contains("not registered"));
    // An unknown client: the same.
    let response = http.get(authorize("", "rp-nobody")).send().await.unwrap();
    assert_eq!(response.status(), 400);
    assert!(response.headers().get("location").is_none());

    // Errors after the redirect URI is trusted go back to the client, with state and iss.
    for (extra, code) in [
        ("&prompt=none", "login_required"),
        ("&request=eyJhbGciOiJub25lIn0.e30.", "request_not_supported"),
    ] {
        let response = http.get(authorize(extra, &client_id)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{extra}");
        let location = response.headers()["location"].to_str().unwrap().to_owned();
        let query = query_of(&location);
        assert!(
            location.starts_with("http://127.0.0.1:9/callback?"),
            "{location}"
        );
        assert_eq!(query["error"], code, "{extra}: {location}");
        assert_eq!(query["state"], "st");
        assert_eq!(query["iss"], issuer);
    }
    let implicit = authorize("", &client_id).replace("response_type=code", "response_type=token");
    let query = query_of(
        http.get(implicit).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(query["error"], "unsupported_response_type");
    let plain = authorize("", &client_id).replace("method=S256", "method=plain");
    let query = query_of(
        http.get(plain).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(query["error"], "invalid_request");
    // A parameter given twice: refused at the provider (which value would be trusted?).
    let twice = http
        .get(authorize("&state=again", &client_id))
        .send()
        .await
        .unwrap();
    assert_eq!(twice.status(), 400);
    assert!(twice.headers().get("location").is_none());
    let no_pkce = authorize("", &client_id).replace(&format!("&code_challenge={challenge}"), "");
    let query = query_of(
        http.get(no_pkce).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(query["error"], "invalid_request");
    assert!(query["error_description"].contains("PKCE"));
    let no_openid = authorize("", &client_id).replace("scope=openid", "scope=profile");
    let query = query_of(
        http.get(no_openid).send().await.unwrap().headers()["location"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(query["error"], "invalid_scope");
    // A client that must push its requests is refused a plain one.
    let query = query_of(
        http.get(authorize("", &par_id))
            .send()
            .await
            .unwrap()
            .headers()["location"]
            .to_str()
            .unwrap(),
    );
    assert_eq!(query["error"], "invalid_request");

    // PAR: 201 with a request_uri, used once, by its own client.
    let pushed = http
        .post(format!("{issuer}/par"))
        .basic_auth(&par_id, Some(&par_secret))
        .form(&[
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("code_challenge", challenge),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), 201);
    let pushed: Value = pushed.json().await.unwrap();
    let request_uri = pushed["request_uri"].as_str().unwrap();
    assert!(request_uri.starts_with("urn:ietf:params:oauth:request_uri:"));
    let by_reference = |client: &str| {
        let url = reqwest::Url::parse_with_params(
            &format!("{issuer}/authorize"),
            &[("client_id", client), ("request_uri", request_uri)],
        )
        .unwrap();
        http.get(url).send()
    };
    assert_eq!(by_reference(&client_id).await.unwrap().status(), 400);
    let first = by_reference(&par_id).await.unwrap();
    assert_eq!(first.status(), 303);
    assert!(
        first.headers()["location"]
            .to_str()
            .unwrap()
            .contains("/login/")
    );
    assert_eq!(by_reference(&par_id).await.unwrap().status(), 400);

    // The token endpoint: exact error codes.
    let token = |form: Vec<(&'static str, String)>, basic: Option<(&str, &str)>| {
        let mut request = http.post(format!("{issuer}/token")).form(&form);
        if let Some((id, secret)) = basic {
            request = request.basic_auth(id, Some(secret));
        }
        request.send()
    };
    let wrong = token(
        vec![
            ("grant_type", "authorization_code".into()),
            ("code", "x".into()),
        ],
        Some((&client_id, "not-the-secret")),
    )
    .await
    .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().contains_key("www-authenticate"));
    assert_eq!(
        wrong.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );
    for (form, status, error) in [
        (
            vec![("grant_type", "password".to_owned())],
            400,
            "unsupported_grant_type",
        ),
        (
            vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", "no-such-code".to_owned()),
                ("redirect_uri", "http://127.0.0.1:9/callback".to_owned()),
            ],
            400,
            "invalid_grant",
        ),
        (
            vec![("grant_type", "client_credentials".to_owned())],
            400,
            "unauthorized_client",
        ),
        (
            vec![
                ("grant_type", "refresh_token".to_owned()),
                ("refresh_token", "nope".to_owned()),
            ],
            400,
            "invalid_grant",
        ),
    ] {
        let response = token(form.clone(), Some((&client_id, &secret)))
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{form:?}");
        assert_eq!(
            response.json::<Value>().await.unwrap()["error"],
            error,
            "{form:?}"
        );
    }

    // Client credentials, then introspection and revocation by the resource side.
    let granted: Value = token(
        vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", service_id.clone()),
            ("client_secret", service_secret.clone()),
            ("scope", "profile".into()),
        ],
        None,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let access = granted["access_token"].as_str().unwrap().to_owned();
    assert_eq!(granted["token_type"], "Bearer");
    let introspected: Value = http
        .post(format!("{issuer}/introspect"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["client_id"], service_id.as_str());
    let garbage: Value = http
        .post(format!("{issuer}/introspect"))
        .basic_auth(&client_id, Some(&secret))
        .form(&[("token", "e30.e30.e30")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(garbage, serde_json::json!({ "active": false }));

    // Userinfo: no token in the query; a client's own token carries no citizen.
    let in_query = http
        .get(format!("{issuer}/userinfo?access_token={access}"))
        .send()
        .await
        .unwrap();
    assert_eq!(in_query.status(), 400);
    let own = http
        .get(format!("{issuer}/userinfo"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 403);
    let forged = http
        .post(format!("{issuer}/userinfo"))
        .form(&[("access_token", "eyJhbGciOiJFUzI1NiJ9.e30.AAAA")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 401);
    assert!(
        forged.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    // private_key_jwt (RFC 7523): a client signs its own assertion with its key, published
    // at its JWKS URI; wrong audience, expiry and replay are each refused.
    let client_key = {
        use p256::elliptic_curve::Generate;
        p256::ecdsa::SigningKey::try_generate_from_rng(&mut getrandom::SysRng).unwrap()
    };
    let endpoints =
        RelyingPartyEndpoints::start(serde_json::json!({ "keys": [jwk_of(&client_key, "k1")] }))
            .await;
    let (jwt_client, _) = register(
        &eid,
        &addresses,
        &[
            "--grant",
            "client_credentials",
            "--auth-method",
            "private_key_jwt",
            "--jwks-uri",
            &format!("{}/jwks", endpoints.base),
            "--scope",
            "profile",
        ],
    )
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let assertion = |aud: &str, exp: u64, jti: &str| {
        es256_jws(
            &client_key,
            "k1",
            &serde_json::json!({
                "iss": jwt_client, "sub": jwt_client, "aud": aud, "exp": exp, "iat": now, "jti": jti,
            }),
        )
    };
    let with_assertion = |assertion: String| {
        http.post(format!("{issuer}/token"))
            .form(&[
                ("grant_type", "client_credentials".to_owned()),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
                ),
                ("client_assertion", assertion),
            ])
            .send()
    };
    let good = assertion(&format!("{issuer}/token"), now + 60, "jti-1");
    let accepted = with_assertion(good.clone()).await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert!(accepted.json::<Value>().await.unwrap()["access_token"].is_string());
    for (bad, why) in [
        (good, "already used"),
        (
            assertion("https://elsewhere.example/token", now + 60, "jti-2"),
            "aud",
        ),
        (assertion(&issuer, now - 5, "jti-3"), "expired"),
        ("not.a.jwt".to_owned(), "malformed"),
    ] {
        let refused = with_assertion(bad).await.unwrap();
        assert_eq!(refused.status(), 401, "{why}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{why}");
        assert!(
            body["error_description"].as_str().unwrap().contains(why),
            "{why}: {body}"
        );
    }

    // The registry's admin API: only its configured callers, the same checks as `eid rp`.
    let admin = |method: reqwest::Method, path: &str, token: &str| {
        http.request(method, format!("{issuer}/admin/api/v1/clients{path}"))
            .bearer_auth(token)
    };
    assert_eq!(
        admin(reqwest::Method::GET, "", "not-the-token")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let created = admin(reqwest::Method::POST, "", ADMIN_TOKEN)
        .json(&serde_json::json!({
            "name": "Ministry of Health",
            "redirect_uris": ["https://health.example/callback"],
            "scopes": ["profile", "national_id"],
            "min_level": "high",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let health = created["client_id"].as_str().unwrap().to_owned();
    assert!(created["client_secret"].as_str().unwrap().len() >= 43);
    assert_eq!(created["metadata"]["min_level"], "high");
    for (body, needle) in [
        (
            serde_json::json!({ "name": "x", "redirect_uris": ["http://evil.example/cb"] }),
            "must be https",
        ),
        (
            serde_json::json!({ "name": "x", "redirect_uris": ["https://a.example/cb"], "scopes": ["everything"] }),
            "is not one of",
        ),
        (
            serde_json::json!({ "name": "x", "colour": "red" }),
            "unknown field",
        ),
    ] {
        let refused = admin(reqwest::Method::POST, "", ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 400, "{body}");
        let problem: Value = refused.json().await.unwrap();
        assert!(
            problem["detail"].as_str().unwrap().contains(needle),
            "{problem}"
        );
    }
    let listed: Value = admin(reqwest::Method::GET, "", ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client_id"] == health.as_str())
    );
    // The token endpoint as this client: authenticated, it is refused only the grant
    // (unauthorized_client); unauthenticated, invalid_client. The first call also puts
    // the registration in the provider's memory, which the changes below must reach.
    let token_as = |secret: String| {
        let (http, issuer, health) = (http.clone(), issuer.clone(), health.clone());
        async move {
            let body: Value = http
                .post(format!("{issuer}/token"))
                .basic_auth(&health, Some(secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            body["error"].as_str().unwrap().to_owned()
        }
    };
    let first_secret = created["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(token_as(first_secret.clone()).await, "unauthorized_client");
    let rotated: Value = admin(
        reqwest::Method::POST,
        &format!("/{health}/secret"),
        ADMIN_TOKEN,
    )
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_ne!(rotated["client_secret"], created["client_secret"]);
    let second_secret = rotated["client_secret"].as_str().unwrap().to_owned();
    assert_eq!(token_as(first_secret).await, "invalid_client");
    assert_eq!(token_as(second_secret.clone()).await, "unauthorized_client");
    let removed = admin(reqwest::Method::DELETE, &format!("/{health}"), ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    assert_eq!(token_as(second_secret).await, "invalid_client");
    let again = admin(reqwest::Method::DELETE, &format!("/{health}"), ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    // Key rotation: the next key is published in the JWKS before it signs.
    let rotated = run(&eid, &addresses, &["idp", "rotate-keys"]).await;
    assert!(rotated.contains("published token-signing key"), "{rotated}");
    let mut published = 0;
    for _ in 0..40 {
        let jwks: Value = get_json(&http, &format!("{issuer}/jwks")).await;
        published = jwks["keys"].as_array().unwrap().len();
        if published == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(published, 2, "the rotated-to key is published within 10 s");
    server.stop().await;
}

/// Logs in at the self-service page with the ID card, with curl as the browser (a
/// browser that can present a client certificate without a dialog); returns the session
/// and browser cookies.
fn card_session(issuer: &str, dir: &Path, cert: &Path, key: &Path) -> (String, String) {
    let account = card_browser(issuer, &format!("{issuer}/account/login"), dir, cert, key);
    assert!(account.ends_with("/account"), "{account}");
    jar_cookies(dir)
}

/// The session and browser cookies curl keeps in `dir`/jar.
fn jar_cookies(dir: &Path) -> (String, String) {
    let jar = std::fs::read_to_string(dir.join("jar")).unwrap();
    let cookie = |name: &str| {
        jar.lines()
            .find_map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                (fields.len() == 7 && fields[5] == name).then(|| fields[6].to_owned())
            })
            .unwrap_or_else(|| panic!("no {name} cookie in {jar}"))
    };
    (cookie("eid_session"), cookie("eid_browser"))
}

/// curl as the browser holding the ID card (cookies in `dir`/jar): opens `start`, which
/// must lead to the login page, logs in at the card listener, and returns where the
/// provider sends it next (the consent page, or back to the client).
fn card_login(issuer: &str, start: &str, dir: &Path, cert: &Path, key: &Path) -> String {
    let jar = dir.join("jar");
    let curl = |args: &[&str]| -> String {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{redirect_url}", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl ({e}): deploy/test.sh installs it"));
        text(&output.stdout)
    };
    let login = curl(&[start]);
    assert!(login.contains("/login/"), "a login is asked for: {login}");
    let id = login.rsplit('/').next().unwrap().to_owned();
    let card_url = format!(
        "{}/card-login/{id}",
        login_card_url(&dir.join("login.html"), issuer, &id, &jar)
    );
    let root = dir.join("pki/root.pem").display().to_string();
    let handoff = curl(&[
        "--cacert",
        &root,
        "--cert",
        &cert.display().to_string(),
        "--key",
        &key.display().to_string(),
        &card_url,
    ]);
    assert!(handoff.contains("handoff="), "{handoff}");
    curl(&[&handoff])
}

/// A browser holding an ID card, played by curl (cookies in `dir`/jar): opens `start`,
/// which must lead to the login page, logs in at the card listener, allows consent if
/// asked, and returns where the provider sends it at the end (the account page, or
/// the relying party's redirect URI with the authorization response).
fn card_browser(issuer: &str, start: &str, dir: &Path, cert: &Path, key: &Path) -> String {
    let next = card_login(issuer, start, dir, cert, key);
    if !next.contains("/consent/") {
        return next;
    }
    let jar = dir.join("jar");
    let curl = |args: &[&str]| -> String {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{redirect_url}", "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl ({e}): deploy/test.sh installs it"));
        text(&output.stdout)
    };
    let page = dir.join("consent.html");
    let fetched = std::process::Command::new("curl")
        .args(["-s", "-b"])
        .arg(&jar)
        .arg("-o")
        .arg(&page)
        .arg(&next)
        .status()
        .unwrap();
    assert!(fetched.success());
    let html = std::fs::read_to_string(&page).unwrap();
    let csrf = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token on {html}"));
    curl(&["--data", &format!("csrf={csrf}&decision=allow"), &next])
}

/// What the card listener answers a (new) login with this card: the HTTP status.
fn card_login_status(issuer: &str, dir: &Path, cert: &Path, key: &Path) -> String {
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    card_login_status_with(issuer, dir, &["--cert", &cert, "--key", &key], &[])
}

/// What the card listener answers a login where curl presents the card as `tls_args`
/// say (a key file, or a key on a PKCS#11 token through OpenSSL's engine), with `envs`.
pub(super) fn card_login_status_with(
    issuer: &str,
    dir: &Path,
    tls_args: &[&str],
    envs: &[(&str, &str)],
) -> String {
    let jar = dir.join("jar-status");
    let curl = |args: &[&str], write: &str| -> String {
        let output = std::process::Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", write, "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(args)
            .envs(envs.iter().copied())
            .output()
            .unwrap();
        text(&output.stdout)
    };
    let login = curl(&[&format!("{issuer}/account/login")], "%{redirect_url}");
    let id = login.rsplit('/').next().unwrap().to_owned();
    let card_url = format!(
        "{}/card-login/{id}",
        login_card_url(&dir.join("login-status.html"), issuer, &id, &jar)
    );
    let root = dir.join("pki/root.pem").display().to_string();
    curl(
        &[&["--cacert", &root], tls_args, &[&card_url]].concat(),
        "%{http_code}",
    )
}

/// The card listener's base URL, as the login page links it.
fn login_card_url(page: &Path, issuer: &str, id: &str, jar: &Path) -> String {
    let output = std::process::Command::new("curl")
        .args(["-s", "-b"])
        .arg(jar)
        .arg("-o")
        .arg(page)
        .arg(format!("{issuer}/login/{id}"))
        .output()
        .unwrap();
    assert!(output.status.success());
    let html = std::fs::read_to_string(page).unwrap();
    let href = html
        .split("id=\"idcard\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no ID-card link on {html}"));
    href.split("/card-login/").next().unwrap().to_owned()
}

async fn passkey_journey_in_a_real_browser(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let dir = eid.dir.path().to_path_buf();
    // WebAuthn needs a host name: the issuer is localhost, not 127.0.0.1.
    let idp_port = addresses.idp.rsplit(':').next().unwrap().to_owned();
    let issuer = format!("http://localhost:{idp_port}");
    let with_issuer = |args: &[&str]| {
        let mut command = command(&eid, &addresses, args);
        command.env("EID_IDP_ISSUER", &issuer);
        command
    };
    let output = with_issuer(&["init"]).output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let (cert, key, _) = issue_card(&eid, &addresses, &dir, "card", "3900101123456").await;
    let pki = dir.join("pki");
    run(
        &eid,
        &addresses,
        &["ca", "export", "--out", &pki.display().to_string()],
    )
    .await;
    let endpoints = RelyingPartyEndpoints::start(serde_json::json!({ "keys": [] })).await;
    let (client_id, secret) = register(
        &eid,
        &addresses,
        &[
            "--scope",
            "profile",
            "--backchannel-logout-uri",
            &format!("{}/backchannel-logout", endpoints.base),
        ],
    )
    .await;
    let server = {
        let mut command = with_issuer(&["serve"]);
        command.stdout(Stdio::piped());
        Server::start(command, 4).await
    };

    // Level high with the ID card, then a passkey added in the browser.
    let (session, browser_cookie) = card_session(&issuer, &dir, &cert, &key);
    let browser = super::browser::Browser::start().await;
    let authenticator = browser.add_virtual_authenticator().await;
    browser.goto(&format!("{issuer}/healthz")).await;
    browser.add_cookie("eid_session", &session).await;
    browser.add_cookie("eid_browser", &browser_cookie).await;
    browser.goto(&format!("{issuer}/account")).await;
    assert_eq!(browser.text("#level").await, "high");
    assert!(browser.text("#identity").await.contains("3900101123456"));
    assert!(browser.has("#no-passkeys").await);
    browser.type_into("#passkey-name", "Phone").await;
    browser.click_and_wait("#add-passkey").await;
    browser.find("li.passkey").await;
    assert!(browser.text("#passkeys").await.contains("Phone"));
    assert_eq!(browser.credentials(&authenticator).await.len(), 1);

    // Log out everywhere.
    browser.click_and_wait("#logout").await;
    browser.click_and_wait("button#logout").await;
    assert!(browser.text("#message").await.contains("logged out"));

    // A relying party asking for substantial: the passkey logs in, in Spanish.
    let verifier = "a-pkce-verifier-that-is-long-enough-0123456789";
    let challenge = pkce_challenge(verifier);
    let authorize = format!(
        "{issuer}/authorize?client_id={client_id}&response_type=code&scope=openid%20profile&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&state=xyz&nonce=n-1&\
         code_challenge={challenge}&code_challenge_method=S256&ui_locales=es&\
         acr_values=http%3A%2F%2Feidas.europa.eu%2FLoA%2Fsubstantial"
    );
    browser.goto(&authorize).await;
    browser.find("#national-id").await;
    let page = browser.source().await;
    assert!(
        page.contains("Iniciar sesión"),
        "{}: {page}",
        browser.url().await
    );
    browser.type_into("#national-id", "3900101123456").await;
    browser.click("#passkey").await;
    browser.wait_for_url(|url| url.contains("/consent/")).await;
    browser.click_and_wait("#allow").await;
    let back = browser
        .wait_for_url(|url| url.starts_with("http://127.0.0.1:9/callback"))
        .await;
    let query = query_of(&back);
    assert_eq!(query["state"], "xyz");
    assert_eq!(query["iss"], issuer);
    let tokens = redeem_code(
        &format!("http://{}", addresses.idp),
        (&client_id, &secret),
        &query["code"],
        verifier,
    )
    .await;
    let id_token = tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let payload = id_token.split('.').nth(1).unwrap();
    let claims: Value = {
        use base64ct::Encoding;
        serde_json::from_slice(&base64ct::Base64UrlUnpadded::decode_vec(payload).unwrap()).unwrap()
    };
    assert_eq!(claims["acr"], "http://eidas.europa.eu/LoA/substantial");
    assert_eq!(claims["amr"], serde_json::json!(["hwk", "mfa", "user"]));
    assert_eq!(claims["nonce"], "n-1");
    let sid = claims["sid"].as_str().unwrap().to_owned();

    // A service asking for high gets no passkey offer: the session steps up with the card.
    browser
        .goto(&authorize.replace("LoA%2Fsubstantial", "LoA%2Fhigh"))
        .await;
    browser.find("#idcard").await;
    assert!(!browser.has("#passkey-form").await);

    // The consent is listed in self-service and can be withdrawn there.
    browser.goto(&format!("{issuer}/account")).await;
    assert_eq!(browser.text("#level").await, "substantial");
    // Recent logins come from the audit log: the passkey one, then the card one.
    let logins = browser.text("#logins").await;
    assert!(
        logins.contains("passkey, substantial") && logins.contains("ID card, high"),
        "{logins}"
    );
    assert!(
        browser
            .text("#consents")
            .await
            .contains("Board of Inland Revenue")
    );
    assert!(
        !browser.has("#add-passkey").await,
        "a passkey session cannot add passkeys"
    );
    browser.click_and_wait("li.consent button").await;
    browser.find("#identity").await;
    assert!(!browser.has("li.consent").await);

    // A lost card: the citizen suspends it from the account page (a passkey session is
    // enough: the card is gone); OCSP says so at once and the card logs in no more.
    let certificates = browser.text("#certificates").await;
    assert!(
        certificates.contains("citizen-auth") && certificates.contains("active"),
        "{certificates}"
    );
    browser.click_and_wait("li.certificate button").await;
    browser.find("#identity").await;
    assert!(
        browser
            .text("li.certificate .status")
            .await
            .contains("suspended")
    );
    assert_eq!(card_login_status(&issuer, &dir, &cert, &key), "403");

    // Logging out tells the relying party over the back channel (OpenID Connect
    // Back-Channel Logout 1.0): a logout token for the session it knows.
    browser.click_and_wait("#logout").await;
    browser.click_and_wait("button#logout").await;
    browser.find("#message").await;
    let mut token = None;
    for _ in 0..50 {
        if let Some(body) = endpoints.received.lock().unwrap().first() {
            token = Some(body.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = token.expect("a back-channel logout request within 5 s");
    let logout_token = body.strip_prefix("logout_token=").unwrap();
    let logout = payload_of(logout_token);
    assert_eq!(logout["sid"], sid.as_str());
    assert_eq!(logout["aud"], client_id.as_str());
    assert_eq!(logout["iss"], issuer.as_str());
    assert!(logout["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(logout.get("nonce").is_none());
    browser.quit().await;
    server.stop().await;
}

/// The session rules the conformance suite trips providers on most (prompt=none with a
/// session, auth_time kept on reuse, max_age forcing a new login, prompt=login).
async fn session_reuse_follows_max_age_and_prompt(backend: TestBackend) {
    let (eid, addresses, dir, cert, key) = instance_with_card(backend).await;
    let (client_id, secret) = register(&eid, &addresses, &[]).await;
    let server = serve(&eid, &addresses).await;
    let issuer = format!("http://{}", addresses.idp);
    let (session, browser_cookie) = card_session(&issuer, &dir, &cert, &key);
    let cookies = format!("eid_session={session}; eid_browser={browser_cookie}");
    let http = http();
    let verifier = "a-pkce-verifier-that-is-long-enough-0123456789";
    let challenge = pkce_challenge(verifier);
    let authorize = |extra: &str| {
        let url = format!(
            "{issuer}/authorize?client_id={client_id}&response_type=code&scope=openid&state=s&\
             redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={challenge}&\
             code_challenge_method=S256{extra}"
        );
        http.get(url).header("cookie", &cookies).send()
    };
    let token_url = format!("http://{}/token", addresses.idp);
    let id_token_of = |location: String| {
        let http = http.clone();
        let (client_id, secret, token_url) = (client_id.clone(), secret.clone(), token_url.clone());
        async move {
            let query = query_of(&location);
            let tokens: Value = http
                .post(token_url)
                .basic_auth(&client_id, Some(&secret))
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", query["code"].as_str()),
                    ("redirect_uri", "http://127.0.0.1:9/callback"),
                    ("code_verifier", verifier),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            payload_of(
                tokens["id_token"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{tokens}")),
            )
        }
    };
    let location = |response: reqwest::Response| {
        assert_eq!(response.status(), 303);
        response.headers()["location"].to_str().unwrap().to_owned()
    };

    // prompt=none with a good session: a code at once, no page.
    let first = location(authorize("&prompt=none&max_age=3600").await.unwrap());
    assert!(
        first.starts_with("http://127.0.0.1:9/callback?code="),
        "{first}"
    );
    let first = id_token_of(first).await;
    let auth_time = first["auth_time"].as_i64().unwrap();
    assert_eq!(first["acr"], "http://eidas.europa.eu/LoA/high");
    // Reusing the session keeps auth_time (the login did not happen again).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let second = id_token_of(location(authorize("").await.unwrap())).await;
    assert_eq!(second["auth_time"].as_i64().unwrap(), auth_time);
    assert_eq!(second["sid"], first["sid"]);
    // max_age shorter than the session's age: log in again, or login_required.
    let again = location(authorize("&max_age=0").await.unwrap());
    assert!(again.contains("/login/"), "{again}");
    let refused = location(authorize("&max_age=0&prompt=none").await.unwrap());
    assert_eq!(query_of(&refused)["error"], "login_required");
    // prompt=login always shows the login page.
    let forced = location(authorize("&prompt=login").await.unwrap());
    assert!(forced.contains("/login/"), "{forced}");
    // prompt=none without a session cookie: login_required, never a page.
    let anonymous = http
        .get(format!(
            "{issuer}/authorize?client_id={client_id}&response_type=code&scope=openid&\
             redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&code_challenge={challenge}&\
             code_challenge_method=S256&prompt=none"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(query_of(&location(anonymous))["error"], "login_required");
    server.stop().await;
}

/// The `openidconnect` crate's HTTP hook, served by the tests' reqwest (no redirects).
async fn oidc_http(
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, std::io::Error> {
    let (parts, body) = request.into_parts();
    let response = http()
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await
        .map_err(std::io::Error::other)?;
    let mut answer = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        answer = answer.header(name, value);
    }
    let body = response.bytes().await.map_err(std::io::Error::other)?;
    answer.body(body.to_vec()).map_err(std::io::Error::other)
}

/// The code flow driven by the `openidconnect` crate as the relying party: discovery,
/// PKCE, the RFC 9207 `iss` parameter, the code exchange with client_secret_basic, the
/// ID token verified against the JWKS (ES256, iss, aud, exp, nonce, at_hash), acr and
/// amr of an ID-card login, userinfo for the same subject, and a refresh.
async fn id_card_login_is_accepted_by_the_openidconnect_crate(backend: TestBackend) {
    use openidconnect::{
        AccessTokenHash, AuthenticationContextClass, AuthorizationCode, ClientId, ClientSecret,
        CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope,
        TokenResponse,
        core::{
            CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
            CoreUserInfoClaims,
        },
    };

    let (eid, addresses, dir, cert, key) = instance_with_card(backend).await;
    let (client_id, secret) = register(&eid, &addresses, &["--scope", "profile"]).await;
    let server = serve(&eid, &addresses).await;
    let issuer = format!("http://{}", addresses.idp);

    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &oidc_http)
            .await
            .unwrap();
    let client = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.clone()),
        Some(ClientSecret::new(secret)),
    )
    .set_redirect_uri(RedirectUrl::new("http://127.0.0.1:9/callback".into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let high = "http://eidas.europa.eu/LoA/high";
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_auth_context_value(AuthenticationContextClass::new(high.into()))
        .set_pkce_challenge(challenge)
        .url();

    let callback = card_browser(&issuer, url.as_str(), &dir, &cert, &key);
    let response = query_of(&callback);
    assert_eq!(response["state"], *state.secret(), "{callback}");
    assert_eq!(response["iss"], issuer, "RFC 9207");
    let tokens = client
        .exchange_code(AuthorizationCode::new(response["code"].clone()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&oidc_http)
        .await
        .unwrap();
    let id_token = tokens.id_token().expect("an ID token");
    let id_verifier = client
        .id_token_verifier()
        .set_allowed_algs([CoreJwsSigningAlgorithm::EcdsaP256Sha256]);
    let claims = id_token.claims(&id_verifier, &nonce).unwrap();
    let at_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().unwrap(),
        id_token.signing_key(&id_verifier).unwrap(),
    )
    .unwrap();
    assert_eq!(claims.access_token_hash(), Some(&at_hash));
    assert_eq!(
        claims.auth_context_ref().map(|acr| acr.as_str()),
        Some(high)
    );
    let amr: Vec<&str> = claims
        .auth_method_refs()
        .into_iter()
        .flatten()
        .map(|amr| amr.as_str())
        .collect();
    assert_eq!(amr, ["hwk", "mfa", "pin", "sc"]);
    assert!(claims.auth_time().is_some());
    assert!(
        !claims.subject().as_str().contains("3900101123456"),
        "pairwise"
    );

    let userinfo: CoreUserInfoClaims = client
        .user_info(
            tokens.access_token().clone(),
            Some(claims.subject().clone()),
        )
        .unwrap()
        .request_async(&oidc_http)
        .await
        .unwrap();
    assert_eq!(userinfo.subject(), claims.subject());
    let given = userinfo.given_name().and_then(|name| name.get(None));
    assert_eq!(given.map(|name| name.as_str()), Some("Mary"));

    let refreshed = client
        .exchange_refresh_token(tokens.refresh_token().expect("a refresh token"))
        .unwrap()
        .request_async(&oidc_http)
        .await
        .unwrap();
    assert_ne!(
        refreshed.refresh_token().map(|t| t.secret()),
        tokens.refresh_token().map(|t| t.secret()),
        "refresh tokens rotate"
    );
    server.stop().await;
}

on_both_backends!(
    session_reuse_follows_max_age_and_prompt,
    id_card_login_is_accepted_by_the_openidconnect_crate,
    id_card_login_is_accepted_by_an_independent_relying_party,
    protocol_errors_follow_the_specifications,
    passkey_journey_in_a_real_browser,
);
