//! The providers of the chain, and the chain a configuration asks for.

use std::sync::Arc;

use hivesync_core::config::Config;
#[cfg(feature = "local")]
use hivesync_core::config::LocalAiDevice;
use hivesync_core::ports::AiProvider;
use hivesync_core::{Error, ErrorKind, Result};

use crate::pipeline::Chain;

#[cfg(feature = "local")]
pub mod local;
pub mod openai;
pub mod static_analysis;

/// The process a chain runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFor {
    /// The API and CPU workers: the local model runs here unless `LOCAL_AI_DEVICE=gpu`, when
    /// inputs it takes are routed to GPU workers instead.
    Cpu,
    /// A GPU worker: the local model on CUDA, or on this CPU when `LOCAL_AI_CPU_FALLBACK` allows.
    Gpu,
}

/// The chain `config` describes for `place`, in the spec's order (§6.2): a local model when
/// enabled, an OpenAI-compatible endpoint when configured, the static analyser always last.
/// `Config` errors say why a configuration cannot run here (no local provider in this build, a
/// GPU worker without CUDA and no fallback, a model file that is not one).
pub fn chain(config: &Config, place: ChainFor) -> Result<Chain> {
    let mut providers: Vec<Arc<dyn AiProvider>> = Vec::new();
    let local = &config.local_ai;
    if place == ChainFor::Gpu && !local.enabled {
        return Err(Error::new(
            ErrorKind::Config,
            "a GPU worker runs the local model: set LOCAL_AI_ENABLED=true, LOCAL_AI_MODEL_PATH and LOCAL_AI_DEVICE=gpu",
        ));
    }
    let mut gpu_route = None;
    if local.enabled {
        let (provider, route) = local_provider(config, place)?;
        providers.push(provider);
        gpu_route = route;
    }
    if let Some(openai) = &config.openai {
        providers.push(Arc::new(openai::OpenAiProvider::new(openai)?));
    }
    let mut chain = Chain::new(providers);
    if place == ChainFor::Gpu {
        chain = chain.for_gpu_worker();
    }
    Ok(match gpu_route {
        Some(route) => chain.with_gpu_route(route),
        None => chain,
    })
}

/// The local provider for `place`, and the route to GPU workers when the API and CPU workers
/// send it there.
#[cfg(feature = "local")]
fn local_provider(
    config: &Config,
    place: ChainFor,
) -> Result<(Arc<dyn AiProvider>, Option<crate::pipeline::GpuRoute>)> {
    let local = &config.local_ai;
    let placement = local::placement(local, place)?;
    let provider = Arc::new(local::LocalProvider::new(local, placement)?);
    let route = (local.device == LocalAiDevice::Gpu && place == ChainFor::Cpu).then(|| {
        let router = provider.clone();
        Arc::new(move |input: &hivesync_core::ports::AiInput| router.eligible(input).is_ok())
            as crate::pipeline::GpuRoute
    });
    Ok((provider, route))
}

#[cfg(not(feature = "local"))]
fn local_provider(
    _config: &Config,
    _place: ChainFor,
) -> Result<(Arc<dyn AiProvider>, Option<crate::pipeline::GpuRoute>)> {
    Err(Error::new(
        ErrorKind::Config,
        "LOCAL_AI_ENABLED is true but this build has no local AI provider: build hivesync with `--features local-ai`",
    ))
}
