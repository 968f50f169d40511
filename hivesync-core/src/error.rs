//! The error every HiveSync API returns.
//!
//! An [`Error`] carries what a caller needs to act on it: a [`ErrorKind`] (what went wrong, which
//! maps to an HTTP status and an [`ApiErrorCode`]), whether retrying can help, a message meant for
//! people, context pairs meant for `details`, and the underlying cause for logs. Adapters keep their
//! own error types private and convert at the boundary, so callers never match on `sqlx` or
//! `aws-sdk-s3` errors.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Shorthand used across the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, in categories a caller can branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is malformed or breaks a rule (`VALIDATION_ERROR`).
    Validation,
    /// No credentials, or credentials that do not prove who is asking (`UNAUTHORIZED`).
    Unauthorized,
    /// The caller is known but may not do this (`FORBIDDEN`).
    Forbidden,
    /// The thing does not exist, or the caller may not know that it does (`NOT_FOUND`).
    NotFound,
    /// The request conflicts with the current state: a duplicate, a stale version, the last owner
    /// (`CONFLICT`).
    Conflict,
    /// Too many requests; [`Error::retry_after`] says when to come back (`RATE_LIMITED`).
    RateLimited,
    /// A preview token whose signature is valid but whose time is up (`TOKEN_EXPIRED`).
    TokenExpired,
    /// A token that is malformed, tampered with, signed by an unknown key or for something else
    /// (`TOKEN_INVALID`).
    TokenInvalid,
    /// The input is bigger than a configured limit (`PAYLOAD_TOO_LARGE`).
    PayloadTooLarge,
    /// A backend (database, object store, queue) could not be reached or answered with a failure
    /// that is not the caller's fault (`INTERNAL_ERROR`, HTTP 503).
    Unavailable,
    /// The backend cannot do this at all (for example presigned URLs on the filesystem store).
    Unsupported,
    /// Configuration is missing or invalid; raised at start-up.
    Config,
    /// A bug or an unexpected state (`INTERNAL_ERROR`).
    Internal,
}

impl ErrorKind {
    /// The standard API error code for this kind.
    pub fn code(self) -> ApiErrorCode {
        match self {
            ErrorKind::Validation => ApiErrorCode::ValidationError,
            ErrorKind::Unauthorized => ApiErrorCode::Unauthorized,
            ErrorKind::Forbidden => ApiErrorCode::Forbidden,
            ErrorKind::NotFound => ApiErrorCode::NotFound,
            ErrorKind::Conflict => ApiErrorCode::Conflict,
            ErrorKind::RateLimited => ApiErrorCode::RateLimited,
            ErrorKind::TokenExpired => ApiErrorCode::TokenExpired,
            ErrorKind::TokenInvalid => ApiErrorCode::TokenInvalid,
            ErrorKind::PayloadTooLarge => ApiErrorCode::PayloadTooLarge,
            ErrorKind::Unavailable => ApiErrorCode::Unavailable,
            ErrorKind::Unsupported | ErrorKind::Config | ErrorKind::Internal => {
                ApiErrorCode::InternalError
            }
        }
    }

    /// The HTTP status for this kind.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Validation => 400,
            ErrorKind::Unauthorized | ErrorKind::TokenExpired | ErrorKind::TokenInvalid => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Unavailable => 503,
            // Reaching an unsupported capability is a server-side mistake, not the caller's.
            ErrorKind::Unsupported | ErrorKind::Config | ErrorKind::Internal => 500,
        }
    }

    /// Whether the same request could succeed later without changing it.
    fn retryable_by_default(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::RateLimited)
    }
}

/// The standard `code` values of the REST API's error body (DESIGN.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiErrorCode {
    ValidationError,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    TokenExpired,
    TokenInvalid,
    PayloadTooLarge,
    PreviewTimeout,
    PreviewBuildFailed,
    MissingDependencies,
    InvalidProjectStructure,
    StorageUploadFailed,
    AiProviderUnavailable,
    /// A preview bundle needs another app runtime than the client has (React Native, Expo SDK,
    /// native modules, Hermes bytecode version).
    RuntimeMismatch,
    /// The route exists but not with this HTTP method.
    MethodNotAllowed,
    /// A backend (the database, its disk, the object store) cannot serve now; retry later.
    Unavailable,
    InternalError,
}

impl ApiErrorCode {
    /// Every code, for documentation and exhaustive tests.
    pub const ALL: [ApiErrorCode; 19] = [
        ApiErrorCode::ValidationError,
        ApiErrorCode::Unauthorized,
        ApiErrorCode::Forbidden,
        ApiErrorCode::NotFound,
        ApiErrorCode::Conflict,
        ApiErrorCode::RateLimited,
        ApiErrorCode::TokenExpired,
        ApiErrorCode::TokenInvalid,
        ApiErrorCode::PayloadTooLarge,
        ApiErrorCode::PreviewTimeout,
        ApiErrorCode::PreviewBuildFailed,
        ApiErrorCode::MissingDependencies,
        ApiErrorCode::InvalidProjectStructure,
        ApiErrorCode::StorageUploadFailed,
        ApiErrorCode::AiProviderUnavailable,
        ApiErrorCode::RuntimeMismatch,
        ApiErrorCode::MethodNotAllowed,
        ApiErrorCode::Unavailable,
        ApiErrorCode::InternalError,
    ];

