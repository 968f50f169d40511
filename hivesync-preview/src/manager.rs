//! Which package manager installs a project's dependencies, from its lockfile, as the developer's
//! own machine would: `package-lock.json` (or `npm-shrinkwrap.json`) with npm, `yarn.lock` with
//! yarn classic (1.x) or yarn berry (a lockfile with `__metadata`, or `packageManager` naming
//! yarn 2+), `pnpm-lock.yaml` with pnpm. `package.json`'s `packageManager` picks the tool when
//! several lockfiles are present, and its version.
//!
//! yarn and pnpm are themselves packages on the npm registry (`yarn`, `@yarnpkg/cli-dist`,
//! `pnpm`): [`Tools`] installs the version asked for once, with npm and without install scripts,
//! into `DATA_DIR/cache/preview_tools/`, never from anywhere else (no corepack download, no
//! `yarnPath` release a project ships, which would run the project's code outside the sandbox).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::install_network::{InstallError, InstallNetwork};
use crate::log::BuildLog;
use crate::process::{Step, StepError};

/// The yarn classic used when `packageManager` does not say.
pub const DEFAULT_YARN_CLASSIC: &str = "1.22.22";
/// The yarn berry used for a berry lockfile when `packageManager` does not say.
pub const DEFAULT_YARN_BERRY: &str = "4.18.1";
/// The pnpm used when `packageManager` does not say.
pub const DEFAULT_PNPM: &str = "10.34.9";

/// A package manager and the version that runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Manager {
    Npm,
    YarnClassic(String),
    YarnBerry(String),
    Pnpm(String),
}

impl Manager {
    /// `npm`, `yarn 1.22.22`, `pnpm 10.34.9`.
    pub fn describe(&self) -> String {
        match self {
            Manager::Npm => "npm".to_owned(),
            Manager::YarnClassic(v) | Manager::YarnBerry(v) => format!("yarn {v}"),
            Manager::Pnpm(v) => format!("pnpm {v}"),
        }
    }

    /// The npm package that is this tool, and its binary's name.
    fn package(&self) -> Option<(&'static str, &str, &'static str)> {
        match self {
            Manager::Npm => None,
            Manager::YarnClassic(v) => Some(("yarn", v, "yarn")),
            Manager::YarnBerry(v) => Some(("@yarnpkg/cli-dist", v, "yarn")),
            Manager::Pnpm(v) => Some(("pnpm", v, "pnpm")),
        }
    }
}

/// How a project's dependencies are installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub manager: Manager,
    /// The lockfile installed from (`None`: there is none, and the newest versions that
    /// `package.json` allows are installed).
    pub lockfile: Option<&'static str>,
}

const NPM_LOCKFILES: &[&str] = &["npm-shrinkwrap.json", "package-lock.json"];

/// Only plain versions reach a command line (a `packageManager` is the project's input).
fn valid_version(version: &str) -> bool {
    let (core, pre) = version.split_once('-').unwrap_or((version, ""));
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
        && pre.len() <= 32
        && pre
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}

/// `yarn@1.22.22+sha512.…` → (`yarn`, `1.22.22`).
fn package_manager_field(package: &serde_json::Value) -> Result<Option<(String, String)>, String> {
    let Some(field) = package.get("packageManager") else {
        return Ok(None);
    };
    let text = field
        .as_str()
        .ok_or("package.json's packageManager is not a string")?;
    let (name, version) = text
        .split_once('@')
        .ok_or_else(|| format!("package.json's packageManager ({text:?}) is not name@version"))?;
    let version = version.split_once('+').map_or(version, |(v, _)| v);
    if !valid_version(version) {
        return Err(format!(
            "package.json's packageManager ({text:?}) does not name an exact version"
        ));
    }
    Ok(Some((name.to_owned(), version.to_owned())))
}

fn is_file(dir: &Path, name: &str) -> bool {
    std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_file())
}

/// A `yarn.lock` written by yarn 2 or later (YAML with a `__metadata` entry).
fn is_berry_lockfile(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("yarn.lock"))
        .is_ok_and(|text| text.lines().any(|l| l.starts_with("__metadata:")))
}

