//! The HiveSync server: the `/api/v1` REST service (poem-openapi), and the `hivesync` command.
//!
//! # Layout
//!
//! - [`state`]: [`state::AppState`], the adapters and services shared by every request.
//! - [`http`]: routes, the standard error shape, authentication, middleware, the OpenAPI spec.
//! - [`cli`]: the `hivesync` command line (`serve`, `migrate`).
//! - [`telemetry`]: logging setup.

pub mod cli;
pub mod http;
pub mod state;
pub mod telemetry;
