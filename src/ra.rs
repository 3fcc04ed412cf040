//! The enrolment desk's way to a CA that runs elsewhere: the CA's registration-authority
//! API over HTTP (`[enrolment.ca]`), with the desk's bearer token. A CA that does not
//! answer, answers late or fails (5xx) is *unavailable*, which lets the desk queue an
//! activation; a 4xx is the CA's refusal, passed on with its own words.

use std::time::Duration;

use eid_core::config::DeskCaConfig;
use eid_enrolment::{
    CertificateIssuer, CertificateKind, CertificateRequest, IssuedCertificate, KnownCertificate,
    PortError, PortFuture,
};
use secrecy::ExposeSecret;
use serde_json::Value;

/// The CA's RA API at `url`.
#[derive(Debug)]
pub(crate) struct HttpIssuer {
    http: reqwest::Client,
    config: DeskCaConfig,
}

impl HttpIssuer {
    pub(crate) fn new(config: DeskCaConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(Self { http, config })
    }

    fn url(&self, path: &str) -> Result<reqwest::Url, PortError> {
        self.config
            .url
            .join(path)
            .map_err(|e| PortError::Refused(format!("bad CA path {path}: {e}")))
    }

    /// Sends `request` with the desk's token (and the person it acts for), and reads
    /// the JSON answer.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
        actor: Option<&str>,
    ) -> Result<Value, PortError> {
        let mut request = request.bearer_auth(self.config.token.expose_secret());
        if let Some(actor) = actor {
            request = request.header("X-Eid-Actor", actor);
        }
        let where_ = self.config.url.as_str();
        let response = request.send().await.map_err(|e| {
            PortError::Unavailable(if e.is_timeout() {
                format!("{where_} did not answer within {:?}", self.config.timeout)
            } else {
                format!("{where_} cannot be reached ({})", without_url(&e))
            })
        })?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| PortError::Unavailable(format!("{where_}: {}", without_url(&e))))?;
        let json: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return json.ok_or_else(|| {
                PortError::Unavailable(format!("{where_} answered {status} without JSON"))
            });
        }
        let detail = json
            .as_ref()
            .and_then(|j| j["detail"].as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("HTTP {status}"));
        if status.is_client_error() {
            // The desk's token refused is a configuration fault, not a passing outage.
            Err(PortError::Refused(detail))
        } else {
            Err(PortError::Unavailable(format!("{where_}: {detail}")))
        }
    }
}

/// reqwest's error with its causes (the refused connection, the DNS failure), without
/// the URL it repeats.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(&format!(" for url ({url})"), "");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn answer_field(answer: &Value, field: &str) -> Result<String, PortError> {
    answer[field]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| PortError::Unavailable(format!("the CA's answer lacks `{field}`")))
}

impl CertificateIssuer for HttpIssuer {
    fn issue(&self, request: CertificateRequest) -> PortFuture<'_, IssuedCertificate> {
        Box::pin(async move {
            let profile = match request.kind {
                CertificateKind::Authentication => "citizen-auth",
                CertificateKind::QualifiedSignature => "citizen-sign",
            };
            let csr = if request.csr.starts_with(b"-----BEGIN") {
                String::from_utf8_lossy(&request.csr).into_owned()
            } else {
                der::pem::encode_string(
                    "CERTIFICATE REQUEST",
                    der::pem::LineEnding::LF,
                    &request.csr,
                )
                .map_err(|e| PortError::Refused(format!("the request cannot be encoded: {e}")))?
            };
            let mut body = serde_json::json!({
                "profile": profile,
                "csr": csr,
                "national_id": request.national_id,
                "given_name": request.given_name,
                "surname": request.surname,
            });
            if let Some((_, evidence)) = &request.key_evidence {
                body["key_evidence"] = serde_json::to_value(evidence)
                    .map_err(|e| PortError::Refused(format!("key evidence: {e}")))?;
            }
            let answer = self
                .call(
                    self.http.post(self.url("api/v1/certificates")?).json(&body),
                    Some(&request.requested_by),
                )
                .await?;
            let pem = answer_field(&answer, "certificate")?;
            let (_, der) = der::pem::decode_vec(pem.as_bytes()).map_err(|e| {
                PortError::Unavailable(format!("the CA's certificate is not PEM: {e}"))
            })?;
            Ok(IssuedCertificate {
                serial: answer_field(&answer, "serial")?,
                der,
            })
        })
    }

    fn certificates_of<'a>(
        &'a self,
        national_id: &'a str,
    ) -> PortFuture<'a, Vec<KnownCertificate>> {
        Box::pin(async move {
            let answer = self
                .call(
                    self.http
                        .get(self.url("api/v1/certificates")?)
                        .query(&[("national_id", national_id)]),
                    None,
                )
                .await?;
            let listed = answer["certificates"].as_array().ok_or_else(|| {
                PortError::Unavailable("the CA's answer lacks `certificates`".into())
            })?;
            listed
                .iter()
                .map(|c| {
                    Ok(KnownCertificate {
                        serial: answer_field(c, "serial")?,
                        status: answer_field(c, "status")?,
                    })
                })
                .collect()
        })
    }

    fn change_status<'a>(
        &'a self,
        serial: &'a str,
        change: &'a str,
        actor: &'a str,
    ) -> PortFuture<'a, ()> {
        Box::pin(async move {
            let path = format!("api/v1/certificates/{serial}/status");
            self.call(
                self.http
                    .post(self.url(&path)?)
                    .json(&serde_json::json!({ "change": change })),
                Some(actor),
            )
            .await
            .map(|_| ())
        })
    }
}
