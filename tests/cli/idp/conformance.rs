//! The OpenID Foundation conformance suite's OP certification plans, ported into tests:
//! Basic, Config, RP-Initiated Logout and Back-Channel Logout. Each module of the
//! published plans either runs here, under its module name, or is recorded as not
//! applicable (the suite skips it too), with the reason; at the end every plan's module
//! list must be accounted for. The suite itself needs Java 21,
//! MongoDB and a public host, none of which this machine offers.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use base64ct::{Base64UrlUnpadded, Encoding};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::Value;
use sha2::Digest;

use super::{
    RelyingPartyEndpoints, card_browser, command, get_json, http, instance_with_card, jar_cookies,
    payload_of, query_of, register, run,
};

const REDIRECT: &str = "http://127.0.0.1:9/callback";
const REDIRECT_ENCODED: &str = "http%3A%2F%2F127.0.0.1%3A9%2Fcallback";
const LOGGED_OUT: &str = "http://127.0.0.1:9/logged-out";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-0123456789";
const HIGH: &str = "http://eidas.europa.eu/LoA/high";

/// How a module of a plan ended.
enum Outcome {
    Passed,
    /// The suite skips it for this provider's metadata; why.
    NotApplicable(&'static str),
}

/// One certification plan: its published module list and what became of each module.
struct Plan {
    name: &'static str,
    modules: &'static [&'static str],
    results: Vec<(&'static str, Outcome)>,
}

impl Plan {
    fn new(name: &'static str, modules: &'static [&'static str]) -> Self {
        Self {
            name,
            modules,
            results: Vec::new(),
        }
    }

    fn record(&mut self, module: &'static str, outcome: Outcome) {
        assert!(
            self.modules.contains(&module),
            "{module} is not in {}",
            self.name
        );
        assert!(
            self.results.iter().all(|(m, _)| *m != module),
            "{module} recorded twice"
        );
        self.results.push((module, outcome));
    }

    fn passed(&mut self, module: &'static str) {
        self.record(module, Outcome::Passed);
    }

    /// Every module of the plan was run or is accounted for; prints the plan's table.
    fn finish(self) {
        let missing: Vec<_> = self
            .modules
            .iter()
            .filter(|m| self.results.iter().all(|(r, _)| r != *m))
            .collect();
        assert!(missing.is_empty(), "{}: not run: {missing:?}", self.name);
        eprintln!("{}:", self.name);
        for (module, outcome) in &self.results {
            match outcome {
                Outcome::Passed => eprintln!("  PASSED          {module}"),
                Outcome::NotApplicable(why) => eprintln!("  NOT APPLICABLE  {module}: {why}"),
            }
        }
    }
}

const BASIC: &[&str] = &[
    "oidcc-server",
    "oidcc-response-type-missing",
    "oidcc-idtoken-signature",
    "oidcc-idtoken-unsigned",
    "oidcc-userinfo-get",
    "oidcc-userinfo-post-header",
    "oidcc-userinfo-post-body",
    "oidcc-ensure-request-without-nonce-succeeds-for-code-flow",
    "oidcc-scope-profile",
    "oidcc-scope-email",
    "oidcc-scope-address",
    "oidcc-scope-phone",
    "oidcc-scope-all",
    "oidcc-ensure-other-scope-order-succeeds",
    "oidcc-display-page",
    "oidcc-display-popup",
    "oidcc-prompt-login",
    "oidcc-prompt-none-not-logged-in",
    "oidcc-prompt-none-logged-in",
    "oidcc-max-age-1",
    "oidcc-max-age-10000",
    "oidcc-ensure-request-with-unknown-parameter-succeeds",
    "oidcc-id-token-hint",
    "oidcc-login-hint",
    "oidcc-ui-locales",
    "oidcc-claims-locales",
    "oidcc-ensure-request-with-acr-values-succeeds",
    "oidcc-codereuse",
    "oidcc-codereuse-30seconds",
    "oidcc-ensure-registered-redirect-uri",
    "oidcc-ensure-post-request-succeeds",
    "oidcc-server-client-secret-post",
    "oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported",
    "oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported",
    "oidcc-claims-essential",
    "oidcc-ensure-request-object-with-redirect-uri",
    "oidcc-refresh-token",
    "oidcc-ensure-request-with-valid-pkce-succeeds",
];

const CONFIG: &[&str] = &["oidcc-discovery-endpoint-verification"];

const RP_LOGOUT: &[&str] = &[
    "oidcc-rp-initiated-logout-discovery-endpoint-verification",
    "oidcc-rp-initiated-logout",
    "oidcc-rp-initiated-logout-bad-post-logout-redirect-uri",
    "oidcc-rp-initiated-logout-modified-id-token-hint",
    "oidcc-rp-initiated-logout-no-id-token-hint",
    "oidcc-rp-initiated-logout-no-params",
    "oidcc-rp-initiated-logout-no-post-logout-redirect-uri",
    "oidcc-rp-initiated-logout-no-state",
    "oidcc-rp-initiated-logout-only-state",
];

const BACKCHANNEL: &[&str] = &[
    "oidcc-backchannel-logout-discovery-endpoint-verification",
    "oidcc-backchannel-rp-initiated-logout",
];

/// The provider as the suite sees it: one client, a browser with an ID card (curl,
/// cookies in `dir`/jar), and the provider's published keys.
struct Op {
    issuer: String,
    http: reqwest::Client,
    client_id: String,
    secret: String,
    dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    jwks: Value,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn challenge() -> String {
    Base64UrlUnpadded::encode_string(&sha2::Sha256::digest(VERIFIER.as_bytes()))
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// Where a redirect goes (303 from the provider, which never answers with a page here).
fn location(response: &reqwest::Response, module: &str) -> String {
    assert_eq!(response.status(), 303, "{module}: expected a redirect");
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// A JWS checked against a JWKS: ES256 or RS256, a kid the JWKS has, a signature that
/// verifies (with p256 and ring, not with the provider's code).
fn checked_jws(jwks: &Value, jws: &str) -> Result<Value, String> {
    use p256::ecdsa::signature::Verifier;
    let parts: Vec<&str> = jws.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err("not a compact JWS".into());
    };
    let decode = |part: &str| Base64UrlUnpadded::decode_vec(part).map_err(|e| e.to_string());
    let input = format!("{header}.{payload}");
    let header: Value = serde_json::from_slice(&decode(header)?).map_err(|e| e.to_string())?;
    let kid = header["kid"].as_str().ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| format!("kid {kid} is not in the JWKS"))?;
    if jwk["alg"] != header["alg"] {
        return Err(format!("alg {} with a {} key", header["alg"], jwk["alg"]));
    }
    let member = |name: &str| decode(jwk[name].as_str().unwrap_or_default());
    let signature = decode(signature)?;
    let bad = |_| "the signature does not verify".to_owned();
    match header["alg"].as_str() {
        Some("ES256") => {
            let point = [vec![4u8], member("x")?, member("y")?].concat();
            let key =
                p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(|e| e.to_string())?;
            let signature =
                p256::ecdsa::Signature::from_slice(&signature).map_err(|e| e.to_string())?;
            key.verify(input.as_bytes(), &signature)
                .map_err(|_| "the signature does not verify".to_owned())?;
        }
        Some("RS256") => {
            let key = ring::signature::RsaPublicKeyComponents {
                n: member("n")?,
                e: member("e")?,
            };
            key.verify(
                &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                input.as_bytes(),
                &signature,
            )
            .map_err(bad)?;
        }
        other => return Err(format!("alg {other:?}")),
    }
    Ok(payload_of(jws))
}

impl Op {
    fn authorize_url(&self, client_id: &str, extra: &str) -> String {
        format!(
            "{}/authorize?client_id={client_id}&response_type=code&redirect_uri={REDIRECT_ENCODED}&\
             code_challenge={}&code_challenge_method=S256{extra}",
            self.issuer,
            challenge()
        )
    }

