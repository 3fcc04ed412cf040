//! The signing service's HTTP surface and its error boundary. The TSA's errors never
//! reach HTTP: the domain answers every request with a `TimeStampResp` (a rejection
//! carries the PKIFailureInfo), sent with 200 as RFC 3161 §3.4 clients expect. Only a
//! request that is not a time-stamp query at all (wrong media type) gets a 415
//! problem+json, since its sender would not read a DER reply.

use axum::{
    Router,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use eid_core::http::Problem;

use crate::tsa::{FailureInfo, TimeStampAuthority, token};

const QUERY: &str = "application/timestamp-query";
const REPLY: &str = "application/timestamp-reply";

fn reply(body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, REPLY),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn time_stamp(
    State(tsa): State<TimeStampAuthority>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let media_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    if media_type.as_deref() != Some(QUERY) {
        return Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("POST a DER TimeStampReq with Content-Type: {QUERY} (RFC 3161 §3.4)"),
        )
        .into_response();
    }
    match body {
        Ok(body) => reply(tsa.respond(&body).await),
        // Over the body limit (or a broken upload): still an answer in the protocol.
        Err(rejection) => reply(token::rejection(
            FailureInfo::BadRequest,
            &format!(
                "the request body could not be read ({}); requests are at most {} octets",
                rejection.status(),
                token::MAX_REQUEST_BYTES
            ),
        )),
    }
}

/// The routes, before the shared `/healthz` and `/metrics`.
pub(crate) fn routes(tsa: &TimeStampAuthority) -> Router {
    Router::new()
        .route("/tsa", post(time_stamp))
        // Past the parser's limit the body is not read further; the handler answers
        // badRequest in a TimeStampResp.
        .layer(axum::extract::DefaultBodyLimit::max(
            token::MAX_REQUEST_BYTES + 1,
        ))
        .with_state(tsa.clone())
}
