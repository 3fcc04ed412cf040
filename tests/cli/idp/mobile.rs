//! Mobile-ID login end to end: SoftHSM2 SIMs personalised here (keys generated on
//! them, authentication certificates from the provider's CA through `eid ca issue`),
//! the operator's gateway played by `eid serve sim-gateway` as a separate instance,
//! the provider pinned to it, a citizen in headless Chromium and the tester as the
//! phone through the simulator's phone API.

use std::{path::Path, process::Stdio, time::Duration};

use eid_hsm::CITIZEN_SIGNING_LABEL;
use eid_tests::{
    TestBackend, on_both_backends,
    sim::{self, PIN1, PIN2},
    softhsm::pkcs11_module,
};
use serde_json::Value;

use super::{
    super::{Eid, Server, browser::Browser, text},
    Addresses, command, free_address, http, openssl_serial, payload_of, pkce_challenge, query_of,
    redeem_code, register, run,
};

/// A simulated SIM: its card id and the PEM file of its authentication certificate.
struct Sim {
    card: String,
    certificate: std::path::PathBuf,
}

/// Personalises a blank SoftHSM2 SIM (both key pairs generated on it) and certifies
/// both keys by `eid ca issue`, storing the certificates on the SIM.
async fn make_sim(
    eid: &Eid,
    addresses: &Addresses,
    dir: &Path,
    name: &str,
    national_id: &str,
) -> Sim {
    let card = format!("SIM-{}-{name}", std::process::id());
    let id = card.clone();
    let sim = tokio::task::spawn_blocking(move || sim::personalise(&id).unwrap())
        .await
        .unwrap();
    // A qualified certificate: the CA reads the signing key's QSCD evidence on the SIM.
    let key_store = sim::signing_key_store_config(dir, &card)
        .unwrap()
        .display()
        .to_string();
    let mut pems = Vec::new();
    for (request, profile) in sim.requests.iter().zip(["citizen-auth", "citizen-sign"]) {
        let csr = dir.join(format!("{name}-{profile}.csr"));
        std::fs::write(&csr, request).unwrap();
        let csr = csr.display().to_string();
        let mut args = vec![
            "ca",
            "issue",
            "--profile",
            profile,
            "--csr",
            &csr,
            "--national-id",
            national_id,
            "--given-name",
            "Mary",
            "--surname",
            "Seacole",
        ];
        if profile == "citizen-sign" {
            args.extend([
                "--key-store",
                &key_store,
                "--key-label",
                CITIZEN_SIGNING_LABEL,
            ]);
        }
        pems.push(run(eid, addresses, &args).await);
    }
    let certificate = dir.join(format!("{name}.pem"));
    std::fs::write(&certificate, &pems[0]).unwrap();
    tokio::task::spawn_blocking(move || sim.finish(&pems[0], Some(&pems[1])).unwrap())
        .await
        .unwrap();
    Sim { card, certificate }
}

/// The operator's gateway: an instance of its own (the operator is not us), serving
/// the simulator with the SIMs registered.
struct Gateway {
    url: String,
    pin: String,
    _server: tokio::process::Child,
    _eid: Option<Eid>,
}

async fn start_gateway(sims: &[(&str, &str, &Sim)]) -> Gateway {
    let eid = Eid::new(TestBackend::Sqlite).await;
    let gateway_command = |args: &[&str]| {
        let mut command = eid.command(args);
        command.env("EID_SIM_GATEWAY_MODULE", pkcs11_module());
        command
    };
    let output = gateway_command(&["init"]).output().await.unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    for (phone, national_id, sim) in sims {
        let output = gateway_command(&[
            "sim-gateway",
            "add-sim",
            "--phone",
            phone,
            "--national-id",
            national_id,
            "--card",
            &sim.card,
        ])
        .output()
        .await
        .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
    }
    let (url, pin, server) = serve_gateway(&eid).await;
    Gateway {
        url,
        pin,
        _server: server,
        _eid: Some(eid),
    }
}

/// Serves the simulator of instance `eid`: its URL, its key's pin, its process.
async fn serve_gateway(eid: &Eid) -> (String, String, tokio::process::Child) {
    let gateway_command = |args: &[&str]| {
        let mut command = eid.command(args);
        command.env("EID_SIM_GATEWAY_MODULE", pkcs11_module());
        command
    };
    let output = gateway_command(&["sim-gateway", "pin"])
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    let pin = text(&output.stdout).trim().to_owned();
    let address = free_address();
    let server = gateway_command(&["serve", "sim-gateway"])
        .env("EID_SIM_GATEWAY_LISTEN", &address)
        .env("EID_SIM_GATEWAY_ANSWER_SECS", "30")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(&address).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (format!("https://{address}"), pin, server)
}

