//! Running the bundler: `react-native bundle` (Metro) for bare React Native projects, `expo
//! export` for Expo ones (spec §7.6), from the dependency store's binaries.
//!
//! Metro's cache lives under `TMPDIR/metro-cache`; each build gets a `TMPDIR` inside the
//! project's Metro cache directory, whose name the caller derives from everything Metro's own key
//! misses (the Babel and Metro configs, the build environment, the dependencies, and where the
//! checkout is: see [`crate::slot`]), so a warm cache is fast and never stale. The dependencies are
//! a real `node_modules` inside the checkout ([`crate::deps::Restored::place`]), so the project's
//! own Metro config is used as it is and nothing the bundler writes names a server path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::deps::{Placement, Restored};
use crate::detect::ProjectKind;
use crate::log::BuildLog;
use crate::process::{Step, StepError};
use crate::runtime::version_in;
use crate::sandbox::Sandbox;
use crate::workspace::Layout;

pub use hivesync_core::domain::Platform;

/// What a bundler run produced, in `out`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundled {
    /// `metro` or `expo`.
    pub bundler: &'static str,
    /// `react-native@0.88.1 metro@0.87.1`, `expo@57.0.26 @expo/cli@57.0.27`.
    pub bundler_version: String,
    /// The JavaScript (or Hermes bytecode) bundle, relative to `out`.
    pub bundle: PathBuf,
}

/// Why a bundle was not made.
#[derive(Debug)]
pub enum BundleError {
    /// The bundler ran and failed (`PREVIEW_BUILD_FAILED`): a syntax error, a missing module.
    Failed(String),
    /// The deadline passed (`PREVIEW_TIMEOUT`) or the job was stopped.
    Interrupted(StepError),
    Io(std::io::Error),
}

impl std::fmt::Display for BundleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleError::Failed(why) => f.write_str(why),
            BundleError::Interrupted(err) => write!(f, "the bundler {err}"),
            BundleError::Io(err) => write!(f, "bundling: {err}"),
        }
    }
}

impl From<std::io::Error> for BundleError {
    fn from(err: std::io::Error) -> Self {
        BundleError::Io(err)
    }
}

/// One bundler run.
#[derive(Debug)]
pub struct BundleJob<'a> {
    pub kind: &'a ProjectKind,
    pub platform: Platform,
    /// The checkout, at its slot's fixed path.
    pub project: &'a Path,
    /// Where in the checkout the app and its dependencies are.
    pub layout: &'a Layout,
    pub deps: &'a Restored,
    /// The previous build's `node_modules` in this slot, if any, for [`Restored::place`].
    pub previous_node_modules: Option<&'a Path>,
    /// Where the output goes (created).
    pub out: &'a Path,
    /// This build's Metro cache directory (used as `TMPDIR`).
    pub metro_cache: &'a Path,
    /// Variables the project builds with (`EXPO_PUBLIC_*`), on top of the fixed ones.
    pub env: &'a BTreeMap<String, String>,
    /// How the bundler, which runs the project's code, is confined.
    pub sandbox: &'a Sandbox,
    /// Build as for a release: minified, and for Expo compiled to Hermes bytecode. Off (the
    /// default for previews), the bundle is unminified JavaScript: Hermes runs it as well, its
    /// stack traces are readable, and no step that redoes the whole bundle (minifying every
    /// module cold, hermesc on every build) slows each rebuild.
    pub optimize: bool,
}

/// `package@version` of each of `packages`, from the nearest of `node_modules` that has it.
fn versions(node_modules: &[PathBuf], packages: &[&str]) -> String {
    let found: Vec<String> = packages
        .iter()
        .filter_map(|p| version_in(node_modules, p).map(|v| format!("{p}@{v}")))
        .collect();
    if found.is_empty() {
        "unknown".to_owned()
    } else {
        found.join(" ")
    }
}

