//! The HTTP server loop: hyper, with the limits that keep a slow or greedy client from starving
//! the others (poem's own `Server` has none of them).
//!
//! - A request head must arrive within `HTTP_HEADER_TIMEOUT_SECONDS` (hyper's header read
//!   timeout, which also closes a keep-alive connection idle that long).
//! - A request body must keep coming: `HTTP_BODY_TIMEOUT_SECONDS` without a byte ends the request
//!   with `408` ([`Patient`]).
//! - One client address holds at most `HTTP_MAX_CONNECTIONS_PER_CLIENT` connections, and the
//!   server at most `HTTP_MAX_CONNECTIONS` (by default three quarters of the open-file limit,
//!   which startup raises to its hard limit); a connection past either is answered `429` or `503`
//!   and closed at once.
//! - hyper's own answers to requests it cannot parse (`400` for a malformed `Content-Length`,
//!   `414`, `431`) carry the standard error body ([`Connection`]).
//! - A response sent before its request's body was read says `Connection: close`, since the
//!   connection is then closed.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hivesync_core::ApiErrorCode;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use poem::endpoint::BoxEndpoint;
use poem::http::{HeaderValue, StatusCode, header};
use poem::{Addr, Endpoint, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What one server allows its clients (`HTTP_*` settings).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    /// `None`: no bound per address (behind a reverse proxy, every connection comes from it).
    pub max_connections_per_client: Option<usize>,
}

impl Limits {
    /// The limits `config` sets, with the open-file limit raised as far as it goes (the default
    /// `HTTP_MAX_CONNECTIONS` is three quarters of it).
    pub fn from_config(config: &hivesync_core::config::HttpConfig) -> Limits {
        let open_files = raise_open_file_limit();
        Limits {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            max_connections: config
                .max_connections
                .unwrap_or_else(|| (open_files.saturating_mul(3) / 4).max(16) as usize),
            max_connections_per_client: config.max_connections_per_client,
        }
    }
}

/// Serves `endpoint` on `listener` until `shutdown` resolves, then lets open requests finish for
/// up to `grace`.
pub async fn serve(
    listener: TcpListener,
    endpoint: BoxEndpoint<'static, Response>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> io::Result<()> {
    let local = listener.local_addr()?;
    let endpoint = Arc::new(endpoint);
    let open = Arc::new(OpenConnections::default());
    let stopping = CancellationToken::new();
    let tracker = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, most likely: wait a little rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let held = match open.admit(peer.ip(), &limits) {
            Ok(held) => held,
            Err(refusal) => {
                refuse(stream, refusal);
                continue;
            }
        };
        let endpoint = endpoint.clone();
        let stopping = stopping.clone();
        tracker.spawn(async move {
            serve_connection(stream, local, peer, endpoint, limits, stopping).await;
            drop(held);
        });
    }
    drop(listener);
    stopping.cancel();
    tracker.close();
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            open = tracker.len(),
            "connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// Why a connection was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Its address holds `HTTP_MAX_CONNECTIONS_PER_CLIENT` already.
    Client,
    /// The server holds `HTTP_MAX_CONNECTIONS` already.
    Server,
}

