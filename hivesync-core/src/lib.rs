//! HiveSync's core: the domain, errors, configuration, preview tokens, authentication, and the
//! ports (traits) the other crates program against, with their embedded adapters.
//!
//! # Layout
//!
//! - [`error`]: the [`Error`] every API returns (kind, retryability, context) and the standard
//!   API error codes.
//! - [`domain`]: ids, users, projects, members, jobs, notifications; validation of user input.
//! - [`config`]: configuration from the environment, with the spec's variable names.
//! - [`secret`]: secrets that cannot leak through `Debug`; embedded-mode secret files.
//! - [`preview_token`]: stateless, HMAC-signed preview tokens with key rotation.
//! - [`auth`]: argon2id password hashing and HS256 access tokens.
//! - [`clock`]: time as a dependency, so schedules can be tested without waiting.
//! - [`ports`]: `Store`, `ObjectStore`, `RateLimiter`, `JobQueue`, `WorkerRegistry`, `Locks`,
//!   `Scaler`, each with a `# Behavior` contract.
//! - [`adapters`]: SQLite and PostgreSQL stores, filesystem and S3 object stores, the in-process
//!   rate limiter, and the functions that pick adapters from configuration.
//! - `repo` (feature `git`): one git repository per project; syncs from archives and
//!   manifests, imports, browsing.
//! - `testkit` (feature `testkit`): one conformance suite per port, run against every adapter.
//!
//! # Features
//!
//! - `postgres`: the PostgreSQL `Store`.
//! - `s3`: the S3-compatible `ObjectStore`.
//! - `git`: project repositories (gix, tar, zip).
//! - `testkit`: the conformance suites.

pub mod adapters;
pub mod auth;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod config;
pub mod domain;
pub mod error;
pub mod job_cache;
pub mod ports;
pub mod preview_files;
pub mod preview_token;
#[cfg(feature = "git")]
pub mod repo;
pub mod secret;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use error::{ApiErrorCode, Error, ErrorKind, Result};
