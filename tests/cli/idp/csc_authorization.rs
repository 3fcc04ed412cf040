//! The identity provider's side of remote signing by the CSC API v2: access tokens for
//! the `service` and `credential` scopes name the signing service's audience and the
//! citizen's internal identifier; signing authorisations (`authorization_details` of
//! type `credential`, RFC 9396) through PAR and the front channel force a fresh login,
//! are shown on the consent page (read in Chromium), end in the token response and the
//! access token, and are for one use. Bad details are refused with
//! `invalid_authorization_details`. On SQLite and PostgreSQL.

use std::{process::Stdio, time::Duration};

use base64ct::{Base64, Base64UrlUnpadded, Encoding};
use eid_tests::{TestBackend, on_both_backends};
use serde_json::{Value, json};
use sha2::Digest;

use super::{
    Addresses, card_browser, card_login, command, get_json, http, instance_with_card, jar_cookies,
    payload_of, pkce_challenge, query_of, redeem_code, register, run,
};
use crate::{Eid, Server, browser::Browser, text};

const REDIRECT_ENCODED: &str = "http%3A%2F%2F127.0.0.1%3A9%2Fcallback";
const VERIFIER: &str = "a-pkce-verifier-that-is-long-enough-0123456789";
const SIGNING_URL: &str = "http://127.0.0.1:8082";
const AUDIENCE: &str = "http://127.0.0.1:8082/csc/v2";
const SHA256: &str = "2.16.840.1.101.3.4.2.1";
const SHA384: &str = "2.16.840.1.101.3.4.2.2";

/// `eid serve` with the signing service's public URL fixed, so the CSC audience is known.
async fn serve(eid: &Eid, addresses: &Addresses) -> Server {
    let mut command = command(eid, addresses, &["serve"]);
    command
        .env("EID_SIGNING_PUBLIC_URL", SIGNING_URL)
        .stdout(Stdio::piped());
    Server::start(command, 4).await
}

/// A signing authorisation for `credential_id` over `documents` (label, content).
fn credential_detail(credential_id: &str, documents: &[(Option<&str>, &[u8])]) -> Value {
    let digests: Vec<Value> = documents
        .iter()
        .map(|(label, content)| {
            let hash = Base64::encode_string(&sha2::Sha256::digest(content));
            match label {
                Some(label) => json!({ "hash": hash, "label": label }),
                None => json!({ "hash": hash }),
            }
        })
        .collect();
    json!([{
        "type": "credential",
        "credentialID": credential_id,
        "documentDigests": digests,
        "hashAlgorithmOID": SHA256,
    }])
}

/// The hex fingerprint the consent page shows for a SHA-256 digest of `content`.
fn fingerprint(content: &[u8]) -> String {
    let digest = sha2::Sha256::digest(content);
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{} {} {} {}",
        &hex[..4],
        &hex[4..8],
        &hex[8..12],
        &hex[12..16]
    )
}

/// An authorization request URL of `client_id` with `extra` parameters (already encoded).
fn authorize_url(issuer: &str, client_id: &str, scope: &str, extra: &str) -> String {
    format!(
        "{issuer}/authorize?client_id={client_id}&response_type=code&scope={scope}&state=st&\
         redirect_uri={REDIRECT_ENCODED}&code_challenge={}&code_challenge_method=S256{extra}",
        pkce_challenge(VERIFIER)
    )
}

