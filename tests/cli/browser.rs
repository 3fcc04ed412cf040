//! A real browser for the pages people use: headless Chromium driven over WebDriver
//! (chromedriver), with the WebAuthn virtual authenticator standing in for a phone or
//! security key.

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};

use super::ca::free_address;

/// The W3C WebDriver element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One browser session.
pub(crate) struct Browser {
    driver: tokio::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

fn binary(name: &str, candidates: &[&str]) -> String {
    candidates
        .iter()
        .find(|path| std::path::Path::new(path).exists())
        .map(|path| (*path).to_owned())
        .unwrap_or_else(|| panic!("{name} is not installed: deploy/test.sh installs it"))
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile.
    pub(crate) async fn start() -> Self {
        let driver_path = binary("chromedriver", &["/usr/bin/chromedriver"]);
        let chromium = binary("chromium", &["/usr/bin/chromium"]);
        let address = free_address();
        let port = address.rsplit(':').next().unwrap().to_owned();
        let driver = tokio::process::Command::new(driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        for _ in 0..100 {
            if http.get(format!("{base}/status")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--disable-quic", "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        format!("--user-data-dir={}", profile.path().display()),
                    ],
                },
            }},
        });
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("chromedriver did not start a session: {created}"))
            .to_owned();
        Self {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    /// A WebDriver command: its value, or the error WebDriver named.
    async fn try_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut request = self.http.request(method, url);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request.send().await.unwrap().json().await.unwrap();
        match answer["value"].get("error") {
            Some(error) => Err(format!(
                "{}: {}",
                error.as_str().unwrap_or_default(),
                answer["value"]["message"]
            )),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .await
            .unwrap_or_else(|error| panic!("WebDriver {path}: {error}"))
    }

    /// Opens a URL (waits for the load).
    pub(crate) async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The current URL.
    pub(crate) async fn url(&self) -> String {
        self.call(reqwest::Method::GET, "/url", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The page's HTML.
    pub(crate) async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find_now(&self, css: &str) -> Option<String> {
        let url = format!("{}/session/{}/element", self.base, self.session);
        let answer: Value = self
            .http
            .post(url)
            .json(&json!({ "using": "css selector", "value": css }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        answer["value"][ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits (up to 10 s) for an element and returns its reference.
    pub(crate) async fn find(&self, css: &str) -> String {
        for _ in 0..100 {
            if let Some(element) = self.find_now(css).await {
                return element;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "no element `{css}` at {}:\n{}",
            self.url().await,
            self.source().await
        );
    }

    /// Whether an element is on the page now.
    pub(crate) async fn has(&self, css: &str) -> bool {
        self.find_now(css).await.is_some()
    }

    /// Clicks an element.
    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            Some(json!({})),
        )
        .await;
    }

    /// Types into an element.
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )
        .await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// An element's text (found again if the page changed under it).
    pub(crate) async fn text(&self, css: &str) -> String {
        for _ in 0..50 {
            let element = self.find(css).await;
            match self
                .try_call(
                    reqwest::Method::GET,
                    &format!("/element/{element}/text"),
                    None,
                )
                .await
            {
                Ok(value) => return value.as_str().unwrap_or_default().to_owned(),
                Err(error) if error.starts_with("stale element reference") => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("WebDriver text of `{css}`: {error}"),
            }
        }
        panic!("`{css}` kept going stale");
    }

    /// An element's text once it has some (up to 10 s): for a message a script fills in
    /// after a request, such as a passkey ceremony's refusal.
    pub(crate) async fn text_when_shown(&self, css: &str) -> String {
        for _ in 0..100 {
            let text = self.text(css).await;
            if !text.trim().is_empty() {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{css}` stayed empty at {}", self.url().await);
    }

    /// Clicks an element that leads to another page, and waits until the page it was
    /// on has gone (so that what is found next is on the new page).
    pub(crate) async fn click_and_wait(&self, css: &str) {
        let old = self.find("html").await;
        self.click(css).await;
        self.wait_until_gone(&old, css).await;
    }

    /// Runs a script in the page (its `arguments` are `args`) and returns what it returns.
    pub(crate) async fn execute(&self, script: &str, args: Value) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
    }

    /// Runs a script in the page (its `arguments` are `args`) that leads to another page,
    /// and waits until the page it ran on has gone.
    pub(crate) async fn script_and_wait(&self, script: &str, args: Value) {
        let old = self.find("html").await;
        self.execute(script, args).await;
        self.wait_until_gone(&old, "a script").await;
    }

    async fn wait_until_gone(&self, old: &str, css: &str) {
        for _ in 0..100 {
            let probe = self
                .try_call(reqwest::Method::GET, &format!("/element/{old}/name"), None)
                .await;
            if probe.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("clicking `{css}` did not leave {}", self.url().await);
    }

    /// Waits (up to 10 s) until the URL satisfies `test`.
    pub(crate) async fn wait_for_url(&self, test: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            let url = self.url().await;
            if test(&url) {
                return url;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the browser stayed at {}:\n{}",
            self.url().await,
            self.source().await
        );
    }

    /// The page's HTML once `test` holds for it: a page still loading (or replaced by
    /// a script) reads as empty or stale for a moment, more so on a loaded machine.
    pub(crate) async fn source_when(&self, test: impl Fn(&str) -> bool) -> String {
        for _ in 0..100 {
            let source = self.source().await;
            if test(&source) {
                return source;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the page never showed what was expected:\n{}",
            self.source().await
        );
    }

    /// Sets a cookie for the current page's host.
    pub(crate) async fn add_cookie(&self, name: &str, value: &str) {
        self.call(
            reqwest::Method::POST,
            "/cookie",
            Some(json!({ "cookie": { "name": name, "value": value, "path": "/", "httpOnly": true } })),
        )
        .await;
    }

    /// The current page's cookies, HttpOnly ones included (WebDriver "Get All
    /// Cookies"), as `name=value` pairs.
    #[allow(dead_code)] // deploy/bench/enrolment_load.rs drives the desk with them
    pub(crate) async fn cookies(&self) -> Vec<(String, String)> {
        self.call(reqwest::Method::GET, "/cookie", None)
            .await
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| {
                Some((
                    c["name"].as_str()?.to_owned(),
                    c["value"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }

    /// Adds a WebAuthn virtual authenticator (CTAP2, platform, resident keys, user
    /// verification that succeeds), as the WebAuthn spec's WebDriver extension defines.
    pub(crate) async fn add_virtual_authenticator(&self) -> String {
        self.call(
            reqwest::Method::POST,
            "/webauthn/authenticator",
            Some(json!({
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": true,
                "hasUserVerification": true,
                "isUserVerified": true,
            })),
        )
        .await
        .as_str()
        .unwrap()
        .to_owned()
    }

    /// The credentials the virtual authenticator holds.
    pub(crate) async fn credentials(&self, authenticator: &str) -> Vec<Value> {
        self.call(
            reqwest::Method::GET,
            &format!("/webauthn/authenticator/{authenticator}/credentials"),
            None,
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
    }

    /// Ends the session and the driver.
    pub(crate) async fn quit(mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send()
            .await;
        let _ = self.driver.kill().await;
    }
}