/// The connections open now, per client address.
#[derive(Debug, Default)]
struct OpenConnections {
    counts: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping it frees its place.
struct Held {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl OpenConnections {
    fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<Held, Refusal> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        if *total >= limits.max_connections {
            return Err(Refusal::Server);
        }
        let held = per_client.entry(ip).or_default();
        if limits
            .max_connections_per_client
            .is_some_and(|max| *held >= max)
        {
            return Err(Refusal::Client);
        }
        *held += 1;
        *total += 1;
        Ok(Held {
            open: self.clone(),
            ip,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().unwrap_or_else(|e| e.into_inner());
        let (total, per_client) = &mut *counts;
        *total -= 1;
        if let Some(held) = per_client.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                per_client.remove(&self.ip);
            }
        }
    }
}

/// A complete HTTP/1.1 response in the standard error shape, closing the connection.
fn error_bytes(status: StatusCode, code: ApiErrorCode, message: &str, extra: &str) -> Vec<u8> {
    let body =
        serde_json::json!({"code": code.as_str(), "message": message, "details": {}}).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes()
}

/// Answers a connection that was not admitted, without waiting for it, and closes it.
fn refuse(stream: TcpStream, refusal: Refusal) {
    let response = match refusal {
        Refusal::Client => error_bytes(
            StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::RateLimited,
            "too many open connections from this address",
            "retry-after: 1\r\n",
        ),
        Refusal::Server => error_bytes(
            StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::Unavailable,
            "the server is at its connection limit; try again shortly",
            "retry-after: 1\r\n",
        ),
    };
    metrics::counter!("http_connections_refused_total", "reason" => match refusal {
        Refusal::Client => "client",
        Refusal::Server => "server",
    })
    .increment(1);
    // The answer fits any socket buffer; a client that is not reading gets nothing, not a wait.
    let _ = stream.try_write(&response);
}

/// What the service and the connection's I/O know about each other.
#[derive(Debug, Default)]
struct Exchange {
    /// Requests handed to the endpoint.
    requests: AtomicU64,
    /// Response heads written (each write that starts one).
    heads: AtomicU64,
}

async fn serve_connection(
    stream: TcpStream,
    local: SocketAddr,
    peer: SocketAddr,
    endpoint: Arc<BoxEndpoint<'static, Response>>,
    limits: Limits,
    stopping: CancellationToken,
) {
    let exchange = Arc::new(Exchange::default());
    let service = {
        let exchange = exchange.clone();
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let endpoint = endpoint.clone();
            let exchange = exchange.clone();
            async move {
                exchange.requests.fetch_add(1, Ordering::SeqCst);
                let response = handle(&endpoint, request, local, peer, limits.body_timeout).await;
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        // A client may shut down its sending side once its request is sent and wait for the
        // answer; without this the answer to such a request could be dropped unwritten.
        .half_close(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let io = TokioIo::new(Connection::new(stream, exchange));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = stopping.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// Runs one request through the endpoint: its body under the stall timeout, and the answer
/// `408` when the body stalled, with `Connection: close` when the body was not read to its end.
async fn handle(
    endpoint: &BoxEndpoint<'static, Response>,
    request: hyper::Request<Incoming>,
    local: SocketAddr,
    peer: SocketAddr,
    body_timeout: Duration,
) -> hyper::Response<http_body_util::combinators::BoxBody<Bytes, io::Error>> {
    let (parts, incoming) = request.into_parts();
    let has_body = !incoming.is_end_stream();
    let watch = Arc::new(BodyWatch::default());
    let body = Patient::new(incoming, body_timeout, watch.clone());
    let parts = poem::RequestParts::from((
        parts,
        poem::web::LocalAddr(Addr::SocketAddr(local)),
        poem::web::RemoteAddr(Addr::SocketAddr(peer)),
        poem::http::uri::Scheme::HTTP,
    ));
    let request = poem::Request::from_parts(parts, poem::Body::from(body.boxed()));
    let mut response = endpoint.get_response(request).await;
    if watch.stalled.load(Ordering::SeqCst) {
        response = crate::http::error::json_error(
            StatusCode::REQUEST_TIMEOUT,
            crate::http::error::ErrorBody::new(
                ApiErrorCode::ValidationError.as_str(),
                format!(
                    "the request body stopped arriving (nothing for {} s)",
                    body_timeout.as_secs()
                ),
            ),
        );
    }
    if has_body && !watch.finished.load(Ordering::SeqCst) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response.into()
}

/// How far a request's body was read.
#[derive(Debug, Default)]
struct BodyWatch {
    finished: AtomicBool,
    stalled: AtomicBool,
}

/// A request body that fails when nothing of it arrives for `timeout`.
struct Patient {
    inner: Incoming,
    timeout: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    waiting: bool,
    watch: Arc<BodyWatch>,
}

impl Patient {
    fn new(inner: Incoming, timeout: Duration, watch: Arc<BodyWatch>) -> Self {
        if inner.is_end_stream() {
            watch.finished.store(true, Ordering::SeqCst);
        }
        Patient {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            waiting: false,
            watch,
        }
    }
}

impl HttpBody for Patient {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = false;
                if frame.is_none() {
                    this.watch.finished.store(true, Ordering::SeqCst);
                }
                Poll::Ready(frame.map(|f| f.map_err(io::Error::other)))
            }
            Poll::Pending => {
                if !this.waiting {
                    this.waiting = true;
                    let deadline = tokio::time::Instant::now() + this.timeout;
                    this.sleep.as_mut().reset(deadline);
                }
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.watch.stalled.store(true, Ordering::SeqCst);
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request body stopped arriving",
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection that gives hyper's automatic answers to unparseable requests the standard
/// error body: such an answer is a short, bodiless `400`/`414`/`431` head written when every
/// request handed to the endpoint already has its response head.
struct Connection {
    inner: TcpStream,
    exchange: Arc<Exchange>,
    /// The replacement being written, and how much of it is out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl Connection {
    fn new(inner: TcpStream, exchange: Arc<Exchange>) -> Self {
        Connection {
            inner,
            exchange,
            replacing: None,
        }
    }

    /// The standard answer for `head`, when it is one of hyper's automatic ones.
    fn replacement_for(&self, head: &[u8]) -> Option<Vec<u8>> {
        if !(head.starts_with(b"HTTP/1.1 ") || head.starts_with(b"HTTP/1.0 ")) {
            return None;
        }
        let heads = self.exchange.heads.fetch_add(1, Ordering::SeqCst) + 1;
        let answered_all = heads > self.exchange.requests.load(Ordering::SeqCst);
        let automatic = answered_all
            && head.len() < 512
            && head.ends_with(b"\r\n\r\n")
            && head
                .windows(19)
                .any(|w| w.eq_ignore_ascii_case(b"\ncontent-length: 0\r"));
        if !automatic {
            return None;
        }
        let status = std::str::from_utf8(&head[9..12])
            .ok()?
            .parse::<u16>()
            .ok()?;
        let message = match status {
            400 => {
                "the request is malformed (its request line or a header, such as Content-Length, cannot be parsed)"
            }
            414 => "the request's URL is too long",
            431 => "the request's headers are too many or too large",
            _ => return None,
        };
        Some(error_bytes(
            StatusCode::from_u16(status).ok()?,
            ApiErrorCode::ValidationError,
            message,
            "",
        ))
    }

    /// Writes what is left of the replacement; ready once all of it is out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some((bytes, written)) = &mut self.replacing {
            while *written < bytes.len() {
                match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => *written += n,
                    Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none()
            && let Some(replacement) = this.replacement_for(buf)
        {
            this.replacing = Some((replacement, 0));
        }
        if this.replacing.is_some() {
            // hyper's own bytes are dropped; what it wrote in their place goes out instead.
            return this.poll_replacement(cx).map_ok(|()| buf.len());
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let first = bufs.iter().find(|b| !b.is_empty());
        // hyper writes a head as one buffer, so an automatic answer (a head alone) is `first`.
        if this.replacing.is_none()
            && let Some(first) = first
            && let Some(replacement) = this.replacement_for(first)
        {
            this.replacing = Some((replacement, 0));
        }
        if this.replacing.is_some() {
            let total = bufs.iter().map(|b| b.len()).sum();
            return this.poll_replacement(cx).map_ok(|()| total);
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        std::task::ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// Raises this process's open-file limit to its hard limit, and returns it: each connection and
/// each build holds descriptors, and the usual soft limit of 1,024 is what a client exhausts.
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}