    /// The wire form, `UPPER_SNAKE`.
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::ValidationError => "VALIDATION_ERROR",
            ApiErrorCode::Unauthorized => "UNAUTHORIZED",
            ApiErrorCode::Forbidden => "FORBIDDEN",
            ApiErrorCode::NotFound => "NOT_FOUND",
            ApiErrorCode::Conflict => "CONFLICT",
            ApiErrorCode::RateLimited => "RATE_LIMITED",
            ApiErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ApiErrorCode::TokenInvalid => "TOKEN_INVALID",
            ApiErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ApiErrorCode::PreviewTimeout => "PREVIEW_TIMEOUT",
            ApiErrorCode::PreviewBuildFailed => "PREVIEW_BUILD_FAILED",
            ApiErrorCode::MissingDependencies => "MISSING_DEPENDENCIES",
            ApiErrorCode::InvalidProjectStructure => "INVALID_PROJECT_STRUCTURE",
            ApiErrorCode::StorageUploadFailed => "STORAGE_UPLOAD_FAILED",
            ApiErrorCode::AiProviderUnavailable => "AI_PROVIDER_UNAVAILABLE",
            ApiErrorCode::RuntimeMismatch => "RUNTIME_MISMATCH",
            ApiErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ApiErrorCode::Unavailable => "UNAVAILABLE",
            ApiErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }
}

impl fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A HiveSync error: kind, retryability, message, context and cause.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    message: Cow<'static, str>,
    context: Vec<(&'static str, String)>,
    retry_after: Option<Duration>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with a message for people.
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            kind,
            retryable: kind.retryable_by_default(),
            message: message.into(),
            context: Vec::new(),
            retry_after: None,
            source: None,
        }
    }

    pub fn validation(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Validation, message)
    }

    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    pub fn unauthorized(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unauthorized, message)
    }

    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A rate-limit refusal that tells the caller when to retry.
    pub fn rate_limited(retry_after: Duration) -> Self {
        let mut err = Self::new(ErrorKind::RateLimited, "too many requests, slow down");
        err.retry_after = Some(retry_after);
        err
    }

    /// Attaches the underlying cause (kept for logs, never shown to API callers).
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Adds a context pair, shown to API callers in `details`. Never put secrets here.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        self.context.push((key, value.to_string()));
        self
    }

    /// Overrides whether a retry can help.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether sending the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn context(&self) -> &[(&'static str, String)] {
        &self.context
    }

    /// For [`ErrorKind::RateLimited`]: how long to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub fn code(&self) -> ApiErrorCode {
        self.kind.code()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("retryable", &self.retryable)
            .field("message", &self.message);
        if !self.context.is_empty() {
            d.field("context", &self.context);
        }
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        for (key, value) in &self.context {
            write!(f, ", {key}: {value}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::Conflict,
            std::io::ErrorKind::PermissionDenied => ErrorKind::Internal,
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                ErrorKind::Validation
            }
            _ => ErrorKind::Unavailable,
        };
        Error::new(kind, "I/O error").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_upper_snake_and_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ApiErrorCode::ALL {
            let s = code.as_str();
            assert!(s.chars().all(|c| c.is_ascii_uppercase() || c == '_'), "{s}");
            assert!(seen.insert(s), "duplicate code {s}");
        }
    }

    #[test]
    fn kinds_map_to_codes_and_statuses() {
        assert_eq!(ErrorKind::NotFound.code().as_str(), "NOT_FOUND");
        assert_eq!(ErrorKind::NotFound.http_status(), 404);
        assert_eq!(ErrorKind::TokenExpired.http_status(), 401);
        assert_eq!(ErrorKind::RateLimited.code(), ApiErrorCode::RateLimited);
        assert_eq!(ErrorKind::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorKind::Unavailable.http_status(), 503);
    }

    #[test]
    fn retryability_defaults_follow_the_kind() {
        assert!(Error::unavailable("db down").is_retryable());
        assert!(!Error::validation("bad").is_retryable());
        assert!(!Error::unavailable("x").with_retryable(false).is_retryable());
        let limited = Error::rate_limited(Duration::from_secs(3));
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn display_includes_context_and_source() {
        let io = std::io::Error::other("disk on fire");
        let err = Error::internal("write failed")
            .with_context("key", "a/b")
            .with_source(io);
        assert_eq!(err.to_string(), "write failed, key: a/b: disk on fire");
        assert!(std::error::Error::source(&err).is_some());
    }
}
