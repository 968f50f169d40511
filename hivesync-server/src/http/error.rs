//! The standard error body, `{"code", "message", "details"}`, and the conversions that make every
//! failure — ours, poem's, poem-openapi's — answer in it.

use std::collections::BTreeMap;

use hivesync_core::{ApiErrorCode, Error, ErrorKind};
use poem::Response;
use poem::http::StatusCode;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code in UPPER_SNAKE case (`VALIDATION_ERROR`, `NOT_FOUND`, ...).
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Structured context: the offending field, the limit that was exceeded, ...
    pub details: BTreeMap<String, serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ErrorBody {
            code: code.to_owned(),
            message: message.into(),
            details: BTreeMap::new(),
        }
    }

    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }
}

/// Every error an endpoint can answer with, one variant per status so the spec documents each.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The request is malformed or breaks a validation rule.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// Missing, invalid or expired credentials.
    #[oai(status = 401)]
    Unauthorized(Json<ErrorBody>),
    /// The caller may not do this.
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource, or one the caller may not know about.
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request conflicts with the current state.
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// The request is well-formed but its content cannot be processed (an unsupported language,
    /// a binary file); `details` says what is supported.
    #[oai(status = 422)]
    Unprocessable(Json<ErrorBody>),
    /// The request body stopped arriving before it was complete.
    #[oai(status = 408)]
    RequestTimeout(Json<ErrorBody>),
    /// The request body is larger than allowed.
    #[oai(status = 413)]
    PayloadTooLarge(Json<ErrorBody>),
    /// The request body's `Content-Type` is missing or not one this operation takes.
    #[oai(status = 415)]
    UnsupportedMediaType(Json<ErrorBody>),
    /// Too many requests; retry after the given number of seconds.
    #[oai(status = 429)]
    RateLimited(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
    /// An unexpected failure.
    #[oai(status = 500)]
    Internal(Json<ErrorBody>),
    /// A backend (database, object store) is unavailable; retrying later may help.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>, #[oai(header = "Retry-After")] u64),
}

impl ApiError {
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound(Json(ErrorBody::new(
            ApiErrorCode::NotFound.as_str(),
            message,
        )))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden(Json(ErrorBody::new(
            ApiErrorCode::Forbidden.as_str(),
            message,
        )))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::Unauthorized(Json(ErrorBody::new(
            ApiErrorCode::Unauthorized.as_str(),
            message,
        )))
    }

    pub fn body(&self) -> &ErrorBody {
        match self {
            ApiError::BadRequest(b)
            | ApiError::Unauthorized(b)
            | ApiError::Forbidden(b)
            | ApiError::NotFound(b)
            | ApiError::Conflict(b)
            | ApiError::Unprocessable(b)
            | ApiError::RequestTimeout(b)
            | ApiError::PayloadTooLarge(b)
            | ApiError::UnsupportedMediaType(b)
            | ApiError::RateLimited(b, _)
            | ApiError::Internal(b)
            | ApiError::Unavailable(b, _) => &b.0,
        }
    }
}

/// What a `503` suggests waiting: a backend that is down (a full disk, a database restarting)
/// is rarely back sooner, and clients that retry at once only add load.
const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 5;

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let kind = err.kind();
        let code = err.code().as_str();
        match kind {
            // Server-side failures: the caller gets a generic message; the details go to the log,
            // inside the request's span so they carry its request id.
            ErrorKind::Internal | ErrorKind::Config | ErrorKind::Unsupported => {
                tracing::error!(error = ?err, "request failed");
                ApiError::Internal(Json(ErrorBody::new(code, "internal error")))
            }
            ErrorKind::Unavailable => {
                tracing::error!(error = ?err, "a backend is unavailable");
                ApiError::Unavailable(
                    Json(
                        ErrorBody::new(code, "a backend service is unavailable; try again shortly")
                            .with_detail("retry_after_seconds", UNAVAILABLE_RETRY_AFTER_SECONDS),
                    ),
                    UNAVAILABLE_RETRY_AFTER_SECONDS,
                )
            }
            _ => {
                let mut body = ErrorBody::new(code, err.message());
                for (key, value) in err.context() {
                    body.details.insert((*key).to_owned(), value.clone().into());
                }
                match kind {
                    ErrorKind::Validation => ApiError::BadRequest(Json(body)),
                    ErrorKind::Unauthorized | ErrorKind::TokenExpired | ErrorKind::TokenInvalid => {
                        ApiError::Unauthorized(Json(body))
                    }
                    ErrorKind::Forbidden => ApiError::Forbidden(Json(body)),
                    ErrorKind::NotFound => ApiError::NotFound(Json(body)),
                    ErrorKind::Conflict => ApiError::Conflict(Json(body)),
                    ErrorKind::PayloadTooLarge => ApiError::PayloadTooLarge(Json(body)),
                    ErrorKind::RateLimited => {
                        // Round up: "retry after 0 seconds" would invite an immediate retry.
                        let wait = err.retry_after().unwrap_or_default();
                        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                        let body = body.with_detail("retry_after_seconds", seconds.max(1));
                        ApiError::RateLimited(Json(body), seconds.max(1))
                    }
                    _ => ApiError::Internal(Json(body)),
                }
            }
        }
    }
}

