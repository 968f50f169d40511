//! The HTTP client library of a HiveSync server (feature `client`): what the `hivesync` CLI, the
//! Node and Python bindings and the editor extensions embed. It talks to a server over HTTP only,
//! never reads a server's configuration or `DATA_DIR`, and pulls in no server code.
//!
//! - [`Client`]: a server's base URL and a token; requests, with refusals turned into [`Error`]s
//!   that carry the server's code and message.
//! - [`credentials`]: what `hivesync login` stores, and where.
//! - [`sync`]: delta sync of a local folder, with a stat cache so unchanged files are not hashed.
//!
//! The preview requests (build, follow, download) live with the types they read, in
//! `hivesync_preview::client`, on top of this [`Client`].

pub mod credentials;
pub mod sync;

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, ErrorKind, Result};

/// An error in what the caller asked of the client (a bad URL, a missing login).
pub fn usage_error(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Validation, message.into())
}

/// A connection to a server, with the token its requests carry.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `<server>/api/v1`.
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client of the server at `url` (`http://` or `https://`).
    pub fn new(url: &str, token: Option<String>) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|_| {
            usage_error(format!("{url:?} is not a URL (e.g. http://127.0.0.1:8080)"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(usage_error("the server URL must be http:// or https://"));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(15))
            .timeout(Duration::from_secs(30 * 60))
            .build()
            .map_err(|err| {
                Error::internal("cannot build an HTTP client").with_context("cause", err)
            })?;
        Ok(Client {
            http,
            base: format!("{}/api/v1", url.trim_end_matches('/')),
            token,
        })
    }

    /// The client for a command: `url` and `token` as given (flags, environment), else what
    /// `hivesync login` stored ([`credentials::load`]) for that server.
    pub fn resolve(url: Option<&str>, token: Option<&str>) -> Result<Self> {
        let stored = credentials::load()?;
        let url = url
            .map(str::to_owned)
            .or_else(|| stored.as_ref().map(|c| c.url.clone()))
            .ok_or_else(|| {
                usage_error("no server: pass --url, set HIVESYNC_URL, or run hivesync login")
            })?;
        let token = token
            .map(str::to_owned)
            .or_else(|| {
                stored
                    .filter(|c| c.url.trim_end_matches('/') == url.trim_end_matches('/'))
                    .map(|c| c.token)
            })
            .ok_or_else(|| {
                usage_error(
                    "not logged in: pass --token, set HIVESYNC_TOKEN, or run hivesync login",
                )
            })?;
        Client::new(&url, Some(token))
    }

    /// The same server with another token (a preview token, say).
    pub fn with_token(&self, token: impl Into<String>) -> Self {
        Client {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    /// `<server>/api/v1`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` under the API (`/preview/status/…`), with the token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request`, whatever the answer's status.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        request
            .send()
            .await
            .map_err(|err| Error::unavailable(format!("cannot reach the server: {err}")))
    }

    /// Sends `request` and reads a successful answer as `T`; a refusal becomes an error with the
    /// server's code, message and details.
    pub async fn json<T: DeserializeOwned>(&self, request: reqwest::RequestBuilder) -> Result<T> {
        let bytes = self.successful_body(request).await?;
        serde_json::from_slice(&bytes)
            .map_err(|err| Error::internal(format!("the server's answer does not read: {err}")))
    }

    /// The body of a successful answer to `request`; a refusal becomes an error with the
    /// server's code, message and details.
    async fn successful_body(&self, request: reqwest::RequestBuilder) -> Result<bytes::Bytes> {
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| Error::unavailable(format!("cannot read the answer: {err}")))?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &bytes));
        }
        Ok(bytes)
    }

    /// `GET path`, read as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.json(self.request(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON `body`, read as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        self.json(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    /// `GET path` as text (a build log).
    pub async fn text(&self, path: &str) -> Result<String> {
        let bytes = self
            .successful_body(self.request(reqwest::Method::GET, path))
            .await?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Logs in with an email and password: the access token.
    pub async fn login(&self, email: &str, password: &str) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: String,
        }
        let answer: Answer = self
            .post(
                "/auth/login",
                &serde_json::json!({"email": email, "password": password}),
            )
            .await?;
        Ok(answer.access_token)
    }

    /// The caller's profile (`GET /users/me`).
    pub async fn me(&self) -> Result<Me> {
        self.get("/users/me").await
    }
}

/// Who a token belongs to.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Me {
    pub id: uuid::Uuid,
    pub email: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub is_admin: bool,
}

/// The server's error body (`{code, message, details}`).
#[derive(Debug, Default, serde::Deserialize)]
struct Refusal {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    details: serde_json::Map<String, serde_json::Value>,
}

/// The error for a refused request, in the server's words.
pub fn refusal(status: u16, body: &[u8]) -> Error {
    let body: Refusal = serde_json::from_slice(body).unwrap_or_default();
    let code = body.code.as_deref().unwrap_or("ERROR");
    let message = body
        .message
        .as_deref()
        .unwrap_or("the server refused the request");
    let details = if body.details.is_empty() {
        String::new()
    } else {
        format!(" {}", serde_json::Value::Object(body.details))
    };
    let kind = match status {
        401 => ErrorKind::Unauthorized,
        403 => ErrorKind::Forbidden,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        413 => ErrorKind::PayloadTooLarge,
        500..=599 => ErrorKind::Unavailable,
        _ => ErrorKind::Validation,
    };
    Error::new(kind, format!("{code}: {message}{details}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_the_servers_code_message_and_details() {
        let err = refusal(
            409,
            br#"{"code":"CONFLICT","message":"moved","details":{"head":"abc"}}"#,
        );
        assert_eq!(err.kind(), ErrorKind::Conflict);
        assert_eq!(err.message(), r#"CONFLICT: moved {"head":"abc"}"#);
        let err = refusal(502, b"<html>bad gateway</html>");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(err.message().starts_with("ERROR: "));
    }

    #[test]
    fn only_http_urls_make_a_client() {
        assert!(Client::new("http://127.0.0.1:8080/", None).is_ok());
        assert_eq!(
            Client::new("https://h.example/", None).unwrap().base(),
            "https://h.example/api/v1"
        );
        for bad in ["ftp://h", "not a url", ""] {
            assert!(Client::new(bad, None).is_err(), "{bad}");
        }
    }
}