/// `eid serve` with mobile ID pinned to `gateway`, a signature API caller (token
/// [`SIGNING_TOKEN`]) and 2 s polls at the gateway; the CA certificates exported to
/// the instance's `pki` folder.
async fn serve_with_mobile_id(eid: &Eid, addresses: &Addresses, gateway: &Gateway) -> Server {
    let dir = eid.dir.path();
    let config = dir.join("eid.toml");
    std::fs::write(
        &config,
        "[[signing.api_client]]\nname = \"bir\"\ntoken_env = \"EID_TEST_SIGNING_TOKEN\"\n\
         [mobile_id]\npoll_secs = 2\n",
    )
    .unwrap();
    let server = {
        let mut command = command(eid, addresses, &["serve"]);
        command
            .env("EID_CONFIG", &config)
            .env("EID_TEST_SIGNING_TOKEN", SIGNING_TOKEN)
            .env("EID_MOBILE_ID_GATEWAY_URL", &gateway.url)
            .env("EID_MOBILE_ID_GATEWAY_PIN", &gateway.pin)
            .stdout(Stdio::piped());
        Server::start(command, 4).await
    };
    let pki = dir.join("pki").display().to_string();
    run(eid, addresses, &["ca", "export", "--out", &pki]).await;
    server
}

impl Gateway {
    /// The phone's side, through the simulator's phone API (curl: TLS to the
    /// simulator's self-signed certificate, which the phone trusts).
    fn phone(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let mut command = std::process::Command::new("curl");
        command
            .args([
                "-sS",
                "-k",
                "-X",
                method,
                "-H",
                "content-type: application/json",
            ])
            .arg(format!("{}{path}", self.url));
        if let Some(body) = body {
            command.args(["--data", &body.to_string()]);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", text(&output.stdout)))
    }

    /// The one prompt waiting on `phone`, once it arrives.
    async fn prompt(&self, phone: &str) -> Value {
        let path = format!("/phone/api/{}/pending", phone.replace('+', "%2B"));
        for _ in 0..100 {
            let pending = self.phone("GET", &path, None);
            if let Some(first) = pending.as_array().and_then(|a| a.first()) {
                return first.clone();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no prompt reached {phone}");
    }

    fn answer(&self, phone: &str, prompt: &Value, action: &str, body: Option<&Value>) -> Value {
        let path = format!(
            "/phone/api/{}/sessions/{}/{action}",
            phone.replace('+', "%2B"),
            prompt["session_id"].as_str().unwrap()
        );
        self.phone("POST", &path, body)
    }
}

const PHONE: &str = "+18685550161";
const SIGNING_TOKEN: &str = "a-signature-api-token-of-the-board-of-inland-revenue";
const NATIONAL_ID: &str = "3900101123456";
const REVOKED_PHONE: &str = "+18685550162";
const REVOKED_ID: &str = "3900101654321";

/// A provider with mobile ID: its instance, the operator's simulator with two SIMs
/// (the second one's certificate revoked), and `eid serve` pinned to the simulator.
struct Stand {
    eid: Eid,
    addresses: Addresses,
    gateway: Gateway,
    server: Server,
    issuer: String,
    dir: std::path::PathBuf,
}

async fn stand(backend: TestBackend, extra_clients: &[&[&str]]) -> (Stand, Vec<(String, String)>) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let dir = eid.dir.path().to_path_buf();
    run(&eid, &addresses, &["init"]).await;
    // SIM names unique within the test process (SoftHSM2's tokens are shared by all).
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let tag = format!(
        "{backend:?}-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let sim = make_sim(&eid, &addresses, &dir, &format!("mid-{tag}"), NATIONAL_ID).await;
    let revoked = make_sim(&eid, &addresses, &dir, &format!("lost-{tag}"), REVOKED_ID).await;
    run(
        &eid,
        &addresses,
        &[
            "ca",
            "revoke",
            "--serial",
            &openssl_serial(&revoked.certificate),
            "--reason",
            "keyCompromise",
        ],
    )
    .await;
    let gateway = start_gateway(&[
        (PHONE, NATIONAL_ID, &sim),
        (REVOKED_PHONE, REVOKED_ID, &revoked),
    ])
    .await;
    let mut clients = vec![register(&eid, &addresses, &[]).await];
    for extra in extra_clients {
        clients.push(register(&eid, &addresses, extra).await);
    }
    let server = serve_with_mobile_id(&eid, &addresses, &gateway).await;
    let issuer = format!("http://{}", addresses.idp);
    (
        Stand {
            eid,
            addresses,
            gateway,
            server,
            issuer,
            dir,
        },
        clients,
    )
}

async fn mobile_id_login_in_a_real_browser(backend: TestBackend) {
    let (stand, clients) = stand(backend, &[]).await;
    let Stand {
        eid,
        addresses,
        gateway,
        server,
        issuer,
        ..
    } = stand;
    let (client_id, secret) = clients[0].clone();
    let verifier = "a-pkce-verifier-for-the-mobile-id-login-0123456789";
    let challenge = pkce_challenge(verifier);
    let authorize = format!(
        "{issuer}/authorize?client_id={client_id}&response_type=code&scope=openid&\
         redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcallback&state=mid&nonce=n-mid&\
         code_challenge={challenge}&code_challenge_method=S256&\
         acr_values=http%3A%2F%2Feidas.europa.eu%2FLoA%2Fhigh"
    );
    let browser = Browser::start().await;
    let login = |phone: &'static str, national_id: &'static str| {
        let browser = &browser;
        let authorize = &authorize;
        async move {
            browser.goto(authorize).await;
            browser.type_into("#mobile-phone", phone).await;
            browser.type_into("#mobile-national-id", national_id).await;
            browser.click("#mobile-id").await;
        }
    };

    // A phone number the gateway would refuse never leaves the provider.
    login("5550161", NATIONAL_ID).await;
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("Check the phone number"), "{message}");

    // The citizen cancels on the phone: the waiting page says so.
    login(PHONE, NATIONAL_ID).await;
    let code = browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(PHONE).await;
    assert_eq!(prompt["verification_code"], code.as_str());
    assert_eq!(prompt["pin"], "PIN1");
    assert!(
        prompt["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Board of Inland Revenue"),
        "{prompt}"
    );
    gateway.answer(PHONE, &prompt, "cancel", None);
    let message = browser.text_when_shown("#mobile-error").await;
    assert_eq!(message, "You cancelled on your phone.");

    // A national identity number with no mobile ID on that phone.
    login(PHONE, "3900101999999").await;
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("no active mobile ID"), "{message}");

    // A revoked certificate: the SIM signs, the provider refuses.
    login(REVOKED_PHONE, REVOKED_ID).await;
    browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(REVOKED_PHONE).await;
    let confirmed = gateway.answer(
        REVOKED_PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    assert_eq!(confirmed["outcome"], "signed", "{confirmed}");
    let message = browser.text_when_shown("#mobile-error").await;
    assert!(message.contains("revoked or suspended"), "{message}");

    // The real thing: code compared, PIN1 on the phone, logged in at level high.
    login(PHONE, NATIONAL_ID).await;
    let code = browser.text_when_shown("#verification-code").await;
    let prompt = gateway.prompt(PHONE).await;
    assert_eq!(prompt["verification_code"], code.as_str());
    let wrong = gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": "0000" })),
    );
    assert_eq!(wrong["outcome"], "wrong-pin", "{wrong}");
    gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    let next = browser
        .wait_for_url(|url| url.contains("/consent/") || url.starts_with("http://127.0.0.1:9/"))
        .await;
    if next.contains("/consent/") {
        browser.click_and_wait("#allow").await;
    }
    let back = browser
        .wait_for_url(|url| url.starts_with("http://127.0.0.1:9/callback"))
        .await;
    let query = query_of(&back);
    assert_eq!(query["state"], "mid");
    let tokens = redeem_code(&issuer, (&client_id, &secret), &query["code"], verifier).await;
    let claims = payload_of(
        tokens["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{tokens}")),
    );
    assert_eq!(claims["acr"], "http://eidas.europa.eu/LoA/high");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["hwk", "mca", "mfa", "pin"])
    );
    assert_eq!(claims["nonce"], "n-mid");
    browser.quit().await;
    server.stop().await;

    // Every refusal and the login are in the audit log, and the chain is intact.
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "60"]).await;
    for expected in [
        "idp.mobile-id.start",
        "USER_CANCELLED",
        "NOT_MID_CLIENT",
        "REVOKED",
        "idp.mobile-id.authenticated",
    ] {
        assert!(tail.contains(expected), "{expected} missing from {tail}");
    }
    run(&eid, &addresses, &["audit", "verify"]).await;
}

