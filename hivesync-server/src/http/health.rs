//! `GET /health`: whether each component answers.
//!
//! Public, so that load balancers and orchestrators can probe it without credentials; it says only
//! up or down per component and how long the check took, never why (that goes to the log).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hivesync_core::ports::ObjectKey;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use crate::state::AppState;

/// A component that answers slower than this counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Tags)]
enum HealthTags {
    /// Service health.
    Operations,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ComponentStatus {
    Up,
    Down,
}

#[derive(Debug, Clone, Object)]
pub struct ComponentHealth {
    pub status: ComponentStatus,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum OverallStatus {
    /// Every component is up.
    Ok,
    /// At least one component is down.
    Degraded,
}

#[derive(Debug, Clone, Object)]
pub struct HealthReport {
    pub status: OverallStatus,
    pub version: String,
    /// Per component: `database`, `object_store`.
    pub components: BTreeMap<String, ComponentHealth>,
}

#[derive(ApiResponse)]
enum HealthResponse {
    /// Every component is up.
    #[oai(status = 200)]
    Ok(Json<HealthReport>),
    /// Some component is down.
    #[oai(status = 503)]
    Degraded(Json<HealthReport>),
}

#[derive(Debug)]
pub struct HealthApi {
    pub state: Arc<AppState>,
}

async fn check<F>(name: &str, probe: F) -> ComponentHealth
where
    F: Future<Output = hivesync_core::Result<()>>,
{
    let started = Instant::now();
    let outcome = tokio::time::timeout(CHECK_TIMEOUT, probe).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = match outcome {
        Ok(Ok(())) => ComponentStatus::Up,
        Ok(Err(err)) => {
            tracing::warn!(component = name, error = ?err, "health check failed");
            ComponentStatus::Down
        }
        Err(_) => {
            tracing::warn!(component = name, "health check timed out");
            ComponentStatus::Down
        }
    };
    ComponentHealth { status, latency_ms }
}

/// Checks every component; shared by the endpoint and `hivesync health`.
pub async fn health_report(state: &AppState) -> HealthReport {
    let probe_key = ObjectKey::new("health/probe").expect("a valid key");
    let (database, object_store) = tokio::join!(
        check("database", state.store.ping()),
        check("object_store", async {
            state.objects.head(&probe_key).await.map(|_| ())
        }),
    );
    let components = BTreeMap::from([
        ("database".to_owned(), database),
        ("object_store".to_owned(), object_store),
    ]);
    let status = if components.values().all(|c| c.status == ComponentStatus::Up) {
        OverallStatus::Ok
    } else {
        OverallStatus::Degraded
    };
    HealthReport {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        components,
    }
}

#[OpenApi(tag = "HealthTags::Operations")]
impl HealthApi {
    /// Health of each component
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        let report = health_report(&self.state).await;
        match report.status {
            OverallStatus::Ok => HealthResponse::Ok(Json(report)),
            OverallStatus::Degraded => HealthResponse::Degraded(Json(report)),
        }
    }
}
