//! The providers of the chain.

pub mod static_analysis;