/// A ping-mode client's notification endpoint: records the Authorization header and
/// the body of each notification.
async fn notification_endpoint() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<(String, Value)>>>,
) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/ciba",
        post(
            move |headers: axum::http::HeaderMap, body: axum::Json<Value>| async move {
                let bearer = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                sink.lock().unwrap().push((bearer, body.0));
                axum::http::StatusCode::NO_CONTENT
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ciba", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

const CIBA: &str = "urn:openid:params:grant-type:ciba";

async fn ciba_in_poll_and_ping_with_mobile_id(backend: TestBackend) {
    let (ping_url, pings) = notification_endpoint().await;
    let (stand, clients) = stand(
        backend,
        &[
            &["--grant", CIBA, "--scope", "profile"],
            &[
                "--grant",
                CIBA,
                "--ciba-mode",
                "ping",
                "--ciba-notification-endpoint",
                &ping_url,
            ],
        ],
    )
    .await;
    let (browser_client, poll_client, ping_client) = (&clients[0], &clients[1], &clients[2]);
    let issuer = &stand.issuer;
    let http = http();
    let discovery =
        super::get_json(&http, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(
        discovery["backchannel_authentication_endpoint"],
        format!("{issuer}/backchannel/authenticate")
    );
    assert_eq!(
        discovery["backchannel_token_delivery_modes_supported"],
        serde_json::json!(["poll", "ping"])
    );
    assert!(
        discovery["grant_types_supported"]
            .as_array()
            .unwrap()
            .contains(&Value::from(CIBA))
    );
    let endpoint = format!("{issuer}/backchannel/authenticate");
    let ask = |client: &(String, String), form: Vec<(&'static str, String)>| {
        answer_of(
            http.post(&endpoint)
                .basic_auth(&client.0, Some(&client.1))
                .form(&form),
        )
    };
    let hint = format!("phone={PHONE};national_id={NATIONAL_ID}");
    let form = |extra: &[(&'static str, &str)]| {
        let mut form = vec![
            ("scope", "openid profile".to_owned()),
            ("login_hint", hint.clone()),
        ];
        for (k, v) in extra {
            form.retain(|(name, _)| name != k);
            form.push((k, (*v).to_owned()));
        }
        form
    };

    // Bad requests, each refused in CIBA's own terms before any phone rings.
    for (client, form, status, error) in [
        (browser_client, form(&[]), 400, "unauthorized_client"),
        (
            poll_client,
            form(&[("scope", "profile")]),
            400,
            "invalid_scope",
        ),
        (
            poll_client,
            form(&[("scope", "openid contact")]),
            400,
            "invalid_scope",
        ),
        (
            poll_client,
            form(&[("login_hint", "+18685550161")]),
            400,
            "invalid_request",
        ),
        (
            poll_client,
            form(&[("login_hint", "phone=5550161;national_id=3900101123456")]),
            400,
            "invalid_request",
        ),
        (
            poll_client,
            form(&[("id_token_hint", "x")]),
            400,
            "invalid_request",
        ),
        (
            poll_client,
            form(&[(
                "binding_message",
                "a message far longer than the phone can show",
            )]),
            400,
            "invalid_binding_message",
        ),
        (
            poll_client,
            form(&[("user_code", "1234")]),
            400,
            "invalid_request",
        ),
        (ping_client, form(&[]), 400, "invalid_request"),
    ] {
        let (got_status, body) = ask(client, form.clone()).await;
        assert_eq!(
            (got_status, body["error"].as_str().unwrap()),
            (status, error),
            "{form:?}: {body}"
        );
    }
    let (status, body) = ask(&(poll_client.0.clone(), "wrong".into()), form(&[])).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (401, "invalid_client")
    );

    let token = |client: &(String, String), auth_req_id: &str| {
        ciba_token(issuer, client.clone(), auth_req_id.to_owned())
    };

    // Poll mode: pending, too fast, then the citizen confirms on the phone.
    let (status, started) = ask(
        poll_client,
        form(&[("binding_message", "Call 4471 at BIR")]),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started["interval"], 5);
    assert_eq!(started["expires_in"], 300);
    let auth_req_id = started["auth_req_id"].as_str().unwrap().to_owned();
    let (status, body) = token(poll_client, &auth_req_id).await;
    assert_eq!(
        (status, body["error"].as_str().unwrap()),
        (400, "authorization_pending")
    );
    let (_, body) = token(poll_client, &auth_req_id).await;
    assert_eq!(body["error"], "slow_down", "{body}");
    let (_, body) = token(ping_client, &auth_req_id).await;
    assert_eq!(
        body["error"], "invalid_grant",
        "another client's request: {body}"
    );
    let prompt = stand.gateway.prompt(PHONE).await;
    assert_eq!(prompt["verification_code"], started["verification_code"]);
    assert!(
        prompt["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Call 4471 at BIR"),
        "{prompt}"
    );
    stand.gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    let tokens = poll_until_issued(&token, poll_client, &auth_req_id).await;
    let claims = payload_of(tokens["id_token"].as_str().unwrap());
    assert_eq!(claims["acr"], "http://eidas.europa.eu/LoA/high");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["hwk", "mca", "mfa", "pin"])
    );
    assert_eq!(claims["aud"], poll_client.0.as_str());
    // An auth_req_id is not an authorization code: presented as one it is unknown,
    // and the grant it made stays (the access token below still works).
    let as_code = redeem_code(
        issuer,
        (&browser_client.0, &browser_client.1),
        &auth_req_id,
        "a-pkce-verifier-that-is-long-enough-0123456789",
    )
    .await;
    assert_eq!(as_code["error"], "invalid_grant", "{as_code}");
    assert!(
        as_code["error_description"]
            .as_str()
            .unwrap()
            .contains("unknown"),
        "{as_code}"
    );
    let userinfo: Value = http
        .get(format!("{issuer}/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["family_name"], "Seacole", "{userinfo}");
    assert_eq!(userinfo["sub"], claims["sub"]);
    let (_, body) = token(poll_client, &auth_req_id).await;
    assert_eq!(
        body["error"], "invalid_grant",
        "a second redemption: {body}"
    );

    // The citizen cancels: access_denied. A revoked certificate: access_denied too.
    for (phone, national_id, action) in [
        (PHONE, NATIONAL_ID, "cancel"),
        (REVOKED_PHONE, REVOKED_ID, "confirm"),
    ] {
        let hint = format!("phone={phone};national_id={national_id}");
        let (status, started) = ask(poll_client, form(&[("login_hint", &hint)])).await;
        assert_eq!(status, 200, "{started}");
        let auth_req_id = started["auth_req_id"].as_str().unwrap().to_owned();
        let prompt = stand.gateway.prompt(phone).await;
        let body = (action == "confirm").then(|| serde_json::json!({ "pin": PIN1 }));
        stand.gateway.answer(phone, &prompt, action, body.as_ref());
        let refused = poll_until_refused(&token, poll_client, &auth_req_id).await;
        assert_eq!(refused["error"], "access_denied", "{action}: {refused}");
    }

    // Ping mode: the provider calls the client's endpoint with its token, then the
    // client collects the tokens.
    let (status, started) = ask(
        ping_client,
        form(&[("client_notification_token", "ping-token-8f2c61d0a4b7e9")]),
    )
    .await;
    assert_eq!(status, 200, "{started}");
    let auth_req_id = started["auth_req_id"].as_str().unwrap().to_owned();
    let prompt = stand.gateway.prompt(PHONE).await;
    stand.gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    let mut notified = None;
    for _ in 0..100 {
        if let Some(first) = pings.lock().unwrap().first().cloned() {
            notified = Some(first);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (bearer, body) = notified.expect("the ping-mode client was notified");
    assert_eq!(bearer, "Bearer ping-token-8f2c61d0a4b7e9");
    assert_eq!(body["auth_req_id"], auth_req_id.as_str());
    let (status, tokens) = token(ping_client, &auth_req_id).await;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["id_token"].is_string());

    // The provider restarts while the citizen has not answered: the new process takes
    // the request up (no process marked it for two polls and a margin: 9 s here).
    let (status, started) = ask(poll_client, form(&[])).await;
    assert_eq!(status, 200, "{started}");
    let auth_req_id = started["auth_req_id"].as_str().unwrap().to_owned();
    let Stand {
        eid,
        addresses,
        server,
        gateway,
        ..
    } = stand;
    server.stop().await;
    let server = serve_with_mobile_id(&eid, &addresses, &gateway).await;
    let prompt = gateway.prompt(PHONE).await;
    gateway.answer(
        PHONE,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    let tokens = poll_until_issued(&token, poll_client, &auth_req_id).await;
    assert!(tokens["id_token"].is_string(), "{tokens}");
    server.stop().await;
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "80"]).await;
    for expected in [
        "idp.ciba.request",
        "idp.ciba.authenticated",
        "idp.ciba.notify",
    ] {
        assert!(tail.contains(expected), "{expected} missing from {tail}");
    }
    run(&eid, &addresses, &["audit", "verify"]).await;
}

/// The status and JSON body of the answer to `request`.
pub(super) async fn answer_of(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap())
}

/// The token endpoint's answer to `client` (id, secret) asking for CIBA request
/// `auth_req_id`'s tokens.
async fn ciba_token(issuer: &str, client: (String, String), auth_req_id: String) -> (u16, Value) {
    answer_of(
        http()
            .post(format!("{issuer}/token"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("grant_type", CIBA), ("auth_req_id", &auth_req_id)]),
    )
    .await
}

/// Polls the token endpoint at the asked interval until the tokens come.
async fn poll_until_issued<F, Fut>(token: &F, client: &(String, String), auth_req_id: &str) -> Value
where
    F: Fn(&(String, String), &str) -> Fut,
    Fut: Future<Output = (u16, Value)>,
{
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, body) = token(client, auth_req_id).await;
        if status == 200 {
            return body;
        }
        assert_eq!(body["error"], "authorization_pending", "{body}");
    }
    panic!("no tokens within a minute");
}