/// Works out how the project in `dir` installs. `Err` is a message for `MISSING_DEPENDENCIES`.
pub fn plan(dir: &Path, package: &serde_json::Value) -> Result<Plan, String> {
    let declared = package_manager_field(package)?;
    let npm_lock = NPM_LOCKFILES.iter().copied().find(|l| is_file(dir, l));
    let yarn_lock = is_file(dir, "yarn.lock").then_some("yarn.lock");
    let pnpm_lock = is_file(dir, "pnpm-lock.yaml").then_some("pnpm-lock.yaml");
    let yarn = |version: Option<&str>| {
        let berry = version.map_or_else(|| is_berry_lockfile(dir), |v| !v.starts_with("1."));
        let version = version.map(str::to_owned);
        if berry {
            Manager::YarnBerry(version.unwrap_or_else(|| DEFAULT_YARN_BERRY.to_owned()))
        } else {
            Manager::YarnClassic(version.unwrap_or_else(|| DEFAULT_YARN_CLASSIC.to_owned()))
        }
    };
    let pnpm = |version: Option<&str>| {
        Manager::Pnpm(version.map_or_else(|| DEFAULT_PNPM.to_owned(), str::to_owned))
    };
    Ok(match declared {
        Some((name, version)) => match name.as_str() {
            "npm" => Plan {
                manager: Manager::Npm,
                lockfile: npm_lock,
            },
            "yarn" => Plan {
                manager: yarn(Some(&version)),
                lockfile: yarn_lock,
            },
            "pnpm" => Plan {
                manager: pnpm(Some(&version)),
                lockfile: pnpm_lock,
            },
            other => {
                return Err(format!(
                    "package.json's packageManager names {other:?}: previews install with npm, yarn or pnpm"
                ));
            }
        },
        None => {
            if npm_lock.is_some() || (yarn_lock.is_none() && pnpm_lock.is_none()) {
                Plan {
                    manager: Manager::Npm,
                    lockfile: npm_lock,
                }
            } else if yarn_lock.is_some() {
                Plan {
                    manager: yarn(None),
                    lockfile: yarn_lock,
                }
            } else {
                Plan {
                    manager: pnpm(None),
                    lockfile: pnpm_lock,
                }
            }
        }
    })
}

/// The package managers other than npm, installed from the npm registry on first use.
#[derive(Debug)]
pub struct Tools {
    root: PathBuf,
    npm: OsString,
}

/// Why a tool could not be had.
#[derive(Debug)]
pub enum ToolError {
    /// npm could not install it; the message says why.
    Failed(String),
    Interrupted(StepError),
    Io(std::io::Error),
}

impl From<std::io::Error> for ToolError {
    fn from(err: std::io::Error) -> Self {
        ToolError::Io(err)
    }
}

impl Tools {
    pub fn new(root: PathBuf, npm: impl Into<OsString>) -> Self {
        Tools {
            root,
            npm: npm.into(),
        }
    }

    /// Where the tools and their caches live.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a package manager keeps its downloads (created, and marked as in use: cleanup
    /// removes what was unused for `CACHE_RETENTION_SECONDS`).
    pub fn cache(&self, name: &str) -> std::io::Result<PathBuf> {
        let caches = self.root.join("caches");
        let dir = caches.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::File::open(&caches)?.set_modified(std::time::SystemTime::now())?;
        Ok(dir)
    }

