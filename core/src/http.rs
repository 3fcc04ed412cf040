//! HTTP plumbing every service shares: `/healthz`, `/metrics` (Prometheus text with
//! request counts and latencies per route), problem+json errors, and serving with
//! graceful shutdown.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tokio_util::sync::CancellationToken;

use crate::ServiceContext;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    method: &'static str,
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: &'static str,
    method: &'static str,
    route: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Request metrics of one service.
#[derive(Debug)]
struct HttpMetrics {
    service: &'static str,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl HttpMetrics {
    fn new(service: &'static str) -> Self {
        let mut registry = Registry::with_prefix("eid");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "http_requests",
            "HTTP requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route",
            latency.clone(),
        );
        Self {
            service,
            registry,
            requests,
            latency,
        }
    }
}

/// Routes are few and fixed: each distinct matched path is interned once, so recording
/// a request allocates nothing.
fn intern(text: &str) -> &'static str {
    static INTERNED: std::sync::OnceLock<
        std::sync::RwLock<std::collections::HashSet<&'static str>>,
    > = std::sync::OnceLock::new();
    let set = INTERNED.get_or_init(Default::default);
    if let Some(found) = set.read().ok().and_then(|s| s.get(text).copied()) {
        return found;
    }
    match set.write() {
        Ok(mut set) => match set.get(text) {
            Some(found) => found,
            None => {
                let leaked: &'static str = Box::leak(text.to_owned().into_boxed_str());
                set.insert(leaked);
                leaked
            }
        },
        Err(_) => "unrecorded",
    }
}

async fn track(State(metrics): State<Arc<HttpMetrics>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| intern(p.as_str()));
    // Only the methods a router matched reach here; anything else is labelled as such.
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    tracing::debug!(service = metrics.service, %method, %route, status, elapsed_us = elapsed.as_micros() as u64, "request");
    metrics
        .requests
        .get_or_create(&RequestLabels {
            service: metrics.service,
            method,
            route,
            status,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            service: metrics.service,
            method,
            route,
        })
        .observe(elapsed.as_secs_f64());
    response
}

async fn metrics_text(State(metrics): State<Arc<HttpMetrics>>) -> Response {
    let mut body = String::new();
    match encode(&mut body, &metrics.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            body,
        )
            .into_response(),
        Err(e) => Problem::internal("encoding metrics", &e).into_response(),
    }
}

#[derive(Clone, Debug)]
struct HealthState {
    service: &'static str,
    ctx: ServiceContext,
}

async fn healthz(State(state): State<HealthState>) -> Response {
    match tokio::time::timeout(Duration::from_secs(2), state.ctx.db.ping()).await {
        Ok(Ok(())) => Json(serde_json::json!({
            "status": "ok",
            "service": state.service,
            "version": env!("CARGO_PKG_VERSION"),
        }))
        .into_response(),
        Ok(Err(e)) => {
            tracing::warn!(service = state.service, error = %e, "health check: database unavailable");
            unavailable(state.service, "database unavailable")
        }
        Err(_) => unavailable(state.service, "database did not answer within 2 s"),
    }
}

fn unavailable(service: &str, reason: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(serde_json::json!({ "status": "unavailable", "service": service, "reason": reason })),
    )
        .into_response()
}

async fn not_found(request: Request) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "not-found",
        format!("no resource at {}", request.uri().path()),
    )
}

/// Wraps a service's own routes with `GET /` (what the service is), `/healthz`,
/// `/metrics`, per-route metrics and a problem+json 404.
pub fn service_router(
    service: &'static str,
    description: &'static str,
    ctx: &ServiceContext,
    routes: Router,
) -> Router {
    let metrics = Arc::new(HttpMetrics::new(service));
    let health = HealthState {
        service,
        ctx: ctx.clone(),
    };
    let index = serde_json::json!({
        "service": service,
        "description": description,
        "version": env!("CARGO_PKG_VERSION"),
        "health": "/healthz",
        "metrics": "/metrics",
    });
    routes
        .route("/", get(move || std::future::ready(Json(index))))
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .with_state(health),
        )
        .merge(
            Router::new()
                .route("/metrics", get(metrics_text))
                .with_state(metrics.clone()),
        )
        .route_layer(middleware::from_fn_with_state(metrics, track))
        .fallback(not_found)
}