/// Polls the token endpoint until the request is refused; returns the error body.
async fn poll_until_refused<F, Fut>(
    token: &F,
    client: &(String, String),
    auth_req_id: &str,
) -> Value
where
    F: Fn(&(String, String), &str) -> Fut,
    Fut: Future<Output = (u16, Value)>,
{
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (status, body) = token(client, auth_req_id).await;
        assert_ne!(status, 200, "{body}");
        if body["error"] != "authorization_pending" {
            return body;
        }
    }
    panic!("no answer within a minute");
}

/// A one-page PDF, written out with its cross-reference table.
pub(super) fn sample_pdf() -> Vec<u8> {
    eid_tests::pdf::one_page("Tax return")
}

/// pyHanko from the judges' environment deploy/test.sh installs, else from PATH.
pub(super) fn pyhanko() -> std::path::PathBuf {
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/judges/bin/pyhanko");
    if installed.is_file() {
        return installed;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pyhanko"))
                .find(|p| p.is_file())
        })
        .expect("pyHanko is not installed: deploy/test.sh installs the judges")
}

/// The signature API at `signing` (its base URL): the status and the JSON answer.
async fn signature_api(
    signing: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = http()
        .request(method, format!("{signing}{path}"))
        .bearer_auth(SIGNING_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    answer_of(request).await
}

/// The request to sign `pdf` at B-LT with the SIM of `phone`, visibly, in the lower
/// left corner of page 1.
fn mobile_signature(phone: &str, national_id: &str, pdf: &[u8]) -> Value {
    use base64ct::{Base64, Encoding};
    serde_json::json!({
        "phone_number": phone,
        "national_id": national_id,
        "document": Base64::encode_string(pdf),
        "format": "pades",
        "level": "LT",
        "display_text": "Tax return 2026",
        "visible_signature": { "page": 1, "rect": [56, 56, 306, 126] },
    })
}

/// Signs the sample PDF with the SIM of `phone`: the phone shows the same code and
/// asks for PIN2 (PIN1 is refused), then PIN2 signs; returns the signed PDF's path.
async fn sign_with_the_sim(
    signing: &str,
    gateway: &Gateway,
    phone: &str,
    national_id: &str,
    pin2: &str,
    dir: &Path,
) -> std::path::PathBuf {
    use base64ct::{Base64, Encoding};
    let (status, started) = signature_api(
        signing,
        reqwest::Method::POST,
        "/api/v1/signatures/mobile-id",
        Some(mobile_signature(phone, national_id, &sample_pdf())),
    )
    .await;
    assert_eq!(status, 202, "{started}");
    let prompt = gateway.prompt(phone).await;
    assert_eq!(prompt["verification_code"], started["verification_code"]);
    assert_eq!(prompt["pin"], "PIN2");
    assert!(
        prompt["prompt"]
            .as_str()
            .unwrap()
            .starts_with("Tax return 2026"),
        "{prompt}"
    );
    let wrong = gateway.answer(
        phone,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": PIN1 })),
    );
    assert_eq!(wrong["outcome"], "wrong-pin", "{wrong}");
    gateway.answer(
        phone,
        &prompt,
        "confirm",
        Some(&serde_json::json!({ "pin": pin2 })),
    );
    let (status, finished) = signature_api(
        signing,
        reqwest::Method::GET,
        started["status"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{finished}");
    assert_eq!(finished["level"], "LT");
    let signed = Base64::decode_vec(finished["document"].as_str().unwrap()).unwrap();
    let path = dir.join(format!("signed-by-{}.pdf", national_id));
    std::fs::write(&path, &signed).unwrap();
    path
}

/// What pyHanko says of a signature followed by a DSS revision (B-LT).
pub(super) const MAINTENANCE_ONLY: &str = "All modifications relate to signature maintenance";

/// pyHanko judges `pdf` with `root` as the only trust anchor: valid, trusted,
/// time-stamped, signed by `signer` (the identifier in the signer's subject, such as
/// `PNOTT-…`), and `coverage` said of what follows the signature.
pub(super) fn assert_pyhanko_valid(root: &Path, pdf: &Path, signer: &str, coverage: &str) {
    let output = std::process::Command::new(pyhanko())
        .args(["sign", "validate", "--pretty-print", "--trust"])
        .arg(root)
        .arg("--trust-replace")
        .arg(pdf)
        .output()
        .unwrap();
    let said = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "pyHanko: {said}");
    for line in [
        signer,
        "The signer's certificate is trusted.",
        "The signature is cryptographically sound.",
        "The signature is judged VALID.",
        "The timestamp token is cryptographically sound.",
        "The TSA certificate is trusted.",
        coverage,
    ] {
        assert!(said.contains(line), "pyHanko did not say {line}: {said}");
    }
}

async fn pdf_signed_with_the_sim_is_judged_by_pyhanko(backend: TestBackend) {
    let (stand, _) = stand(backend, &[]).await;
    let signing = stand.server.urls["signing"].clone();
    let pdf = sample_pdf();
    let post = |national_id: &str| {
        signature_api(
            &signing,
            reqwest::Method::POST,
            "/api/v1/signatures/mobile-id",
            Some(mobile_signature(PHONE, national_id, &pdf)),
        )
    };

    // No mobile ID for that national identity number: refused before anything is signed.
    let (status, body) = post("3900101999999").await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("NOT_MID_CLIENT"),
        "{body}"
    );

    // The citizen cancels on the phone: the pending signature is used up.
    let (status, started) = post(NATIONAL_ID).await;
    assert_eq!(status, 202, "{started}");
    let status_path = started["status"].as_str().unwrap().to_owned();
    let prompt = stand.gateway.prompt(PHONE).await;
    stand.gateway.answer(PHONE, &prompt, "cancel", None);
    let (status, body) = signature_api(&signing, reqwest::Method::GET, &status_path, None).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("USER_CANCELLED"),
        "{body}"
    );
    let (status, _) = signature_api(&signing, reqwest::Method::GET, &status_path, None).await;
    assert_eq!(status, 409);

    // A gateway that answers with a signature that does not verify: refused, used up.
    let (status, started) = post(NATIONAL_ID).await;
    assert_eq!(status, 202, "{started}");
    let prompt = stand.gateway.prompt(PHONE).await;
    stand.gateway.answer(
        PHONE,
        &prompt,
        "fault",
        Some(&serde_json::json!({ "fault": "bad-signature" })),
    );
    let (status, body) = signature_api(
        &signing,
        reqwest::Method::GET,
        started["status"].as_str().unwrap(),
        None,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["detail"].as_str().unwrap().contains("does not verify"),
        "{body}"
    );

    // Signed with PIN2 on the SIM, judged by pyHanko.
    let signed = sign_with_the_sim(
        &signing,
        &stand.gateway,
        PHONE,
        NATIONAL_ID,
        PIN2,
        &stand.dir,
    )
    .await;
    assert_pyhanko_valid(
        &stand.dir.join("pki/root.pem"),
        &signed,
        &format!("PNOTT-{NATIONAL_ID}"),
        MAINTENANCE_ONLY,
    );

    let Stand {
        eid,
        addresses,
        server,
        ..
    } = stand;
    server.stop().await;
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "40"]).await;
    for expected in [
        "signature.mobile-id.start",
        "signature.finalize",
        "USER_CANCELLED",
    ] {
        assert!(tail.contains(expected), "{expected} missing from {tail}");
    }
}