/// The answer when a handler panics: a 500 in the standard shape. The panic itself is reported by
/// the panic hook and logged here inside the request's span, so it carries the request id.
pub fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorBody::new(ApiErrorCode::InternalError.as_str(), "internal error"),
    )
}

pub(crate) fn json_error(status: StatusCode, body: ErrorBody) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .body(
            serde_json::to_vec(&serde_json::json!({
                "code": body.code,
                "message": body.message,
                "details": body.details,
            }))
            .unwrap_or_default(),
        )
}

/// Turns any error that escaped an endpoint into a response in the standard shape. Errors that
/// already are responses (our [`ApiError`]) pass through untouched; poem's and poem-openapi's
/// (unparseable JSON, a wrong content type, an unknown route, a missing bearer token) are mapped
/// by status.
pub async fn standard_error_response(err: poem::Error) -> Response {
    if err.is_from_response() {
        return err.into_response();
    }
    let status = err.status();
    let (code, message) = match status.as_u16() {
        400 => (ApiErrorCode::ValidationError.as_str(), err.to_string()),
        401 => (
            ApiErrorCode::Unauthorized.as_str(),
            "missing or malformed bearer token".to_owned(),
        ),
        403 => (ApiErrorCode::Forbidden.as_str(), err.to_string()),
        404 => (ApiErrorCode::NotFound.as_str(), "no such route".to_owned()),
        405 => (
            ApiErrorCode::MethodNotAllowed.as_str(),
            "method not allowed on this route".to_owned(),
        ),
        411 | 415 => (ApiErrorCode::ValidationError.as_str(), err.to_string()),
        413 => (ApiErrorCode::PayloadTooLarge.as_str(), err.to_string()),
        429 => (ApiErrorCode::RateLimited.as_str(), err.to_string()),
        _ if status.is_server_error() => {
            tracing::error!(error = %err, status = status.as_u16(), "request failed");
            (
                ApiErrorCode::InternalError.as_str(),
                "internal error".to_owned(),
            )
        }
        _ => (ApiErrorCode::ValidationError.as_str(), err.to_string()),
    };
    let mut body = ErrorBody::new(code, message);
    // poem-openapi names what failed inside its message (`field `email` verification failed`,
    // `failed to parse parameter `limit``): as `details.field`, like our own validation errors.
    if status == StatusCode::BAD_REQUEST
        && let Some(field) = named_field(&body.message)
    {
        body = body.with_detail("field", field);
    }
    json_error(status, body)
}

/// The field or parameter a poem-openapi parse error names.
fn named_field(message: &str) -> Option<String> {
    ["field `", "parameter `"].iter().find_map(|marker| {
        let start = message.find(marker)? + marker.len();
        let length = message[start..].find('`')?;
        Some(message[start..start + length].to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn client_errors_keep_message_and_context() {
        let err = Error::validation("name must not be empty").with_context("field", "name");
        let api = ApiError::from(err);
        assert!(matches!(api, ApiError::BadRequest(_)));
        let body = api.body();
        assert_eq!(body.code, "VALIDATION_ERROR");
        assert_eq!(body.message, "name must not be empty");
        assert_eq!(body.details["field"], "name");
    }

    #[test]
    fn server_errors_hide_their_cause() {
        let err = Error::internal("disk on fire").with_context("path", "/secret/place");
        let api = ApiError::from(err);
        assert!(matches!(api, ApiError::Internal(_)));
        assert_eq!(api.body().message, "internal error");
        assert!(api.body().details.is_empty());
        let api = ApiError::from(Error::unavailable("pg down"));
        assert!(matches!(
            api,
            ApiError::Unavailable(_, UNAVAILABLE_RETRY_AFTER_SECONDS)
        ));
        assert_eq!(api.body().code, "UNAVAILABLE");
        assert!(!api.body().message.contains("pg down"));
        assert_eq!(
            api.body().details["retry_after_seconds"],
            UNAVAILABLE_RETRY_AFTER_SECONDS
        );
    }

    #[test]
    fn rate_limits_round_retry_after_up() {
        let api = ApiError::from(Error::rate_limited(Duration::from_millis(1200)));
        let ApiError::RateLimited(body, seconds) = api else {
            panic!("expected 429");
        };
        assert_eq!(seconds, 2);
        assert_eq!(body.0.details["retry_after_seconds"], 2);
        let ApiError::RateLimited(_, seconds) = ApiError::from(Error::rate_limited(Duration::ZERO))
        else {
            panic!("expected 429");
        };
        assert_eq!(seconds, 1);
    }

    #[test]
    fn parse_errors_name_their_field() {
        assert_eq!(
            named_field("parse request payload error: failed to parse \"X\": field `email` verification failed. pattern(...)").as_deref(),
            Some("email")
        );
        assert_eq!(
            named_field("failed to parse parameter `limit`: verification failed").as_deref(),
            Some("limit")
        );
        assert_eq!(named_field("something else"), None);
    }

    #[test]
    fn token_errors_are_401_with_their_own_codes() {
        let api = ApiError::from(Error::new(ErrorKind::TokenExpired, "expired"));
        assert!(matches!(api, ApiError::Unauthorized(_)));
        assert_eq!(api.body().code, "TOKEN_EXPIRED");
    }
}
