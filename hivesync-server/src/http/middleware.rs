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

/// How much body a route may receive, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// Read into memory, refused past the limit (JSON bodies).
    Buffered(u64),
    /// Passed on as a stream: refused at once when `Content-Length` exceeds the limit, and by
    /// the handler while it spools the body otherwise (uploads).
    Streamed(u64),
}

/// The body limits of the routes.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    /// JSON bodies: `MAX_REQUEST_BODY_BYTES`.
    pub json: u64,
    /// `/sync/plan`: `SYNC_MAX_MANIFEST_BYTES`.
    pub manifest: u64,
    /// `/sync` and `/sync/commit`: `SYNC_MAX_UPLOAD_BYTES` (plus the manifest for commits).
    pub upload: u64,
}

impl BodyLimits {
    pub fn for_path(&self, path: &str) -> BodyLimit {
        let Some(rest) = path.strip_prefix("/api/v1/projects/") else {
            return BodyLimit::Buffered(self.json);
        };
        match rest.split_once('/').map(|(_, tail)| tail) {
            Some("sync" | "sync/") => BodyLimit::Streamed(self.upload),
            Some("sync/commit" | "sync/commit/") => {
                BodyLimit::Streamed(self.upload + self.manifest)
            }
            Some("sync/plan" | "sync/plan/") => BodyLimit::Buffered(self.manifest),
            _ => BodyLimit::Buffered(self.json),
        }
    }
}

/// Refuses bodies larger than the route's limit with 413: at once when `Content-Length` says
/// so; otherwise a buffered route reads the body (then handed on from memory) and a streamed one
/// leaves the counting to its handler. Refuses a NUL character anywhere in the URL or in a
/// buffered JSON body with 400: PostgreSQL cannot store it in text and SQLite would, so no input
/// may carry it, and every database answers the same.
pub async fn limit_body<E: Endpoint>(
    ep: E,
    mut req: Request,
    limits: BodyLimits,
) -> poem::Result<E::Output> {
    let nul = || {
        poem::Error::from_string(
            "text may not contain the NUL character (\\u0000)",
            StatusCode::BAD_REQUEST,
        )
    };
    let declared = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expect = req.headers().get(poem::http::header::EXPECT).cloned();
    let uri = req.uri();
    if uri.path().contains("%00") || uri.query().is_some_and(|q| q.contains("%00")) {
        let body = Box::pin(req.take_body().into_bytes_stream());
        discard(expect.as_ref(), declared, body).await;
        return Err(nul());
    }
    let limit = limits.for_path(req.uri().path());
    let bytes = match limit {
        BodyLimit::Buffered(n) | BodyLimit::Streamed(n) => n,
    };
    let too_large = || {
        poem::Error::from_string(
            format!("the request body is larger than {bytes} bytes"),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    if declared.is_some_and(|length| length > bytes) {
        let body = Box::pin(req.take_body().into_bytes_stream());
        discard(expect.as_ref(), declared, body).await;
        return Err(too_large());
    }
    if let BodyLimit::Streamed(_) = limit {
        // A handler may answer without reading the upload (it refuses who is asking, or the
        // disk is full): what it leaves comes back here to be read and discarded.
        let (sent_back, mut left) = tokio::sync::oneshot::channel();
        let body = Unread {
            stream: Some(Box::pin(req.take_body().into_bytes_stream())),
            sent_back: Some(sent_back),
        };
        req.set_body(poem::Body::from_bytes_stream(body));
        let output = ep.call(req).await;
        // Whatever the handler owned is dropped once it has answered (a task it spawned with
        // the body would still hold it: then there is nothing to take).
        if let Ok(stream) = left.try_recv() {
            discard(expect.as_ref(), declared, stream).await;
        }
        return output;
    }
    if let BodyLimit::Buffered(_) = limit {
        let body = req.take_body();
        let body = match body.into_bytes_limit(bytes as usize).await {
            Ok(body) => body,
            Err(poem::error::ReadBodyError::PayloadTooLarge) => return Err(too_large()),
            Err(err) => return Err(err.into()),
        };
        let json = req
            .content_type()
            .is_some_and(|t| t.starts_with("application/json") || t.contains("+json"));
        if json && has_nul(&body) {
            return Err(nul());
        }
        req.set_body(body);
    }
    ep.call(req).await
}

/// The most of a request body read and discarded after answering without it, and for how long.
/// A client still sending an upload the server refused (who is asking, a full disk, its size)
/// then reads the answer instead of a reset connection. Past these bounds the connection is
/// closed (`Connection: close`), as before.
const DISCARD_MAX_BYTES: u64 = 32 << 20;
const DISCARD_MAX_TIME: std::time::Duration = std::time::Duration::from_secs(10);

type BodyStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// A request body handed to a handler; if the handler drops it before its end, the rest is sent
/// back to [`limit_body`].
struct Unread {
    stream: Option<BodyStream>,
    sent_back: Option<tokio::sync::oneshot::Sender<BodyStream>>,
}

impl futures::Stream for Unread {
    type Item = std::io::Result<bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let Some(stream) = self.stream.as_mut() else {
            return std::task::Poll::Ready(None);
        };
        let next = stream.as_mut().poll_next(cx);
        if let std::task::Poll::Ready(None) = next {
            self.stream = None;
        }
        next
    }
}

impl Drop for Unread {
    fn drop(&mut self) {
        if let (Some(stream), Some(sent_back)) = (self.stream.take(), self.sent_back.take()) {
            let _ = sent_back.send(stream);
        }
    }
}

/// Reads and drops what is left of a request body (see [`DISCARD_MAX_BYTES`]).
async fn discard(expect: Option<&HeaderValue>, declared: Option<u64>, mut stream: BodyStream) {
    use futures::StreamExt;
    // A client that waits for `100 Continue` has sent nothing; reading would ask it for all.
    if expect.is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")) {
        return;
    }
    if declared.is_some_and(|length| length > DISCARD_MAX_BYTES) {
        return;
    }
    let _ = tokio::time::timeout(DISCARD_MAX_TIME, async {
        let mut read = 0u64;
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DISCARD_MAX_BYTES {
                break;
            }
        }
    })
    .await;
}

