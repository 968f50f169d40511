//! The HiveSync server: the `/api/v1` REST service (poem-openapi), and the `hivesync` command.
//!
//! # Layout
//!
//! - [`state`]: [`state::AppState`], the adapters and services shared by every request.
//! - [`http`]: routes, the standard error shape, authentication, middleware, the OpenAPI spec.
//! - [`metrics`]: Prometheus names, the recorder, and gauges refreshed at each scrape.
//! - [`runtime`]: background work: workers, cleanup schedule, reconciler, autoscaler.
//! - [`cli`]: the `hivesync` command line (`serve`, `migrate`, workers, admin, …).
//! - [`client`]: its client commands (`login`, `sync`), which talk to a server over HTTP.
//! - [`telemetry`]: logging setup.

pub mod ai_client;
pub mod cli;
pub mod client;
pub mod http;
pub mod metrics;
pub mod preview_client;
pub mod qr;
pub mod runtime;
pub mod state;
pub mod telemetry;
