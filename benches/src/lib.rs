//! Shared helpers for the benchmarks: where criterion keeps its results, and reading an estimate
//! back so a bench can print a ratio against the baseline it measured in the same run.

pub mod in_process;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

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

/// A number from the environment, or `default`.
pub fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Writes `files` files shaped like a React Native project: 50 files per directory, 0.5–4 KiB
/// of source each, a few binary assets; all dated an hour ago, as a project at rest is.
pub fn generate_project(root: &Path, files: usize) {
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for i in 0..files {
        let (path, content) = if i % 100 == 99 {
            let bytes: Vec<u8> = (0..8192u32)
                .map(|b| (b.wrapping_mul(2_654_435_761) >> 13 ^ i as u32) as u8)
                .collect();
            (format!("assets/pack{}/image{i}.png", i / 1000), bytes)
        } else {
            let lines = 10 + (i * 7919) % 90;
            let mut text = format!("// module {i}\nimport React from 'react';\n");
            for line in 0..lines {
                text.push_str(&format!(
                    "export const value{line} = {};\n",
                    (i * 31 + line) % 977
                ));
            }
            (
                format!("src/feature{}/component{i}.js", i / 50),
                text.into_bytes(),
            )
        };
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        let file = std::fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(an_hour_ago).unwrap();
    }
    std::fs::write(root.join(".gitignore"), "node_modules/\n").unwrap();
}

/// The middle value.
pub fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Milliseconds with one decimal.
pub fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