/// An error answer in RFC 9457 problem+json. Internal causes go to the log under a
/// correlation id; the body carries only the id.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl Problem {
    /// A problem with a status, a short machine-readable kind and a human message.
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
        }
    }

    /// A 500 whose cause is logged, not shown.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        let mut id = [0u8; 8];
        let correlation = match getrandom::fill(&mut id) {
            Ok(()) => hex::encode(id),
            Err(_) => "unavailable".to_owned(),
        };
        tracing::error!(correlation_id = %correlation, context, error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("internal error (correlation id {correlation})"),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": format!("urn:eid:problem:{}", self.kind),
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body.to_string(),
        )
            .into_response()
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets in-flight
/// requests finish.
pub async fn serve(
    service: &'static str,
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let address: Option<SocketAddr> = listener.local_addr().ok();
    tracing::info!(service, address = ?address, "listening");
    // The peer address travels with each request (rate limits per client address).
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await?;
    tracing::info!(service, "stopped");
    Ok(())
}

/// The client certificate (DER) of the TLS connection a request came on, if the browser
/// presented one: an extension on every request of [`serve_client_certificates`].
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<Vec<u8>>);

/// Serves `router` over TLS terminated here with `tls` (which asks for a client
/// certificate and verifies its chain), never a certificate a proxy forwards in a
/// header: each request carries the connection's [`PeerCertificate`]. HTTP/1.1; a
/// handshake may take 10 s. Runs until `shutdown`.
///
/// Every request is a card presented anew: one request per connection (no keep-alive)
/// and no TLS session resumption (no session cache, no tickets), whatever `tls` says.
/// Otherwise a browser at a shared desk or kiosk could carry the previous person's
/// handshake into the next login, over a kept-alive connection or a resumed session,
/// without their card in the reader.
pub async fn serve_client_certificates(
    service: &'static str,
    tls: Arc<rustls::ServerConfig>,
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut tls = Arc::unwrap_or_clone(tls);
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_tls13_tickets = 0;
    tls.ticketer = Arc::new(NoTickets);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    tracing::info!(service, address = ?listener.local_addr().ok(), "listening (TLS, client certificates)");
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => {
                tracing::info!(service, "stopped");
                return Ok(());
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(service, %error, "accept failed");
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(service, %peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| c.as_ref().to_vec());
            let service_fn = hyper_util::service::TowerToHyperService::new(
                router.layer(axum::Extension(PeerCertificate(certificate))),
            );
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service_fn)
                .await
            {
                tracing::debug!(service, %peer, %error, "connection ended with an error");
            }
        });
    }
}

/// Resumption tickets refused: a client-certificate listener resumes no session.
#[derive(Debug)]
struct NoTickets;

impl rustls::server::ProducesTickets for NoTickets {
    fn enabled(&self) -> bool {
        false
    }

    fn lifetime(&self) -> u32 {
        0
    }

    fn encrypt(&self, _plain: &[u8]) -> Option<Vec<u8>> {
        None
    }

    fn decrypt(&self, _cipher: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// Why a call to a bearer-token API was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BearerRefusal {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A token that is no configured caller's.
    Unknown,
}

/// The token of the request's `Authorization: Bearer` header (RFC 6750 §2.1; the
/// scheme's name in any case), if it has one.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The configured caller whose token the request's `Authorization: Bearer` header
/// carries. Digests are compared in constant time, so a comparison reveals nothing
/// about a token.
pub fn bearer_caller<'a>(
    headers: &axum::http::HeaderMap,
    callers: impl IntoIterator<Item = (&'a str, &'a secrecy::SecretString)>,
) -> Result<&'a str, BearerRefusal> {
    use secrecy::ExposeSecret;
    use sha2::{Digest, Sha256};
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(BearerRefusal::Missing)?;
    let presented = Sha256::digest(presented.as_bytes());
    callers
        .into_iter()
        .find(|(_, token)| {
            Sha256::digest(token.expose_secret().as_bytes())
                .iter()
                .zip(presented.iter())
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
        })
        .map(|(name, _)| name)
        .ok_or(BearerRefusal::Unknown)
}
