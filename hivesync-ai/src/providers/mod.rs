//! The providers of the chain, and the chain a configuration asks for.

use std::sync::Arc;

use hivesync_core::Result;
use hivesync_core::config::Config;
use hivesync_core::ports::AiProvider;

use crate::pipeline::Chain;

pub mod openai;
pub mod static_analysis;

/// The chain `config` describes, in the spec's order (§6.2): a local model when enabled, an
/// OpenAI-compatible endpoint when configured, the static analyser always last.
pub fn chain(config: &Config) -> Result<Chain> {
    let mut providers: Vec<Arc<dyn AiProvider>> = Vec::new();
    if let Some(openai) = &config.openai {
        providers.push(Arc::new(openai::OpenAiProvider::new(openai)?));
    }
    Ok(Chain::new(providers))
}