/// Whether JSON text holds a NUL character: a raw zero byte, or a `\u0000` escape (not an
/// escaped backslash followed by `u0000`).
fn has_nul(json: &[u8]) -> bool {
    let mut i = 0;
    while i < json.len() {
        match json[i] {
            0 => return true,
            b'\\' => {
                if json.get(i + 1) == Some(&b'u') && json.get(i + 2..i + 6) == Some(b"0000") {
                    return true;
                }
                // Whatever is escaped is skipped, so `\\` never starts another escape.
                i += 2;
            }
            _ => i += 1,
        }
    }
    false
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_characters_are_found_in_json_text_only_as_escapes_or_raw_bytes() {
        for (text, nul) in [
            (r#"{"a": "x\u0000y"}"#, true),
            (r#"{"a": "\u0000"}"#, true),
            ("{\"a\": \"\0\"}", true),
            (r#"{"a": "\\u0000"}"#, false),
            (r#"{"a": "\\\u0000"}"#, true),
            (r#"{"a": "\u00001"}"#, true),
            (r#"{"a": "\u0001 \u1000"}"#, false),
            (r#"{"a": "u0000"}"#, false),
        ] {
            assert_eq!(has_nul(text.as_bytes()), nul, "{text}");
        }
    }

    #[test]
    fn uploads_stream_and_manifests_get_their_own_limit() {
        let limits = BodyLimits {
            json: 10,
            manifest: 20,
            upload: 30,
        };
        let id = "0190b5a0-0000-7000-8000-000000000000";
        assert_eq!(
            limits.for_path(&format!("/api/v1/projects/{id}/sync")),
            BodyLimit::Streamed(30)
        );
        assert_eq!(
            limits.for_path(&format!("/api/v1/projects/{id}/sync/commit")),
            BodyLimit::Streamed(50)
        );
        assert_eq!(
            limits.for_path(&format!("/api/v1/projects/{id}/sync/plan")),
            BodyLimit::Buffered(20)
        );
        assert_eq!(
            limits.for_path(&format!("/api/v1/projects/{id}/import")),
            BodyLimit::Buffered(10)
        );
        assert_eq!(
            limits.for_path(&format!("/api/v1/projects/{id}/files/sync")),
            BodyLimit::Buffered(10)
        );
        assert_eq!(
            limits.for_path("/api/v1/auth/login"),
            BodyLimit::Buffered(10)
        );
    }
}
