//! Checking an authorization request (OpenID Connect Core 3.1.2.1, RFC 6749 4.1.1,
//! RFC 7636, RFC 9126): which errors may be redirected to the client and which must be
//! shown at the provider, because the redirect URI itself is not trusted yet.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    Level, OAuthError,
    authorization_details::{self, AuthorizationDetail, CredentialAuthorization},
    clients::Client,
};

/// Longest value of any one parameter, and the most parameters, accepted.
const MAX_PARAMETER_LEN: usize = 4096;
const MAX_PARAMETERS: usize = 40;
/// `authorization_details` may list up to 100 labelled digests, so it may be longer.
const MAX_AUTHORIZATION_DETAILS_LEN: usize = 64 * 1024;

/// Request parameters, each given at most once (RFC 6749 3.1).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Parameters(pub BTreeMap<String, String>);

impl Parameters {
    /// Collects name/value pairs, refusing repeats, oversized values and floods.
    pub fn collect(pairs: Vec<(String, String)>) -> Result<Self, OAuthError> {
        if pairs.len() > MAX_PARAMETERS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        let mut map = BTreeMap::new();
        for (name, value) in pairs {
            let limit = if name == "authorization_details" {
                MAX_AUTHORIZATION_DETAILS_LEN
            } else {
                MAX_PARAMETER_LEN
            };
            if value.len() > limit {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{name}` is longer than {limit} characters"
                )));
            }
            // RFC 6749 3.1: parameters sent without a value are treated as omitted.
            if value.is_empty() {
                continue;
            }
            if map.insert(name.clone(), value).is_some() {
                return Err(OAuthError::invalid_request(format!(
                    "parameter `{name}` is given more than once"
                )));
            }
        }
        Ok(Self(map))
    }

    /// A parameter's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// `prompt` (OpenID Connect Core 3.1.2.1).
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Prompt {
    /// No user interaction allowed.
    pub none: bool,
    /// Re-authenticate even with a session.
    pub login: bool,
    /// Ask for consent even if remembered.
    pub consent: bool,
}

/// A checked authorization request, kept with the interaction until the code is issued.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    /// The client.
    pub client_id: String,
    /// The registered redirect URI the response goes to.
    pub redirect_uri: String,
    /// Requested scopes (`openid` first).
    pub scopes: Vec<String>,
    /// Client state, returned unchanged.
    pub state: Option<String>,
    /// Replay protection for the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge.
    pub code_challenge: Option<String>,
    /// `prompt`.
    pub prompt: Prompt,
    /// `max_age` in seconds.
    pub max_age: Option<u64>,
    /// The lowest level that satisfies the request and the client's registration.
    pub required_level: Level,
    /// Claims requested for the ID token by the `claims` parameter.
    pub id_token_claims: Vec<String>,
    /// Claims requested for userinfo by the `claims` parameter.
    pub userinfo_claims: Vec<String>,
    /// DPoP key thumbprint the code is bound to (RFC 9449 10).
    pub dpop_jkt: Option<String>,
    /// Preferred languages.
    pub ui_locales: Option<String>,
    /// Validated rich authorization details (RFC 9396): a signing authorisation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization_details: Vec<AuthorizationDetail>,
}

impl AuthorizationRequest {
    /// The signing authorisation this request asks for, if any.
    pub fn credential(&self) -> Option<&CredentialAuthorization> {
        authorization_details::credential(&self.authorization_details)
    }
}

/// Why a request was refused, and where the refusal goes.
#[derive(Debug)]
pub enum Refusal {
    /// Shown at the provider: the client or redirect URI could not be trusted.
    Page(OAuthError),
    /// Sent back to the (verified) redirect URI.
    Redirect {
        /// Where to.
        redirect_uri: String,
        /// The client's `state`.
        state: Option<String>,
        /// The error.
        error: OAuthError,
    },
}

/// The parts that decide where errors go: the client and its redirect URI.
pub fn redirect_target(client: &Client, params: &Parameters) -> Result<String, OAuthError> {
    match params.get("redirect_uri") {
        Some(uri) if client.metadata.redirect_uris.iter().any(|r| r == uri) => Ok(uri.to_owned()),
        Some(_) => Err(OAuthError::invalid_request(
            "redirect_uri is not registered for this client",
        )),
        None => Err(OAuthError::invalid_request(
            "redirect_uri is required (OpenID Connect Core 3.1.2.1)",
        )),
    }
}

/// Checks everything after the redirect URI. `acr` maps level names to `acr` values.
pub fn check(
    client: &Client,
    params: &Parameters,
    redirect_uri: String,
    acr: &[String; 3],
) -> Result<AuthorizationRequest, OAuthError> {
    if params.get("request").is_some() {
        return Err(OAuthError::request_not_supported(
            "request objects are not supported (request_parameter_supported is false); \
             push the request with PAR instead",
        ));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(other) => {
            return Err(OAuthError::unsupported_response_type(format!(
                "response_type `{other}` is not supported; use `code`"
            )));
        }
        None => return Err(OAuthError::invalid_request("response_type is required")),
    }
    if let Some(mode) = params.get("response_mode")
        && mode != "query"
    {
        return Err(OAuthError::invalid_request(format!(
            "response_mode `{mode}` is not supported; use `query`"
        )));
    }
    if !client.allows_grant("authorization_code") {
        return Err(OAuthError::unauthorized_client(
            "this client is not registered for the authorization code flow",
        ));
    }

    let scope = params.get("scope").unwrap_or("");
    let mut scopes: Vec<String> = Vec::new();
    for s in scope.split(' ').filter(|s| !s.is_empty()) {
        if !scopes.iter().any(|x| x == s) {
            scopes.push(s.to_owned());
        }
    }
    if !scopes.iter().any(|s| s == "openid") {
        return Err(OAuthError::invalid_scope(
            "the scope must include `openid` (this provider serves OpenID Connect logins)",
        ));
    }
    if let Some(refused) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(OAuthError::invalid_scope(format!(
            "scope `{refused}` is not allowed for this client"
        )));
    }
    scopes.sort_by_key(|s| s != "openid");

    let code_challenge = match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (Some(challenge), Some("S256")) => {
            if challenge.len() != 43
                || !challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(OAuthError::invalid_request(
                    "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
                ));
            }
            Some(challenge.to_owned())
        }
        (Some(_), Some(method)) => {
            return Err(OAuthError::invalid_request(format!(
                "code_challenge_method `{method}` is not supported; use S256"
            )));
        }
        (Some(_), None) => {
            return Err(OAuthError::invalid_request(
                "code_challenge_method is required and must be S256 (plain is not accepted)",
            ));
        }
        (None, _) => {
            return Err(OAuthError::invalid_request(
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            ));
        }
    };

    let mut prompt = Prompt::default();
    for value in params.get("prompt").unwrap_or("").split(' ') {
        match value {
            "" => {}
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            other => {
                return Err(OAuthError::invalid_request(format!(
                    "prompt value `{other}` is not known"
                )));
            }
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other prompt values",
        ));
    }

    let max_age = match params.get("max_age") {
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            OAuthError::invalid_request("max_age must be a non-negative number of seconds")
        })?),
        None => None,
    };

    // acr_values lists acceptable levels: the lowest of them is what must be reached.
    let level_of = |value: &str| {
        acr.iter()
            .position(|a| a == value)
            .and_then(Level::from_index)
    };
    let mut required = client.metadata.min_level;
    if let Some(values) = params.get("acr_values") {
        let known: Vec<Level> = values.split(' ').filter_map(level_of).collect();
        if let Some(lowest) = known.iter().min() {
            required = required.max(*lowest);
        }
    }

    let (mut id_token_claims, mut userinfo_claims) = (Vec::new(), Vec::new());
    if let Some(text) = params.get("claims") {
        let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(text) else {
            return Err(OAuthError::invalid_request(
                "claims must be a JSON object (OpenID Connect Core 5.5)",
            ));
        };
        for (target, list) in [
            ("id_token", &mut id_token_claims),
            ("userinfo", &mut userinfo_claims),
        ] {
            let Some(requested) = claims.get(target) else {
                continue;
            };
            let Value::Object(requested) = requested else {
                return Err(OAuthError::invalid_request(format!(
                    "claims.{target} must be an object"
                )));
            };
            for (name, spec) in requested {
                list.push(name.clone());
                if name != "acr" {
                    continue;
                }
                let essential = spec.get("essential").and_then(Value::as_bool) == Some(true);
                let mut values: Vec<&str> = spec
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if let Some(one) = spec.get("value").and_then(Value::as_str) {
                    values.push(one);
                }
                let known: Vec<Level> = values.iter().copied().filter_map(level_of).collect();
                match known.iter().min() {
                    Some(lowest) => required = required.max(*lowest),
                    None if essential && !values.is_empty() => {
                        return Err(OAuthError::access_denied(format!(
                            "none of the essential acr values is offered here; known values: {}",
                            acr.join(", ")
                        )));
                    }
                    None => {}
                }
            }
        }
    }

    let authorization_details = match params.get("authorization_details") {
        Some(text) => {
            // Only a client registered for the CSC `credential` scope may ask for
            // signing authorisations; the refusal names the error RFC 9396 5 defines.
            if !client.allows_scope("credential") {
                return Err(OAuthError::invalid_authorization_details(
                    "this client is not allowed credential authorisations (its registration \
                     lacks the `credential` scope)",
                ));
            }
            authorization_details::parse(text)?
        }
        None => Vec::new(),
    };
    if authorization_details::credential(&authorization_details).is_some() {
        // A signing authorisation is bound to a login made for it and is confirmed each
        // time: it is asked for as with prompt=login and prompt=consent.
        if prompt.none {
            return Err(OAuthError::login_required(
                "a credential authorisation needs a fresh login and the citizen's \
                 confirmation, which prompt=none forbids",
            ));
        }
        prompt.login = true;
        prompt.consent = true;
    }

    let dpop_jkt = params.get("dpop_jkt").map(str::to_owned);

    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        scopes,
        state: params.get("state").map(str::to_owned),
        nonce: params.get("nonce").map(str::to_owned),
        code_challenge,
        prompt,
        max_age,
        required_level: required,
        id_token_claims,
        userinfo_claims,
        dpop_jkt,
        ui_locales: params.get("ui_locales").map(str::to_owned),
        authorization_details,
    })
}

/// The redirect back to the client: `code` or `error`, with `state` and RFC 9207 `iss`.
pub fn response_url(
    redirect_uri: &str,
    issuer: &str,
    state: Option<&str>,
    outcome: Result<&str, &OAuthError>,
) -> String {
    let Ok(mut url) = url::Url::parse(redirect_uri) else {
        return redirect_uri.to_owned();
    };
    {
        let mut query = url.query_pairs_mut();
        match outcome {
            Ok(code) => {
                query.append_pair("code", code);
            }
            Err(error) => {
                query.append_pair("error", error.code);
                query.append_pair("error_description", &error.description);
            }
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", issuer);
    }
    url.into()
}
