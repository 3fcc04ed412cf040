//! What every server-rendered page of the platform shares: HTML escaping, the security
//! headers, cookies and CSRF tokens. The idp's citizen pages and the enrolment desk use
//! the same rules, so a fix to one is a fix to both.

use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use sha2::{Digest, Sha256};

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Marks a response as never to be cached (it carries personal data or one-time values).
pub fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// The content security policy of every page: scripts and fetches only from the page's
/// own origin, no framing, no third-party anything. `media-src` and `blob:` images let
/// a page show a camera preview it captured itself. No `form-action`: browsers apply it
/// to the redirects that follow a post, and a consent form must redirect to the relying
/// party.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
     style-src 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' blob:; \
     base-uri 'none'; frame-ancestors 'none'";

/// An HTML page with the security headers every page carries, never cached.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, Html(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    no_store(response)
}

/// A 303 to `location`, never cached.
pub fn see_other(location: &str) -> Response {
    no_store(Redirect::to(location).into_response())
}

/// The value of cookie `name`, if the request carries it (values longer than any cookie
/// this platform sets are ignored).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| v.len() <= 64)
}

/// Sets an HttpOnly, SameSite=Lax cookie for the whole site; `secure` when the service
/// is reached over https; `max_age` None for a browser-session cookie, Some(0) to delete.
pub fn set_cookie(
    response: &mut Response,
    name: &str,
    value: &str,
    secure: bool,
    max_age: Option<u64>,
) {
    let secure = if secure { "; Secure" } else { "" };
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_default();
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax{secure}{age}");
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A CSRF token bound to a secret cookie and a context (a form, a session): forms carry
/// it, and a post whose token does not match the cookie's is refused.
pub fn csrf_token(secret_cookie: &str, context: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"eid csrf\n");
    hash.update(secret_cookie.as_bytes());
    hash.update(b"\n");
    hash.update(context.as_bytes());
    hex::encode(hash.finalize())
}

/// The WebAuthn relying party of a service reached at `public_url`: its id is the URL's
/// host name. WebAuthn does not work on an IP address, so a service reached as
/// `http://127.0.0.1:…` has none (None).
pub fn relying_party(public_url: &str, name: &str) -> Option<webauthn_rs::Webauthn> {
    use webauthn_rs::prelude::{Url, WebauthnBuilder};
    let origin = Url::parse(public_url).ok()?;
    let host = origin.domain()?.to_owned();
    let origin = Url::parse(&origin.origin().ascii_serialization()).ok()?;
    WebauthnBuilder::new(&host, &origin)
        .ok()?
        .rp_name(name)
        .build()
        .ok()
}

/// Compares two tokens without leaking, through timing, how much of them matched.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">O'Neil & co</a>"),
            "&lt;a href=&quot;x&quot;&gt;O&#39;Neil &amp; co&lt;/a&gt;"
        );
    }

    #[test]
    fn csrf_tokens_depend_on_cookie_and_context() {
        let a = csrf_token("cookie", "form");
        assert_eq!(a, csrf_token("cookie", "form"));
        assert_ne!(a, csrf_token("cookie2", "form"));
        assert_ne!(a, csrf_token("cookie", "form2"));
        assert!(tokens_match(&a, &csrf_token("cookie", "form")));
        assert!(!tokens_match(&a, &csrf_token("cookie", "form2")));
        assert!(!tokens_match(&a, "short"));
    }

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        assert_eq!(cookie(&headers, "b").as_deref(), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }
}