    fn cookies(&self) -> String {
        let (session, browser) = jar_cookies(&self.dir);
        format!("eid_session={session}; eid_browser={browser}")
    }

    /// GET /authorize for this client with the browser's cookies (`session`) or none.
    async fn authorize(&self, extra: &str, session: bool) -> reqwest::Response {
        let request = self.http.get(self.authorize_url(&self.client_id, extra));
        let request = if session {
            request.header("cookie", self.cookies())
        } else {
            request
        };
        request.send().await.unwrap()
    }

    /// The authorization response for a request the session satisfies at once.
    async fn code(&self, extra: &str, module: &str) -> BTreeMap<String, String> {
        let to = location(&self.authorize(extra, true).await, module);
        assert!(to.starts_with(REDIRECT), "{module}: {to}");
        let query = query_of(&to);
        assert!(query.contains_key("code"), "{module}: {to}");
        assert_eq!(query["iss"], self.issuer, "{module}: RFC 9207 iss");
        query
    }

    /// A token request as `client_id`, with `basic` as its HTTP Basic secret (else the
    /// form authenticates it).
    async fn exchange_as(
        &self,
        client_id: &str,
        form: &[(&str, &str)],
        basic: Option<&str>,
    ) -> Value {
        let request = self.http.post(format!("{}/token", self.issuer));
        let request = match basic {
            Some(secret) => request.basic_auth(client_id, Some(secret)),
            None => request,
        };
        let response = request.form(form).send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(
            status == 200 || body.get("error").is_some(),
            "{status}: {body}"
        );
        body
    }

    async fn exchange(&self, code: &str) -> Value {
        self.exchange_as(
            &self.client_id,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
            ],
            Some(&self.secret),
        )
        .await
    }

    /// A whole code flow: the token response and the verified ID token's claims.
    async fn flow(&self, extra: &str, module: &str) -> (Value, Value) {
        let query = self.code(extra, module).await;
        let tokens = self.exchange(&query["code"]).await;
        let id_token = tokens["id_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{module}: {tokens}"));
        let claims = self.verified(id_token, module);
        (tokens, claims)
    }

    /// Logs in again with the card, starting at `start` (consent allowed if asked);
    /// returns where the browser ends up.
    fn card_login(&self, start: &str) -> String {
        card_browser(&self.issuer, start, &self.dir, &self.cert, &self.key)
    }

    /// Checks a JWS from the provider against its published keys; returns the payload.
    fn verified(&self, jws: &str, module: &str) -> Value {
        checked_jws(&self.jwks, jws).unwrap_or_else(|why| panic!("{module}: {why}"))
    }