    /// The program that runs `manager` (`npm` itself for npm), installing it on first use.
    /// Callers take turns per store key; two workers racing here both install and one rename wins.
    pub async fn program(
        &self,
        manager: &Manager,
        network: &InstallNetwork,
        log: &BuildLog,
        deadline: Instant,
        stop: &CancellationToken,
    ) -> Result<OsString, ToolError> {
        let Some((package, version, bin)) = manager.package() else {
            return Ok(self.npm.clone());
        };
        let dir = self
            .root
            .join(format!("{}@{version}", package.replace('/', "+")));
        let program = dir.join("node_modules/.bin").join(bin);
        if program.exists() {
            // Cleanup removes tools unused for CACHE_RETENTION_SECONDS: this one is in use.
            std::fs::File::open(&dir)?.set_modified(std::time::SystemTime::now())?;
            return Ok(program.into_os_string());
        }
        log.line(format_args!(
            "installing {package}@{version} from the npm registry"
        ));
        std::fs::create_dir_all(&self.root)?;
        let staging = self.root.join(format!(
            ".staging-{}-{}",
            package.replace('/', "+"),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir(&staging)?;
        std::fs::write(
            staging.join("package.json"),
            r#"{"name": "hivesync-preview-tool", "private": true}"#,
        )?;
        let step = Step::new(&self.npm, &staging)
            .args([
                "install",
                "--no-save",
                "--prefer-offline",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .arg(format!("{package}@{version}"))
            .env("npm_config_update_notifier", "false");
        let outcome = network.run(step, &[], log, deadline, stop).await;
        let result = match outcome {
            Ok(()) if staging.join("node_modules/.bin").join(bin).exists() => Ok(()),
            Ok(()) => Err(ToolError::Failed(format!(
                "{package}@{version} installed without its {bin} program"
            ))),
            Err(InstallError::Refused(targets)) => Err(ToolError::Failed(
                network.refusal(&format!("installing {package}@{version}"), &targets),
            )),
            Err(InstallError::Step(StepError::Failed(status))) => Err(ToolError::Failed(format!(
                "npm could not install {package}@{version} ({status})"
            ))),
            Err(InstallError::Step(StepError::Spawn(err))) => Err(ToolError::Failed(format!(
                "npm could not be started: {err}"
            ))),
            Err(InstallError::Step(err)) => Err(ToolError::Interrupted(err)),
        };
        let ready = |dir: &Path| dir.join("node_modules/.bin").join(bin).exists();
        crate::deps::publish(&staging, &dir, result.is_ok(), ready)?;
        result.map(|()| program.into_os_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    fn plan_of(files: &[(&str, &str)], package: &str) -> Result<Plan, String> {
        let dir = project(files);
        plan(dir.path(), &serde_json::from_str(package).unwrap())
    }

    #[test]
    fn the_lockfile_picks_the_manager_and_package_manager_its_version() {
        let none = "{}";
        assert_eq!(
            plan_of(&[("package-lock.json", "{}")], none).unwrap(),
            Plan {
                manager: Manager::Npm,
                lockfile: Some("package-lock.json")
            }
        );
        assert_eq!(
            plan_of(&[], none).unwrap(),
            Plan {
                manager: Manager::Npm,
                lockfile: None
            }
        );
        assert_eq!(
            plan_of(&[("yarn.lock", "# yarn lockfile v1\n")], none).unwrap(),
            Plan {
                manager: Manager::YarnClassic(DEFAULT_YARN_CLASSIC.into()),
                lockfile: Some("yarn.lock")
            }
        );
        assert_eq!(
            plan_of(&[("yarn.lock", "__metadata:\n  version: 8\n")], none)
                .unwrap()
                .manager,
            Manager::YarnBerry(DEFAULT_YARN_BERRY.into())
        );
        assert_eq!(
            plan_of(
                &[("yarn.lock", "")],
                r#"{"packageManager": "yarn@4.5.0+sha512.abc"}"#
            )
            .unwrap()
            .manager,
            Manager::YarnBerry("4.5.0".into())
        );
        assert_eq!(
            plan_of(
                &[("pnpm-lock.yaml", "lockfileVersion: '9.0'\n")],
                r#"{"packageManager": "pnpm@9.15.9"}"#
            )
            .unwrap(),
            Plan {
                manager: Manager::Pnpm("9.15.9".into()),
                lockfile: Some("pnpm-lock.yaml")
            }
        );
        // packageManager decides between several lockfiles.
        assert_eq!(
            plan_of(
                &[("package-lock.json", "{}"), ("pnpm-lock.yaml", "")],
                r#"{"packageManager": "pnpm@10.34.9"}"#
            )
            .unwrap()
            .lockfile,
            Some("pnpm-lock.yaml")
        );
    }

    #[test]
    fn a_package_manager_field_that_is_not_an_exact_known_tool_is_refused() {
        for bad in [
            r#"{"packageManager": "bun@1.1.0"}"#,
            r#"{"packageManager": "yarn@latest"}"#,
            r#"{"packageManager": "yarn@^1.22.0"}"#,
            r#"{"packageManager": "pnpm@1.2.3 --registry=http://evil"}"#,
            r#"{"packageManager": "pnpm"}"#,
            r#"{"packageManager": 7}"#,
        ] {
            assert!(plan_of(&[], bad).is_err(), "{bad}");
        }
    }
}
