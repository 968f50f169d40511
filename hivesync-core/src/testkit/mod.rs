//! Conformance suites, one per port, and helpers for tests that need real services.
//!
//! Each suite is a public async function taking the port as a trait object; it runs every point of
//! the port's `# Behavior` list and panics with a message naming the point that failed. Adapters
//! in this crate run them in `tests/`; adapters elsewhere (the Redis rate limiter, for one) call
//! the same functions.
//!
//! Tests that need an external service read its URL from the environment. Without it they print
//! why they skip and pass — unless `HIVESYNC_REQUIRE_SERVICES=1` (set by `.ci/run`), in which case a
//! missing service fails the test.

pub mod ai;
pub mod coordination;
#[cfg(feature = "git")]
pub mod examples;
pub mod object_store;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod queue;
pub mod rate_limiter;
pub mod store;

/// Whether tests must fail instead of skipping when a service is missing.
pub fn services_required() -> bool {
    std::env::var("HIVESYNC_REQUIRE_SERVICES").is_ok_and(|v| v == "1")
}

/// The value of `var` for a test that needs a service. When it is unset, prints the reason and
/// returns `None` (the caller returns early), or panics under `HIVESYNC_REQUIRE_SERVICES=1`.
pub fn service_env(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(value) if !value.trim().is_empty() => Some(value),
        _ if services_required() => {
            panic!(
                "{test}: {var} is not set, and HIVESYNC_REQUIRE_SERVICES=1 requires this service"
            )
        }
        _ => {
            eprintln!(
                "skipping {test}: {var} is not set (set it, or HIVESYNC_REQUIRE_SERVICES=1 to fail instead)"
            );
            None
        }
    }
}

/// A short random string for namespacing one test run's data (key prefixes, e-mail addresses).
pub fn unique_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}