    async fn userinfo(&self, access_token: &str, how: &str) -> (u16, Value) {
        let url = format!("{}/userinfo", self.issuer);
        let request = match how {
            "get" => self.http.get(url).bearer_auth(access_token),
            "post-header" => self.http.post(url).bearer_auth(access_token),
            _ => self.http.post(url).form(&[("access_token", access_token)]),
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        if status == 200 {
            let kind = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(kind.starts_with("application/json"), "{how}: {kind}");
        }
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

async fn certification_plans_pass(backend: TestBackend) {
    let (eid, addresses, dir, cert, key) = instance_with_card(backend).await;
    let endpoints = RelyingPartyEndpoints::start(serde_json::json!({ "keys": [] })).await;
    let backchannel = format!("{}/backchannel-logout", endpoints.base);
    let scopes = ["profile", "national_id", "contact", "offline_access"];
    let mut args = vec![
        "--post-logout-redirect-uri",
        LOGGED_OUT,
        "--backchannel-logout-uri",
        &backchannel,
    ];
    for scope in &scopes {
        args.extend(["--scope", scope]);
    }
    let (client_id, secret) = register(&eid, &addresses, &args).await;
    let (post_id, post_secret) =
        register(&eid, &addresses, &["--auth-method", "client_secret_post"]).await;
    // A relying party that knows only OpenID Connect's mandatory RS256.
    let (rs256_id, rs256_secret) = register(&eid, &addresses, &["--id-token-alg", "RS256"]).await;
    let server = {
        let config = eid.dir.path().join("keys.toml");
        std::fs::write(&config, "[idp]\nkey_publish_secs = 1\n").unwrap();
        let mut command = command(
            &eid,
            &addresses,
            &["--config", &config.display().to_string(), "serve"],
        );
        command.stdout(std::process::Stdio::piped());
        crate::Server::start(command, 4).await
    };
    let issuer = format!("http://{}", addresses.idp);
    let http = http();
    let discovery: Value =
        get_json(&http, &format!("{issuer}/.well-known/openid-configuration")).await;
    let jwks: Value = get_json(&http, discovery["jwks_uri"].as_str().unwrap()).await;
    let op = Op {
        issuer: issuer.clone(),
        http: http.clone(),
        client_id: client_id.clone(),
        secret,
        dir,
        cert,
        key,
        jwks,
    };

    config_plan(&op, &discovery);

    // The first login: with the card, allowing every scope the client may ask for.
    let all_scopes = format!("&scope=openid%20{}&state=first", scopes.join("%20"));
    let first = op.card_login(&op.authorize_url(&client_id, &all_scopes));
    assert!(first.starts_with(REDIRECT), "{first}");

    basic_plan(&op, &discovery, &post_id, &post_secret).await;

    // oidcc-idtoken-rs256 (a module of the Dynamic plan), for the client registered so:
    // its ID token in RS256 under a published RSA key, access tokens unchanged.
    let module = "oidcc-idtoken-rs256";
    let tokens = tokens_for(&op, &rs256_id, &rs256_secret, "&scope=openid&nonce=rs").await;
    let id_token = tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{tokens}"));
    let header = payload_of(&format!("x.{}", id_token.split('.').next().unwrap()));
    assert_eq!(header["alg"], "RS256", "{module}");
    let claims = op.verified(id_token, module);
    assert_eq!(claims["aud"], rs256_id.as_str(), "{module}");
    assert_eq!(claims["nonce"], "rs", "{module}");
    let access = tokens["access_token"].as_str().unwrap();
    op.verified(access, module);
    let (status, _) = op.userinfo(access, "get").await;
    assert_eq!(status, 200, "{module}");
    rp_logout_plan(&op, &discovery).await;
    backchannel_plan(&op, &discovery, &endpoints).await;

    // oidcc-server-rotate-keys (Dynamic plan) with two algorithms in use: a next key for
    // each is published beside the one that signs.
    let rotated = run(&eid, &addresses, &["idp", "rotate-keys"]).await;
    assert_eq!(
        rotated.matches("published token-signing key").count(),
        2,
        "{rotated}"
    );
    let mut algs = Vec::new();
    for _ in 0..40 {
        let jwks = get_json(&op.http, &format!("{issuer}/jwks")).await;
        algs = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["alg"].as_str().unwrap().to_owned())
            .collect();
        if algs.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    algs.sort();
    assert_eq!(algs, ["ES256", "ES256", "RS256", "RS256"], "within 10 s");
    // key_publish_secs is 1 here: the maintain loop (every 5 s) then activates both, and
    // each algorithm's tokens are signed by its new key.
    let next: Vec<String> = rotated
        .lines()
        .filter_map(|line| line.strip_prefix("published token-signing key "))
        .map(|rest| rest.split(';').next().unwrap().to_owned())
        .collect();
    fresh_id_token(&op).await;
    let mut signed_by = (String::new(), String::new());
    for _ in 0..60 {
        let es = tokens_for(&op, &op.client_id, &op.secret, "&scope=openid").await;
        let rs = tokens_for(&op, &rs256_id, &rs256_secret, "&scope=openid").await;
        signed_by = (
            kid_of(es["id_token"].as_str().unwrap()),
            kid_of(rs["id_token"].as_str().unwrap()),
        );
        if next.contains(&signed_by.0) && next.contains(&signed_by.1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        next.contains(&signed_by.0) && next.contains(&signed_by.1),
        "{signed_by:?} not the rotated-to {next:?}"
    );
    server.stop().await;
}

fn config_plan(op: &Op, discovery: &Value) {
    let mut plan = Plan::new("oidcc-config-certification-test-plan", CONFIG);
    let module = "oidcc-discovery-endpoint-verification";
    assert_eq!(discovery["issuer"], op.issuer.as_str(), "{module}: issuer");
    for endpoint in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
    ] {
        let url = discovery[endpoint]
            .as_str()
            .unwrap_or_else(|| panic!("{module}: {endpoint}"));
        assert!(url.starts_with(&op.issuer), "{module}: {endpoint} {url}");
    }
    let has = |field: &str, value: &str| {
        discovery[field]
            .as_array()
            .is_some_and(|list| list.iter().any(|v| v == value))
    };
    assert!(has("scopes_supported", "openid"), "{module}: scopes");
    assert!(has("response_types_supported", "code"), "{module}: code");
    assert!(
        has("subject_types_supported", "pairwise"),
        "{module}: subjects"
    );
    assert!(
        has("subject_types_supported", "public"),
        "{module}: subjects"
    );
    assert!(
        has("id_token_signing_alg_values_supported", "ES256"),
        "{module}"
    );
    assert!(
        !has("id_token_signing_alg_values_supported", "none"),
        "{module}"
    );
    assert_eq!(discovery["claims_parameter_supported"], true, "{module}");
    assert!(discovery["claims_supported"].is_array(), "{module}");
    for jwk in op.jwks["keys"].as_array().unwrap() {
        let public: &[&str] = if jwk["kty"] == "RSA" {
            &["n", "e"]
        } else {
            &["crv", "x", "y"]
        };
        for field in ["kty", "kid", "use", "alg"].iter().chain(public) {
            assert!(
                jwk[*field].is_string(),
                "{module}: JWKS key without {field}"
            );
        }
        for private in ["d", "p", "q", "dp", "dq", "qi"] {
            assert!(
                jwk.get(private).is_none(),
                "{module}: private {private} in the JWKS"
            );
        }
    }
    // OpenID Connect Discovery 1.0 3: RS256 must be listed (clients may be registered
    // for it); the provider's own algorithm comes first. Every endpoint on https is
    // checked by the configuration (a production issuer must be https); this test's
    // issuer is plain http on loopback.
    assert!(
        has("id_token_signing_alg_values_supported", "RS256"),
        "{module}"
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"][0], "ES256",
        "{module}"
    );
    plan.passed(module);
    plan.finish();
}

async fn basic_plan(op: &Op, discovery: &Value, post_id: &str, post_secret: &str) {
    let mut plan = Plan::new("oidcc-basic-certification-test-plan", BASIC);

    // Started first, checked last: the reused code refused still after 30 seconds.
    let module = "oidcc-codereuse-30seconds";
    let late_code = op.code("&scope=openid&state=late", module).await;
    let late_tokens = op.exchange(&late_code["code"]).await;
    let late_started = Instant::now();

    let module = "oidcc-server";
    let (tokens, id) = op.flow("&scope=openid&state=xyz&nonce=n-0S6", module).await;
    assert_eq!(tokens["token_type"], "Bearer", "{module}");
    assert!(tokens["expires_in"].as_i64().unwrap() > 0, "{module}");
    assert_eq!(id["iss"], op.issuer.as_str(), "{module}: iss");
    assert_eq!(id["aud"], op.client_id.as_str(), "{module}: aud");
    assert!(
        id["sub"].as_str().is_some_and(|s| !s.is_empty()),
        "{module}: sub"
    );
    assert!(id["exp"].as_i64().unwrap() > now(), "{module}: exp");
    assert!(
        (id["iat"].as_i64().unwrap() - now()).abs() < 300,
        "{module}: iat"
    );
    assert_eq!(id["nonce"], "n-0S6", "{module}: nonce");
    let access = tokens["access_token"].as_str().unwrap();
    let digest = sha2::Sha256::digest(access.as_bytes());
    assert_eq!(
        id["at_hash"],
        Base64UrlUnpadded::encode_string(&digest[..16]).as_str(),
        "{module}: at_hash"
    );
    assert!(id["auth_time"].is_i64(), "{module}: auth_time");
    let state = query_of(&location(
        &op.authorize("&scope=openid&state=xyz", true).await,
        module,
    ));
    assert_eq!(state["state"], "xyz", "{module}: state");
    plan.passed(module);
    let sub = id["sub"].as_str().unwrap().to_owned();
    let auth_time = id["auth_time"].as_i64().unwrap();

    let module = "oidcc-response-type-missing";
    let response = op
        .http
        .get(format!(
            "{}/authorize?client_id={}&redirect_uri={REDIRECT_ENCODED}&scope=openid&state=rtm",
            op.issuer, op.client_id
        ))
        .header("cookie", op.cookies())
        .send()
        .await
        .unwrap();
    let error = query_of(&location(&response, module));
    assert!(
        ["invalid_request", "unsupported_response_type"].contains(&error["error"].as_str()),
        "{module}: {error:?}"
    );
    assert_eq!(error["state"], "rtm", "{module}");
    plan.passed(module);

    let module = "oidcc-idtoken-signature";
    let id_token = tokens["id_token"].as_str().unwrap();
    op.verified(id_token, module);
    let header = payload_of(&format!("x.{}", id_token.split('.').next().unwrap()));
    assert!(
        discovery["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&header["alg"]),
        "{module}"
    );
    let mut flipped = id_token.to_owned();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });
    assert!(
        checked_jws(&op.jwks, &flipped).is_err(),
        "{module}: a changed signature verified"
    );
    plan.passed(module);

    plan.record(
        "oidcc-idtoken-unsigned",
        Outcome::NotApplicable("`none` is not in id_token_signing_alg_values_supported"),
    );

    for (module, how) in [
        ("oidcc-userinfo-get", "get"),
        ("oidcc-userinfo-post-header", "post-header"),
        ("oidcc-userinfo-post-body", "post-body"),
    ] {
        let (tokens, id) = op.flow("&scope=openid%20profile", module).await;
        let (status, info) = op
            .userinfo(tokens["access_token"].as_str().unwrap(), how)
            .await;
        assert_eq!(status, 200, "{module}: {info}");
        assert_eq!(info["sub"], id["sub"], "{module}");
        plan.passed(module);
    }

    let module = "oidcc-ensure-request-without-nonce-succeeds-for-code-flow";
    let (_, id) = op.flow("&scope=openid", module).await;
    assert!(id.get("nonce").is_none(), "{module}");
    plan.passed(module);

    let module = "oidcc-scope-profile";
    let (tokens, _) = op.flow("&scope=openid%20profile", module).await;
    let (_, info) = op
        .userinfo(tokens["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(info["given_name"], "Mary", "{module}: {info}");
    assert_eq!(info["family_name"], "Seacole", "{module}: {info}");
    assert!(info.get("national_id").is_none(), "{module}: {info}");
    plan.passed(module);

    for module in [
        "oidcc-scope-email",
        "oidcc-scope-address",
        "oidcc-scope-phone",
    ] {
        let scope = module.rsplit('-').next().unwrap();
        assert!(
            !discovery["scopes_supported"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == scope),
            "{module}"
        );
        plan.record(
            module,
            Outcome::NotApplicable(
                "the scope is not in scopes_supported (e-mail and phone are under `contact`)",
            ),
        );
    }

    let module = "oidcc-scope-all";
    let (tokens, _) = op
        .flow(
            "&scope=openid%20profile%20national_id%20contact%20offline_access",
            module,
        )
        .await;
    let (_, info) = op
        .userinfo(tokens["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(info["national_id"], "3900101123456", "{module}: {info}");
    assert_eq!(info["given_name"], "Mary", "{module}: {info}");
    assert!(
        tokens["refresh_token"].is_string(),
        "{module}: offline_access"
    );
    plan.passed(module);

    let module = "oidcc-ensure-other-scope-order-succeeds";
    op.flow("&scope=profile%20openid", module).await;
    plan.passed(module);

    for (module, display) in [
        ("oidcc-display-page", "page"),
        ("oidcc-display-popup", "popup"),
    ] {
        op.flow(&format!("&scope=openid&display={display}"), module)
            .await;
        plan.passed(module);
    }

    let module = "oidcc-prompt-none-logged-in";
    let (_, id) = op.flow("&scope=openid&prompt=none", module).await;
    assert_eq!(id["auth_time"].as_i64(), Some(auth_time), "{module}");
    assert_eq!(id["sub"], sub.as_str(), "{module}");
    plan.passed(module);

    let module = "oidcc-prompt-none-not-logged-in";
    let refused = query_of(&location(
        &op.authorize("&scope=openid&prompt=none&state=pn", false)
            .await,
        module,
    ));
    assert_eq!(refused["error"], "login_required", "{module}");
    assert_eq!(refused["state"], "pn", "{module}");
    assert_eq!(refused["iss"], op.issuer, "{module}");
    plan.passed(module);

    let module = "oidcc-max-age-10000";
    let (_, id) = op.flow("&scope=openid&max_age=10000", module).await;
    assert_eq!(id["auth_time"].as_i64(), Some(auth_time), "{module}");
    plan.passed(module);

    let module = "oidcc-ensure-request-with-unknown-parameter-succeeds";
    op.flow("&scope=openid&extra=foobar", module).await;
    plan.passed(module);

    let module = "oidcc-id-token-hint";
    let hint = tokens["id_token"].as_str().unwrap().to_owned();
    let (_, id) = op
        .flow(
            &format!("&scope=openid&prompt=none&id_token_hint={hint}"),
            module,
        )
        .await;
    assert_eq!(id["sub"], sub.as_str(), "{module}");
    plan.passed(module);

    for (module, extra) in [
        ("oidcc-login-hint", "&login_hint=3900101123456"),
        ("oidcc-ui-locales", "&ui_locales=es"),
        ("oidcc-claims-locales", "&claims_locales=es"),
    ] {
        op.flow(&format!("&scope=openid{extra}"), module).await;
        plan.passed(module);
    }

    let module = "oidcc-ensure-request-with-acr-values-succeeds";
    let (_, id) = op
        .flow(
            "&scope=openid&acr_values=http%3A%2F%2Feidas.europa.eu%2FLoA%2Fhigh",
            module,
        )
        .await;
    assert_eq!(id["acr"], HIGH, "{module}");
    plan.passed(module);

    let module = "oidcc-codereuse";
    let query = op.code("&scope=openid", module).await;
    let tokens = op.exchange(&query["code"]).await;
    let again = op.exchange(&query["code"]).await;
    assert_eq!(again["error"], "invalid_grant", "{module}: {again}");
    let (status, _) = op
        .userinfo(tokens["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(status, 401, "{module}: the first access token is revoked");
    plan.passed(module);

    let module = "oidcc-ensure-registered-redirect-uri";
    let response = op
        .http
        .get(
            op.authorize_url(&op.client_id, "&scope=openid")
                .replace(REDIRECT_ENCODED, "https%3A%2F%2Fevil.example%2Fcb"),
        )
        .header("cookie", op.cookies())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400, "{module}");
    assert!(response.headers().get("location").is_none(), "{module}");
    plan.passed(module);

    let module = "oidcc-ensure-post-request-succeeds";
    let challenge = challenge();
    let response = op
        .http
        .post(format!("{}/authorize", op.issuer))
        .header("cookie", op.cookies())
        .form(&[
            ("client_id", op.client_id.as_str()),
            ("response_type", "code"),
            ("scope", "openid"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .send()
        .await
        .unwrap();
    let to = location(&response, module);
    assert!(query_of(&to).contains_key("code"), "{module}: {to}");
    plan.passed(module);

    let module = "oidcc-server-client-secret-post";
    let to = location(
        &op.http
            .get(op.authorize_url(post_id, "&scope=openid"))
            .header("cookie", op.cookies())
            .send()
            .await
            .unwrap(),
        module,
    );
    let code = query_of(&to)["code"].clone();
    let tokens = op
        .exchange_as(
            post_id,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("code_verifier", VERIFIER),
                ("client_id", post_id),
                ("client_secret", post_secret),
            ],
            None,
        )
        .await;
    assert_eq!(
        op.verified(tokens["id_token"].as_str().unwrap(), module)["aud"],
        post_id,
        "{module}"
    );
    plan.passed(module);

    let module = "oidcc-request-uri-unsigned-supported-correctly-or-rejected-as-unsupported";
    assert_eq!(
        discovery["request_uri_parameter_supported"], false,
        "{module}"
    );
    let response = op
        .authorize(
            "&scope=openid&request_uri=https%3A%2F%2Frp.example%2Frequest",
            true,
        )
        .await;
    assert_eq!(response.status(), 400, "{module}: refused on an error page");
    plan.passed(module);

    let module = "oidcc-unsigned-request-object-supported-correctly-or-rejected-as-unsupported";
    assert_eq!(discovery["request_parameter_supported"], false, "{module}");
    let object = format!(
        "{}.{}.",
        Base64UrlUnpadded::encode_string(br#"{"alg":"none"}"#),
        Base64UrlUnpadded::encode_string(br#"{"scope":"openid"}"#)
    );
    let refused = query_of(&location(
        &op.authorize(&format!("&scope=openid&state=ro&request={object}"), true)
            .await,
        module,
    ));
    assert_eq!(refused["error"], "request_not_supported", "{module}");
    assert_eq!(refused["state"], "ro", "{module}");
    plan.passed(module);
    plan.record(
        "oidcc-ensure-request-object-with-redirect-uri",
        Outcome::NotApplicable("request objects are rejected as unsupported (the suite skips it)"),
    );

    let module = "oidcc-claims-essential";
    let claims = r#"{"userinfo":{"name":{"essential":true}}}"#;
    let (tokens, _) = op
        .flow(
            &format!("&scope=openid%20profile&claims={}", encoded(claims)),
            module,
        )
        .await;
    let (_, info) = op
        .userinfo(tokens["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(info["name"], "Mary Seacole", "{module}: {info}");
    plan.passed(module);

    let module = "oidcc-refresh-token";
    let (tokens, id) = op.flow("&scope=openid%20offline_access", module).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let renewed = op
        .exchange_as(
            &op.client_id,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some(&op.secret),
        )
        .await;
    assert!(renewed["access_token"].is_string(), "{module}: {renewed}");
    assert_ne!(
        renewed["refresh_token"],
        refresh.as_str(),
        "{module}: rotated"
    );
    if let Some(renewed_id) = renewed["id_token"].as_str() {
        let renewed_id = op.verified(renewed_id, module);
        for claim in ["iss", "sub", "aud", "auth_time", "acr"] {
            assert_eq!(renewed_id[claim], id[claim], "{module}: {claim}");
        }
    }
    let (status, _) = op
        .userinfo(renewed["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(status, 200, "{module}");
    let reused = op
        .exchange_as(
            &op.client_id,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some(&op.secret),
        )
        .await;
    assert_eq!(reused["error"], "invalid_grant", "{module}: {reused}");
    plan.passed(module);

    let module = "oidcc-ensure-request-with-valid-pkce-succeeds";
    op.flow("&scope=openid", module).await;
    let query = op.code("&scope=openid", module).await;
    let wrong = op
        .exchange_as(
            &op.client_id,
            &[
                ("grant_type", "authorization_code"),
                ("code", &query["code"]),
                ("redirect_uri", REDIRECT),
                (
                    "code_verifier",
                    "another-verifier-that-is-long-enough-0123456789",
                ),
            ],
            Some(&op.secret),
        )
        .await;
    assert_eq!(wrong["error"], "invalid_grant", "{module}: {wrong}");
    plan.passed(module);

    // Logins that replace the session: prompt=login, then max_age=1.
    let module = "oidcc-prompt-login";
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let forced = location(
        &op.authorize("&scope=openid&prompt=login", true).await,
        module,
    );
    assert!(forced.contains("/login/"), "{module}: {forced}");
    let done = op.card_login(&op.authorize_url(&op.client_id, "&scope=openid&prompt=login"));
    let tokens = op.exchange(&query_of(&done)["code"]).await;
    let id = op.verified(tokens["id_token"].as_str().unwrap(), module);
    let relogged = id["auth_time"].as_i64().unwrap();
    assert!(
        relogged > auth_time,
        "{module}: auth_time {relogged} after {auth_time}"
    );
    plan.passed(module);

    let module = "oidcc-max-age-1";
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let forced = location(&op.authorize("&scope=openid&max_age=1", true).await, module);
    assert!(forced.contains("/login/"), "{module}: {forced}");
    let done = op.card_login(&op.authorize_url(&op.client_id, "&scope=openid&max_age=1"));
    let tokens = op.exchange(&query_of(&done)["code"]).await;
    let id = op.verified(tokens["id_token"].as_str().unwrap(), module);
    assert!(id["auth_time"].as_i64().unwrap() > relogged, "{module}");
    plan.passed(module);

    let module = "oidcc-codereuse-30seconds";
    tokio::time::sleep(Duration::from_secs(31).saturating_sub(late_started.elapsed())).await;
    let again = op.exchange(&late_code["code"]).await;
    assert_eq!(again["error"], "invalid_grant", "{module}: {again}");
    let (status, _) = op
        .userinfo(late_tokens["access_token"].as_str().unwrap(), "get")
        .await;
    assert_eq!(status, 401, "{module}: the first access token is revoked");
    plan.passed(module);

    plan.finish();
}

/// The logout page's form, submitted as the browser would: GET /logout with `query`,
/// then POST its fields back. Returns the final answer.
async fn logout(op: &Op, query: &str) -> reqwest::Response {
    let cookies = op.cookies();
    let page = op
        .http
        .get(format!("{}/logout?{query}", op.issuer))
        .header("cookie", &cookies)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the logout page asks for confirmation");
    let html = page.text().await.unwrap();
    let fields: Vec<(String, String)> = html
        .split("<input type=\"hidden\" name=\"")
        .skip(1)
        .map(|rest| {
            let name = rest.split('"').next().unwrap().to_owned();
            let value = rest
                .split("value=\"")
                .nth(1)
                .and_then(|v| v.split('"').next())
                .unwrap()
                .replace("&amp;", "&")
                .replace("&quot;", "\"");
            (name, value)
        })
        .collect();
    op.http
        .post(format!("{}/logout", op.issuer))
        .header("cookie", &cookies)
        .form(&fields)
        .send()
        .await
        .unwrap()
}

/// The token response for `client_id` (client_secret_basic with `secret`) after a code
/// flow on the browser's session.
async fn tokens_for(op: &Op, client_id: &str, secret: &str, extra: &str) -> Value {
    let answer = op
        .http
        .get(op.authorize_url(client_id, extra))
        .header("cookie", op.cookies())
        .send()
        .await
        .unwrap();
    let to = location(&answer, client_id);
    op.exchange_as(
        client_id,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query_of(&to)["code"]),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
        Some(secret),
    )
    .await
}

/// The `kid` in a JWS header.
fn kid_of(jws: &str) -> String {
    let header = payload_of(&format!("x.{}", jws.split('.').next().unwrap()));
    header["kid"].as_str().unwrap().to_owned()
}

/// A fresh ID token, from the session or (after a logout) from a new card login.
async fn fresh_id_token(op: &Op) -> String {
    let start = op.authorize_url(&op.client_id, "&scope=openid");
    let to = location(&op.authorize("&scope=openid", true).await, "login");
    let done = if to.starts_with(REDIRECT) {
        to
    } else {
        op.card_login(&start)
    };
    let tokens = op.exchange(&query_of(&done)["code"]).await;
    tokens["id_token"].as_str().unwrap().to_owned()
}

async fn logged_out(op: &Op) -> bool {
    let answer = op.authorize("&scope=openid&prompt=none", true).await;
    query_of(&location(&answer, "logged out"))
        .get("error")
        .is_some_and(|e| e == "login_required")
}

/// A logout module: its name, the query it sends (made from a fresh ID token and the
/// encoded post-logout URI), and whether the provider must redirect there (with which
/// state) or answer with a page.
type LogoutCase = (
    &'static str,
    fn(&str, &str) -> String,
    Option<Option<&'static str>>,
);

async fn rp_logout_plan(op: &Op, discovery: &Value) {
    let mut plan = Plan::new(
        "oidcc-rp-initiated-logout-certification-test-plan",
        RP_LOGOUT,
    );
    let module = "oidcc-rp-initiated-logout-discovery-endpoint-verification";
    assert_eq!(
        discovery["end_session_endpoint"],
        format!("{}/logout", op.issuer).as_str(),
        "{module}"
    );
    plan.passed(module);

    let target = encoded(LOGGED_OUT);
    let cases: [LogoutCase; 7] = [
        (
            "oidcc-rp-initiated-logout",
            |hint, target| {
                format!("id_token_hint={hint}&post_logout_redirect_uri={target}&state=s1")
            },
            Some(Some("s1")),
        ),
        (
            "oidcc-rp-initiated-logout-bad-post-logout-redirect-uri",
            |hint, _| {
                format!(
                    "id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F&state=s2"
                )
            },
            None,
        ),
        (
            "oidcc-rp-initiated-logout-modified-id-token-hint",
            |hint, target| {
                let mut changed = hint.to_owned();
                let last = changed.pop().unwrap();
                changed.push(if last == 'A' { 'B' } else { 'A' });
                format!("id_token_hint={changed}&post_logout_redirect_uri={target}&state=s3")
            },
            None,
        ),
        (
            "oidcc-rp-initiated-logout-no-id-token-hint",
            |_, target| format!("post_logout_redirect_uri={target}&state=s4"),
            None,
        ),
        (
            "oidcc-rp-initiated-logout-no-params",
            |_, _| String::new(),
            None,
        ),
        (
            "oidcc-rp-initiated-logout-no-post-logout-redirect-uri",
            |hint, _| format!("id_token_hint={hint}&state=s6"),
            None,
        ),
        (
            "oidcc-rp-initiated-logout-no-state",
            |hint, target| format!("id_token_hint={hint}&post_logout_redirect_uri={target}"),
            Some(None),
        ),
    ];
    for (module, query, redirected) in cases {
        let hint = fresh_id_token(op).await;
        let answer = logout(op, &query(&hint, &target)).await;
        match redirected {
            Some(state) => {
                let to = location(&answer, module);
                assert!(to.starts_with(LOGGED_OUT), "{module}: {to}");
                assert_eq!(
                    query_of(&to).get("state").map(String::as_str),
                    state,
                    "{module}"
                );
            }
            None => {
                assert_eq!(answer.status(), 200, "{module}: a page, never a redirect");
                assert!(answer.headers().get("location").is_none(), "{module}");
            }
        }
        assert!(logged_out(op).await, "{module}: the session still works");
        plan.passed(module);
    }
    let module = "oidcc-rp-initiated-logout-only-state";
    fresh_id_token(op).await;
    let answer = logout(op, "state=s8").await;
    assert_eq!(answer.status(), 200, "{module}");
    assert!(logged_out(op).await, "{module}");
    plan.passed(module);
    plan.finish();
}

async fn backchannel_plan(op: &Op, discovery: &Value, endpoints: &RelyingPartyEndpoints) {
    let mut plan = Plan::new(
        "oidcc-backchannel-rp-initiated-logout-certification-test-plan",
        BACKCHANNEL,
    );
    let module = "oidcc-backchannel-logout-discovery-endpoint-verification";
    assert_eq!(discovery["backchannel_logout_supported"], true, "{module}");
    assert_eq!(
        discovery["backchannel_logout_session_supported"], true,
        "{module}"
    );
    plan.passed(module);

    let module = "oidcc-backchannel-rp-initiated-logout";
    let hint = fresh_id_token(op).await;
    let id = op.verified(&hint, module);
    endpoints.received.lock().unwrap().clear();
    let target = encoded(LOGGED_OUT);
    let answer = logout(
        op,
        &format!("id_token_hint={hint}&post_logout_redirect_uri={target}&state=bc"),
    )
    .await;
    assert!(
        location(&answer, module).starts_with(LOGGED_OUT),
        "{module}"
    );
    let mut token = None;
    for _ in 0..50 {
        // Every session of this test sent one when it ended; this one names its sid.
        token = endpoints
            .received
            .lock()
            .unwrap()
            .iter()
            .filter_map(|body| body.strip_prefix("logout_token="))
            .map(str::to_owned)
            .find(|t| payload_of(t)["sid"] == id["sid"]);
        if token.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token.unwrap_or_else(|| panic!("{module}: no logout token arrived"));
    let claims = op.verified(&token, module);
    let header = payload_of(&format!("x.{}", token.split('.').next().unwrap()));
    assert_eq!(header["typ"], "logout+jwt", "{module}");
    assert_eq!(claims["iss"], op.issuer.as_str(), "{module}");
    assert_eq!(claims["aud"], op.client_id.as_str(), "{module}");
    assert_eq!(claims["sub"], id["sub"], "{module}");
    assert!(
        (claims["iat"].as_i64().unwrap() - now()).abs() < 300,
        "{module}"
    );
    assert!(
        claims["jti"].as_str().is_some_and(|j| !j.is_empty()),
        "{module}"
    );
    assert!(
        claims["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object(),
        "{module}"
    );
    assert!(
        claims.get("nonce").is_none(),
        "{module}: a logout token has no nonce"
    );
    assert!(logged_out(op).await, "{module}");
    plan.passed(module);
    plan.finish();
}

on_both_backends!(certification_plans_pass);