/// The README's mobile-ID journey on one instance: `eid sim-gateway test-sim` makes
/// and certifies a SIM, `eid serve sim-gateway` and `eid serve` run side by side on
/// the same data (and audit log), a PDF is signed with the SIM and judged by pyHanko.
async fn readme_journey_on_one_instance(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    let dir = eid.dir.path().to_path_buf();
    run(&eid, &addresses, &["init"]).await;
    let card = format!("SIM-{}-readme-{backend:?}", std::process::id());
    let phone = match backend {
        TestBackend::Sqlite => "+18685550171",
        TestBackend::Postgres => "+18685550172",
    };
    let made = {
        let mut test_sim = command(
            &eid,
            &addresses,
            &[
                "sim-gateway",
                "test-sim",
                "--phone",
                phone,
                "--national-id",
                "3900101222222",
                "--given-name",
                "Mary",
                "--surname",
                "Seacole",
                "--card",
                &card,
            ],
        );
        eid_tests::softhsm::softhsm_environment();
        let output = test_sim
            .env("EID_SIM_GATEWAY_MODULE", pkcs11_module())
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{}", text(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    assert_eq!(made["sim"]["phone_number"], phone);
    assert_eq!(made["certificates"].as_array().unwrap().len(), 2);
    let pin2 = made["pin2"].as_str().unwrap().to_owned();
    let (url, pin, server) = serve_gateway(&eid).await;
    let gateway = Gateway {
        url,
        pin,
        _server: server,
        _eid: None,
    };
    let server = serve_with_mobile_id(&eid, &addresses, &gateway).await;
    let signing = server.urls["signing"].clone();
    let signed = sign_with_the_sim(&signing, &gateway, phone, "3900101222222", &pin2, &dir).await;
    assert_pyhanko_valid(
        &dir.join("pki/root.pem"),
        &signed,
        "PNOTT-3900101222222",
        MAINTENANCE_ONLY,
    );
    server.stop().await;
    // Both processes appended to one audit chain; it is intact.
    run(&eid, &addresses, &["audit", "verify"]).await;
}

/// What a gateway gets wrong, or a phone that cannot be reached, ends in no login: the
/// relying party gets access_denied naming the cause, the audit log a denied event.
async fn faults_of_the_gateway_are_refused(backend: TestBackend) {
    let (stand, clients) = stand(backend, &[&["--grant", CIBA]]).await;
    let client = &clients[1];
    let http = http();
    let issuer = &stand.issuer;
    let token = |client: &(String, String), auth_req_id: &str| {
        ciba_token(issuer, client.clone(), auth_req_id.to_owned())
    };
    let hint = format!("phone={PHONE};national_id={NATIONAL_ID}");
    for (fault, code) in [
        (
            serde_json::json!({ "fault": "bad-signature" }),
            "BAD_SIGNATURE",
        ),
        (
            serde_json::json!({ "fault": "other-certificate", "other_phone": REVOKED_PHONE }),
            "WRONG_PERSON",
        ),
        (
            serde_json::json!({ "fault": "hash-mismatch" }),
            "SIGNATURE_HASH_MISMATCH",
        ),
        (
            serde_json::json!({ "fault": "phone-absent" }),
            "PHONE_ABSENT",
        ),
        (
            serde_json::json!({ "fault": "delivery-error" }),
            "DELIVERY_ERROR",
        ),
        // The gateway stops answering: the poll's timeout and margin (2 s + 1.5 s here).
        (serde_json::json!({ "fault": "silence" }), "UNAVAILABLE"),
    ] {
        let started: Value = http
            .post(format!("{issuer}/backchannel/authenticate"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[("scope", "openid"), ("login_hint", &hint)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let auth_req_id = started["auth_req_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{code}: {started}"))
            .to_owned();
        let prompt = stand.gateway.prompt(PHONE).await;
        let answer = stand.gateway.answer(PHONE, &prompt, "fault", Some(&fault));
        assert_eq!(answer["outcome"], "fault", "{code}: {answer}");
        let refused = poll_until_refused(&token, client, &auth_req_id).await;
        assert_eq!(refused["error"], "access_denied", "{code}: {refused}");
        assert!(
            refused["error_description"]
                .as_str()
                .unwrap()
                .contains(code),
            "{code}: {refused}"
        );
    }
    let Stand {
        eid,
        addresses,
        server,
        ..
    } = stand;
    server.stop().await;
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "60"]).await;
    for code in [
        "BAD_SIGNATURE",
        "WRONG_PERSON",
        "SIGNATURE_HASH_MISMATCH",
        "PHONE_ABSENT",
        "DELIVERY_ERROR",
        "UNAVAILABLE",
    ] {
        assert!(tail.contains(code), "{code} missing from {tail}");
    }
    run(&eid, &addresses, &["audit", "verify"]).await;
}

on_both_backends!(
    faults_of_the_gateway_are_refused,
    mobile_id_login_in_a_real_browser,
    ciba_in_poll_and_ping_with_mobile_id,
    pdf_signed_with_the_sim_is_judged_by_pyhanko,
    readme_journey_on_one_instance
);