/// `value` percent-encoded for a query string (all but the unreserved characters).
pub(super) fn encoded(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn internal_citizen_id(eid: &Eid) -> String {
    let db = eid.database().await;
    sqlx::query_scalar("SELECT citizen_id FROM idp_citizen WHERE national_id = $1")
        .bind("3900101123456")
        .fetch_one(db.pool())
        .await
        .unwrap()
}

async fn csc_tokens_and_signing_authorisations(backend: TestBackend) {
    let (eid, addresses, dir, cert, key) = instance_with_card(backend).await;
    let csc = register(
        &eid,
        &addresses,
        &[
            "--scope",
            "profile",
            "--scope",
            "service",
            "--scope",
            "credential",
        ],
    )
    .await;
    let plain = register(&eid, &addresses, &["--scope", "profile"]).await;
    let server = serve(&eid, &addresses).await;
    let issuer = format!("http://{}", addresses.idp);
    let http = http();

    let discovery = get_json(&http, &format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(
        discovery["authorization_details_types_supported"],
        json!(["credential"])
    );
    let scopes = discovery["scopes_supported"].as_array().unwrap();
    assert!(scopes.contains(&json!("service")) && scopes.contains(&json!("credential")));

    // The CSC scopes without details: an access token for the signing service too, with
    // the internal identifier as sub, while the ID token keeps the pairwise one.
    let card_tokens = |client: &(String, String), scope: &str, extra: String| {
        let back = card_browser(
            &issuer,
            &authorize_url(&issuer, &client.0, scope, &extra),
            &dir,
            &cert,
            &key,
        );
        let (issuer, client) = (issuer.clone(), client.clone());
        async move {
            redeem_code(
                &issuer,
                (&client.0, &client.1),
                &query_of(&back)["code"],
                VERIFIER,
            )
            .await
        }
    };
    let tokens = card_tokens(
        &csc,
        "openid%20profile%20service%20credential",
        String::new(),
    )
    .await;
    let access = payload_of(
        tokens["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{tokens}")),
    );
    let id_token = payload_of(tokens["id_token"].as_str().unwrap());
    let citizen_id = internal_citizen_id(&eid).await;
    assert_eq!(access["aud"], json!([issuer, AUDIENCE]), "{access}");
    assert_eq!(access["sub"], citizen_id.as_str());
    assert_ne!(id_token["sub"], access["sub"]);
    assert_eq!(access["scope"], "openid profile service credential");
    assert_eq!(access["client_id"], csc.0.as_str());
    assert_eq!(access["acr"], "http://eidas.europa.eu/LoA/high");
    assert!(access.get("authorization_details").is_none());
    assert!(tokens.get("authorization_details").is_none());
    assert!(
        tokens["refresh_token"].is_string(),
        "no details, so a refresh token"
    );
    let first_auth_time = access["auth_time"].as_i64().unwrap();
    // The provider still takes its own token with a list audience: userinfo answers with
    // the client's pairwise sub, and introspection shows the list.
    let userinfo: Value = http
        .get(format!("{issuer}/userinfo"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(userinfo["sub"], id_token["sub"], "{userinfo}");
    assert_eq!(userinfo["given_name"], "Mary");
    let introspected: Value = http
        .post(format!("{issuer}/introspect"))
        .basic_auth(&csc.0, Some(&csc.1))
        .form(&[("token", tokens["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(introspected["active"], true);
    assert_eq!(introspected["aud"], json!([issuer, AUDIENCE]));
    // A refresh keeps the shape.
    let refreshed: Value = http
        .post(format!("{issuer}/token"))
        .basic_auth(&csc.0, Some(&csc.1))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refreshed = payload_of(
        refreshed["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{refreshed}")),
    );
    assert_eq!(refreshed["aud"], json!([issuer, AUDIENCE]));
    assert_eq!(refreshed["sub"], citizen_id.as_str());

    // A client without the CSC scopes is unchanged: the issuer alone, the pairwise sub.
    let tokens = card_tokens(&plain, "openid%20profile", "&prompt=login".into()).await;
    let access = payload_of(
        tokens["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("{tokens}")),
    );
    assert_eq!(access["aud"], issuer.as_str());
    assert_eq!(
        access["sub"],
        payload_of(tokens["id_token"].as_str().unwrap())["sub"]
    );
    assert_ne!(access["sub"], citizen_id.as_str());

    // A signing authorisation pushed (PAR): the session exists, yet the citizen logs in
    // again, and the consent page (in a real browser) lists what will be signed.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let lease: &[u8] = b"the lease of 12 Kew Gardens, signed remotely";
    let annex: &[u8] = b"annex: inventory";
    let details = credential_detail("cred-7f3a", &[(Some("Lease <2025>"), lease), (None, annex)]);
    let pushed: Value = http
        .post(format!("{issuer}/par"))
        .basic_auth(&csc.0, Some(&csc.1))
        .form(&[
            ("response_type", "code"),
            ("scope", "openid credential"),
            ("redirect_uri", "http://127.0.0.1:9/callback"),
            ("state", "par-state"),
            ("code_challenge", &pkce_challenge(VERIFIER)),
            ("code_challenge_method", "S256"),
            ("authorization_details", &details.to_string()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request_uri = pushed["request_uri"]
        .as_str()
        .unwrap_or_else(|| panic!("{pushed}"));
    let consent = card_login(
        &issuer,
        &format!(
            "{issuer}/authorize?client_id={}&request_uri={}",
            csc.0,
            encoded(request_uri)
        ),
        &dir,
        &cert,
        &key,
    );
    assert!(
        consent.contains("/consent/"),
        "a signing authorisation is always confirmed: {consent}"
    );
    let (session, browser_cookie) = jar_cookies(&dir);
    let browser = Browser::start().await;
    browser.goto(&format!("{issuer}/healthz")).await;
    browser.add_cookie("eid_session", &session).await;
    browser.add_cookie("eid_browser", &browser_cookie).await;
    browser.goto(&consent).await;
    browser.find("#documents").await;
    let page = browser.source().await;
    for shown in [
        "Authorise a signature?",
        "cred-7f3a",
        "SHA-256",
        "Lease &lt;2025&gt;",
        "Document 2",
        &fingerprint(lease),
        &fingerprint(annex),
    ] {
        assert!(
            page.contains(shown),
            "{shown} is not on the consent page: {page}"
        );
    }
    assert!(browser.text("#documents").await.contains("Lease <2025>"));
    assert_eq!(browser.text("#credential-id").await, "cred-7f3a");
    browser.click_and_wait("#allow").await;
    let back = browser
        .wait_for_url(|url| url.starts_with("http://127.0.0.1:9/callback"))
        .await;
    browser.quit().await;
    let query = query_of(&back);
    assert_eq!(query["state"], "par-state");
    let tokens = redeem_code(&issuer, (&csc.0, &csc.1), &query["code"], VERIFIER).await;
    assert_eq!(tokens["authorization_details"], details, "{tokens}");
    assert!(
        tokens.get("refresh_token").is_none(),
        "one authorisation, one use: {tokens}"
    );
    let access = payload_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["authorization_details"], details);
    assert_eq!(access["aud"], json!([issuer, AUDIENCE]));
    assert_eq!(access["sub"], citizen_id.as_str());
    assert_eq!(access["scope"], "openid credential");
    let fresh_auth_time = access["auth_time"].as_i64().unwrap();
    assert!(
        fresh_auth_time > first_auth_time,
        "{fresh_auth_time} after {first_auth_time}"
    );
    assert_eq!(
        payload_of(tokens["id_token"].as_str().unwrap())["auth_time"],
        fresh_auth_time
    );

    // The same through the front channel, with a url-safe unpadded SHA-384 digest: a new
    // login again (the session just made does not do), and the digest comes back in
    // standard padded base64.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let digest = sha2::Sha384::digest(b"contract");
    let front = json!([{
        "type": "credential",
        "credentialID": "cred-7f3a",
        "documentDigests": [{ "hash": Base64UrlUnpadded::encode_string(&digest), "label": "Contract" }],
        "hashAlgorithmOID": SHA384,
        "locations": [AUDIENCE],
        "privileges": ["ignored"],
    }]);
    let tokens = card_tokens(
        &csc,
        "openid%20credential",
        format!("&authorization_details={}", encoded(&front.to_string())),
    )
    .await;
    let expected = json!([{
        "type": "credential",
        "credentialID": "cred-7f3a",
        "documentDigests": [{ "hash": Base64::encode_string(&digest), "label": "Contract" }],
        "hashAlgorithmOID": SHA384,
        "locations": [AUDIENCE],
    }]);
    assert_eq!(tokens["authorization_details"], expected, "{tokens}");
    assert!(tokens.get("refresh_token").is_none());
    let access = payload_of(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["authorization_details"], expected);
    assert!(access["auth_time"].as_i64().unwrap() > fresh_auth_time);

    // With a session, prompt=none cannot make a signing authorisation.
    let (session, browser_cookie) = jar_cookies(&dir);
    let refused = http
        .get(authorize_url(
            &issuer,
            &csc.0,
            "openid%20credential",
            &format!(
                "&prompt=none&authorization_details={}",
                encoded(&details.to_string())
            ),
        ))
        .header(
            "cookie",
            format!("eid_session={session}; eid_browser={browser_cookie}"),
        )
        .send()
        .await
        .unwrap();
    let location = refused.headers()["location"].to_str().unwrap();
    assert_eq!(query_of(location)["error"], "login_required", "{location}");

    // The confirmations are in the audit chain, naming the credential and the count.
    server.stop().await;
    let tail = run(&eid, &addresses, &["audit", "tail", "-n", "60"]).await;
    assert!(tail.contains("idp.consent.credential"), "{tail}");
    assert!(tail.contains("cred-7f3a"), "{tail}");
    let verified = eid.run(&["audit", "verify"]).await;
    assert!(verified.status.success(), "{}", text(&verified.stderr));
}

async fn bad_authorization_details_are_refused(backend: TestBackend) {
    let eid = Eid::new(backend).await;
    let addresses = Addresses::new();
    run(&eid, &addresses, &["init"]).await;
    let csc = register(&eid, &addresses, &["--scope", "credential"]).await;
    let plain = register(&eid, &addresses, &["--scope", "profile"]).await;
    let server = serve(&eid, &addresses).await;
    let issuer = format!("http://{}", addresses.idp);
    let http = http();

    let good = credential_detail("cred-1", &[(Some("Deed"), b"deed")]);
    let with = |member: &str, value: Value| {
        let mut detail = good.clone();
        detail[0][member] = value;
        detail.to_string()
    };
    let without = |member: &str| {
        let mut detail = good.clone();
        detail[0].as_object_mut().unwrap().remove(member);
        detail.to_string()
    };
    let sha256 = Base64::encode_string(&sha2::Sha256::digest(b"deed"));
    let sha512 = Base64::encode_string(&sha2::Sha512::digest(b"deed"));
    let two = json!([good[0].clone(), good[0].clone()]).to_string();
    let cases: Vec<(&str, String, &str)> = vec![
        ("not JSON", "{not json".into(), "not JSON"),
        ("not an array", good[0].to_string(), "must be a JSON array"),
        ("empty", "[]".into(), "must not be an empty array"),
        (
            "unknown type",
            r#"[{"type":"payment_initiation"}]"#.into(),
            "`payment_initiation` is not supported",
        ),
        (
            "no credentialID",
            without("credentialID"),
            "credentialID is required",
        ),
        (
            "bad base64",
            with("documentDigests", json!([{ "hash": "not*base64*at*all" }])),
            "is not base64",
        ),
        (
            "hash length",
            with("documentDigests", json!([{ "hash": sha512 }])),
            "is 64 bytes long; a SHA-256 digest is 32",
        ),
        (
            "algorithm",
            with("hashAlgorithmOID", json!("1.3.14.3.2.26")),
            "`1.3.14.3.2.26` is not supported",
        ),
        ("two credentials", two, "only one `credential`"),
        (
            "long label",
            with(
                "documentDigests",
                json!([{ "hash": sha256, "label": "x".repeat(201) }]),
            ),
            "label must be a string of at most 200",
        ),
    ];
    let par = |client: &(String, String), scope: &'static str, details: &str| {
        http.post(format!("{issuer}/par"))
            .basic_auth(&client.0, Some(&client.1))
            .form(&[
                ("response_type", "code"),
                ("scope", scope),
                ("redirect_uri", "http://127.0.0.1:9/callback"),
                ("code_challenge", &pkce_challenge(VERIFIER)),
                ("code_challenge_method", "S256"),
                ("authorization_details", details),
            ])
            .send()
    };
    for (what, details, says) in &cases {
        // Pushed: 400 with the error in JSON.
        let response = par(&csc, "openid credential", details).await.unwrap();
        assert_eq!(response.status(), 400, "{what}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["error"], "invalid_authorization_details",
            "{what}: {body}"
        );
        let description = body["error_description"].as_str().unwrap();
        assert!(description.contains(says), "{what}: {description}");
        // Front channel: redirected back with the error (the redirect URI is good).
        let response = http
            .get(authorize_url(
                &issuer,
                &csc.0,
                "openid%20credential",
                &format!("&authorization_details={}", encoded(details)),
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 303, "{what}");
        let query = query_of(response.headers()["location"].to_str().unwrap());
        assert_eq!(query["error"], "invalid_authorization_details", "{what}");
        assert!(
            query["error_description"].contains(says),
            "{what}: {query:?}"
        );
        assert_eq!(query["state"], "st");
    }

    // A client not registered for the credential scope may not ask for authorisations.
    let response = par(&plain, "openid", &good.to_string()).await.unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_authorization_details");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("not allowed credential"),
        "{body}"
    );
    let response = http
        .get(authorize_url(
            &issuer,
            &plain.0,
            "openid",
            &format!("&authorization_details={}", encoded(&good.to_string())),
        ))
        .send()
        .await
        .unwrap();
    let query = query_of(response.headers()["location"].to_str().unwrap());
    assert_eq!(query["error"], "invalid_authorization_details", "{query:?}");
    // Nor the scope itself.
    let response = http
        .get(authorize_url(&issuer, &plain.0, "openid%20credential", ""))
        .send()
        .await
        .unwrap();
    let query = query_of(response.headers()["location"].to_str().unwrap());
    assert_eq!(query["error"], "invalid_scope", "{query:?}");
    // The good detail is accepted (a login page follows).
    let response = par(&csc, "openid credential", &good.to_string())
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    server.stop().await;
}

on_both_backends!(
    csc_tokens_and_signing_authorisations,
    bad_authorization_details_are_refused,
);
