//! Request ids and access logs, the body-size limit, and the client address.

use std::net::IpAddr;
use std::time::Instant;

use poem::http::{HeaderValue, StatusCode};
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

/// The header that carries the request id, in both directions.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Runs `ep` inside a span carrying a request id (the caller's `X-Request-Id` when it is a short,
/// plain token, otherwise a new UUID), echoes the id in the response, and logs one line per
/// request: method, path, status, duration. Never headers, query strings or bodies, which is where
/// passwords and tokens travel.
pub async fn request_context<E: Endpoint>(ep: E, req: Request) -> poem::Result<Response> {
    let request_id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let span =
        tracing::info_span!("request", request_id = %request_id, method = %method, path = %path);
    let started = Instant::now();
    let mut response = match ep.call(req).instrument(span.clone()).await {
        Ok(output) => output.into_response(),
        Err(err) => err.into_response(),
    };
    let status = response.status();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), elapsed_ms, "request finished");
        } else {
            tracing::info!(status = status.as_u16(), elapsed_ms, "request finished");
        }
    });
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    Ok(response)
}

/// Refuses bodies larger than `limit` bytes with 413: at once when `Content-Length` says so,
/// otherwise while reading a chunked body (which is then handed on from memory).
pub async fn limit_body<E: Endpoint>(
    ep: E,
    mut req: Request,
    limit: usize,
) -> poem::Result<E::Output> {
    let too_large = || {
        poem::Error::from_string(
            format!("the request body is larger than {limit} bytes"),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(length) if length > limit as u64 => return Err(too_large()),
        Some(_) => {}
        None => {
            let body = req.take_body();
            match body.into_bytes_limit(limit).await {
                Ok(bytes) => req.set_body(bytes),
                Err(poem::error::ReadBodyError::PayloadTooLarge) => return Err(too_large()),
                Err(err) => return Err(err.into()),
            }
        }
    }
    ep.call(req).await
}

/// The client's address: the socket's peer, or — behind a trusted reverse proxy — the last
/// `X-Forwarded-For` entry, the one that proxy appended. Earlier entries are whatever the client
/// sent and are never trusted.
pub fn client_ip(req: &Request, trust_proxy_headers: bool) -> Option<IpAddr> {
    if trust_proxy_headers {
        let forwarded = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|last| last.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    req.remote_addr().as_socket_addr().map(|addr| addr.ip())
}
