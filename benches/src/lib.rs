//! Shared helpers for the benchmarks: where criterion keeps its results, and reading an estimate
//! back so a bench can print a ratio against the baseline it measured in the same run.

use std::path::PathBuf;

/// Criterion's output directory: `$CARGO_TARGET_DIR/criterion`, or `target/criterion` at the
/// workspace root.
pub fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// The mean time, in nanoseconds, that criterion measured for `group/function` in this run.
pub fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(function)
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["mean"]["point_estimate"].as_f64()
}

/// Prints `what: <figure> (<ratio>x <baseline name>)`, and returns the ratio.
pub fn print_ratio(what: &str, group: &str, function: &str, baseline: &str) -> Option<f64> {
    let figure = mean_ns(group, function)?;
    let base = mean_ns(group, baseline)?;
    let ratio = figure / base;
    println!(
        "RESULT {what}: {} per op, {ratio:.2}x {baseline} ({} per op)",
        format_ns(figure),
        format_ns(base)
    );
    Some(ratio)
}

/// Formats nanoseconds with a sensible unit.
pub fn format_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}