impl BundleJob<'_> {
    pub async fn run(
        &self,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<Bundled, BundleError> {
        std::fs::create_dir_all(self.out)?;
        let tmp = self.metro_cache.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        let install_root = self.layout.install_dir(self.project);
        let app_dir = self.layout.app_dir(self.project);
        let placement = self.deps.place(
            &install_root,
            self.previous_node_modules,
            self.sandbox.mounts(),
        )?;
        log.line(format_args!("node_modules: {placement:?}"));
        let program = |name: &str| {
            self.deps
                .program(&install_root, self.layout.app_in_install_root(), name)
        };
        let modules = self.deps.modules_for(self.layout.app_in_install_root());
        let (mut step, bundled) = match self.kind {
            ProjectKind::ReactNative { entry } => {
                std::fs::create_dir_all(self.out.join("assets"))?;
                let step = Step::new(program("react-native"), &app_dir)
                    .arg("bundle")
                    .args(["--platform", self.platform.as_str()])
                    .args(["--dev", "false"])
                    .args(["--entry-file", entry.as_str()])
                    .arg("--bundle-output")
                    .arg(self.out.join("main.jsbundle"))
                    .arg("--assets-dest")
                    .arg(self.out.join("assets"))
                    .args(["--minify", if self.optimize { "true" } else { "false" }]);
                let bundled = Bundled {
                    bundler: "metro",
                    bundler_version: versions(&modules, &["react-native", "metro"]),
                    bundle: PathBuf::from("main.jsbundle"),
                };
                (step, bundled)
            }
            ProjectKind::Expo => {
                let step = Step::new(program("expo"), &app_dir)
                    .arg("export")
                    .args(["--platform", self.platform.as_str()])
                    .arg("--output-dir")
                    .arg(self.out)
                    .env("EXPO_NO_TELEMETRY", "1")
                    .env("EXPO_NO_GIT_STATUS", "1");
                // hermesc recompiles the whole bundle on every build (about 3 s here), which no
                // cache can avoid; a preview does not need it.
                let step = if self.optimize {
                    step
                } else {
                    step.args(["--no-bytecode", "--no-minify"])
                };
                let bundled = Bundled {
                    bundler: "expo",
                    bundler_version: versions(&modules, &["expo", "@expo/cli"]),
                    bundle: PathBuf::new(),
                };
                (step, bundled)
            }
        };
        log.line(self.sandbox.describe());
        let read_only: Vec<(&Path, &Path)> = match &placement {
            Placement::Mount { mounts } => mounts
                .iter()
                .map(|(source, target)| (source.as_path(), target.as_path()))
                .collect(),
            _ => Vec::new(),
        };
        let (program, args) = self
            .sandbox
            .wrap(
                &step.program,
                &step.args,
                &app_dir,
                // The output's parent, not the output: `expo export` removes and recreates its
                // output directory, which a mount point would refuse (EBUSY).
                &[
                    self.project,
                    self.out.parent().unwrap_or(self.out),
                    self.metro_cache,
                ],
                &read_only,
            )
            .map_err(|reason| BundleError::Io(std::io::Error::other(reason)))?;
        step.program = program;
        step.args = args;
        let mut step = step
            .env("CI", "1")
            .env("NODE_ENV", "production")
            .env("TMPDIR", &tmp);
        for (key, value) in self.env {
            step = step.env(key, value);
        }
        log.line(format_args!(
            "bundling for {} with {} ({})",
            self.platform.as_str(),
            bundled.bundler,
            bundled.bundler_version
        ));
        let mark = log.mark();
        match step.run(log, deadline, stop).await {
            Ok(()) => {}
            Err(StepError::Failed(status)) => {
                return Err(BundleError::Failed(format!(
                    "{} failed ({status}): {}",
                    bundled.bundler,
                    first_error(&log.since(mark, 256 * 1024))
                )));
            }
            Err(StepError::Spawn(err)) => {
                return Err(BundleError::Failed(format!(
                    "{} could not be started: {err}",
                    bundled.bundler
                )));
            }
            Err(err) => return Err(BundleError::Interrupted(err)),
        }
        let bundle = match self.kind {
            ProjectKind::ReactNative { .. } => bundled.bundle.clone(),
            ProjectKind::Expo => find_expo_bundle(self.out, self.platform)?,
        };
        let size = std::fs::metadata(self.out.join(&bundle))
            .map(|m| m.len())
            .unwrap_or(0);
        if size == 0 {
            return Err(BundleError::Failed(format!(
                "{} produced no bundle",
                bundled.bundler
            )));
        }
        log.line(format_args!("bundle {} ({size} bytes)", bundle.display()));
        Ok(Bundled { bundle, ..bundled })
    }
}

/// Expo writes `_expo/static/js/<platform>/<entry>-<hash>.(hbc|js)`.
fn find_expo_bundle(out: &Path, platform: Platform) -> Result<PathBuf, BundleError> {
    let dir = Path::new("_expo/static/js").join(platform.as_str());
    let entries = std::fs::read_dir(out.join(&dir))
        .map_err(|_| BundleError::Failed("expo export wrote no bundle".to_owned()))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".hbc") || name.ends_with(".js") {
            return Ok(dir.join(name.as_ref()));
        }
    }
    Err(BundleError::Failed(
        "expo export wrote no bundle".to_owned(),
    ))
}

/// The most telling lines of a failed bundler's output: error messages, not stack frames.
fn first_error(tail: &str) -> String {
    let plain = strip_ansi(tail);
    let lines: Vec<&str> = plain
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("at ") && !l.starts_with('['))
        .filter(|l| {
            l.contains("SyntaxError")
                || l.contains("Unable to resolve")
                || l.contains("Error:")
                || l.to_ascii_lowercase().starts_with("error")
        })
        .take(5)
        .collect();
    if lines.is_empty() {
        "see the build log".to_owned()
    } else {
        lines.join("\n")
    }
}

/// Removes terminal colour sequences (`ESC [ … letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_are_stripped() {
        assert_eq!(
            first_error("\u{1b}[31m\u{1b}[1merror\u{1b}[22m\u{1b}[39m Unable to resolve module x"),
            "error Unable to resolve module x"
        );
    }

    #[test]
    fn errors_are_picked_out_of_stack_traces() {
        let log = "[   1.000s] $ react-native bundle\n\
                   error SyntaxError: /p/src/App.js: Unexpected token (1:29)\n\
                   \u{20}   at constructor (/store/node_modules/@babel/parser/lib/index.js:1:1)\n\
                   \u{20}   at stopHiding (/store/node_modules/@babel/core/lib/errors/x.js:47:12)\n";
        assert_eq!(
            first_error(log),
            "error SyntaxError: /p/src/App.js: Unexpected token (1:29)"
        );
        assert_eq!(first_error("nothing useful"), "see the build log");
    }
}
