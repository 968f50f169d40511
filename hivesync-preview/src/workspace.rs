//! Monorepos: which folder of a checkout is the app, and where its dependencies install.
//!
//! A build request may name the app folder (`app`); otherwise the checkout's top is the app when
//! it is one, and a workspace root (`workspaces` in `package.json`, or `pnpm-workspace.yaml`)
//! whose members hold exactly one app builds that one. An app inside a workspace installs at the
//! workspace root, with the root's lockfile and tool, so workspace packages are linked from the
//! checkout and never looked up on a registry (whoever publishes such a name there would
//! otherwise be bundled). An app synced without its workspace that depends on a workspace
//! package (`workspace:`, `link:`, `portal:` or a `file:` path out of the tree) is refused before
//! anything is installed.

use std::path::{Path, PathBuf};

use hivesync_core::repo::RepoPath;
use serde_json::Value;

use crate::detect::{DetectError, depends_on};

/// Where a build's app is and how its dependencies are laid out (the default: the checkout's top
/// is the app).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Layout {
    /// The app's folder, relative to the checkout (`""` for the top).
    pub app: String,
    /// The workspace members (relative folders holding a `package.json`, the app among them)
    /// when the dependencies install at the checkout's top as a workspace; empty otherwise.
    pub members: Vec<String>,
}

impl Layout {
    /// The app's folder inside `checkout`.
    pub fn app_dir(&self, checkout: &Path) -> PathBuf {
        if self.app.is_empty() {
            checkout.to_path_buf()
        } else {
            checkout.join(&self.app)
        }
    }

    /// Where dependencies install, relative to the checkout: its top for a workspace, else the
    /// app's folder.
    pub fn install_root(&self) -> &str {
        if self.members.is_empty() {
            &self.app
        } else {
            ""
        }
    }

    /// The app's folder relative to the install root (`""` when they are the same).
    pub fn app_in_install_root(&self) -> &str {
        if self.members.is_empty() {
            ""
        } else {
            &self.app
        }
    }

    /// The install root inside `checkout`.
    pub fn install_dir(&self, checkout: &Path) -> PathBuf {
        let root = self.install_root();
        if root.is_empty() {
            checkout.to_path_buf()
        } else {
            checkout.join(root)
        }
    }
}

fn invalid(message: impl Into<String>) -> DetectError {
    DetectError::Invalid(message.into())
}

fn read_package(dir: &Path) -> Option<Value> {
    let path = dir.join("package.json");
    if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Whether a `package.json` describes an app HiveSync builds.
fn is_app(package: &Value) -> bool {
    let sections = ["dependencies", "devDependencies"];
    depends_on(package, "react-native", &sections) || depends_on(package, "expo", &sections)
}

/// The workspace globs of a checkout's top: `package.json`'s `workspaces` (a list, or an object
/// with `packages`), else `pnpm-workspace.yaml`'s `packages` list.
fn workspace_globs(root: &Path) -> Vec<String> {
    let from_package = read_package(root).and_then(|package| {
        let workspaces = &package["workspaces"];
        let list = workspaces
            .as_array()
            .or_else(|| workspaces["packages"].as_array())?;
        Some(
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>(),
        )
    });
    if let Some(globs) = from_package {
        return globs;
    }
    let Ok(text) = std::fs::read_to_string(root.join("pnpm-workspace.yaml")) else {
        return Vec::new();
    };
    pnpm_packages(&text)
}

/// The `packages:` list of a `pnpm-workspace.yaml` (block style, one entry a line).
pub fn pnpm_packages(text: &str) -> Vec<String> {
    let mut globs = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if !line.starts_with([' ', '\t', '-']) && !trimmed.is_empty() {
            inside = trimmed.starts_with("packages:");
            continue;
        }
        if inside && let Some(item) = trimmed.strip_prefix('-') {
            let item = item.split(" #").next().unwrap_or("").trim();
            let item = item.trim_matches(|c| c == '\'' || c == '"');
            if !item.is_empty() {
                globs.push(item.to_owned());
            }
        }
    }
    globs
}

/// The member folders a workspace glob names: `dir`, `dir/*` or `dir/**` (one level, as apps
/// and packages are laid out), never outside the checkout nor negated.
fn expand(root: &Path, glob: &str) -> Vec<String> {
    let glob = glob.trim_start_matches("./").trim_end_matches('/');
    if glob.starts_with('!') {
        return Vec::new();
    }
    let (base, wildcard) = match glob.strip_suffix("/**").or_else(|| glob.strip_suffix("/*")) {
        Some(base) => (base, true),
        None => (glob, false),
    };
    let Ok(base) = RepoPath::parse(base) else {
        return Vec::new();
    };
    if base.as_str().contains('*') {
        return Vec::new();
    }
    let dir = root.join(base.as_str());
    if !wildcard {
        return vec![base.as_str().to_owned()];
    }
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| format!("{}/{}", base.as_str(), e.file_name().to_string_lossy()))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The members of the workspace at `root` (folders with a `package.json`), sorted.
fn members(root: &Path) -> Vec<String> {
    let mut members: Vec<String> = workspace_globs(root)
        .iter()
        .flat_map(|glob| expand(root, glob))
        .filter(|member| read_package(&root.join(member)).is_some())
        .collect();
    members.sort();
    members.dedup();
    members
}

/// Dependency specs that only resolve inside a workspace or the author's machine.
fn local_only(spec: &str) -> bool {
    ["workspace:", "link:", "portal:"]
        .iter()
        .any(|p| spec.starts_with(p))
        || spec
            .strip_prefix("file:")
            .is_some_and(|path| path.starts_with('/') || path.starts_with(".."))
}

/// Works out the layout of `checkout` for a build of the app in `requested` (a folder), if named.
pub fn layout(checkout: &Path, requested: Option<&str>) -> Result<Layout, DetectError> {
    let members = members(checkout);
    let app = match requested
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != ".")
    {
        Some(requested) => {
            let path = RepoPath::parse(requested.trim_start_matches("./")).map_err(|_| {
                invalid(format!(
                    "the app folder {requested:?} is not a path inside the project"
                ))
            })?;
            if read_package(&checkout.join(path.as_str())).is_none() {
                return Err(invalid(format!("{path} has no package.json")));
            }
            path.as_str().to_owned()
        }
        None if read_package(checkout).is_some_and(|p| is_app(&p)) || members.is_empty() => {
            String::new()
        }
        None => {
            let apps: Vec<&String> = members
                .iter()
                .filter(|m| read_package(&checkout.join(m)).is_some_and(|p| is_app(&p)))
                .collect();
            match apps.as_slice() {
                [one] => (*one).clone(),
                [] => {
                    return Err(invalid(
                        "a workspace with no React Native or Expo app among its members",
                    ));
                }
                several => {
                    return Err(invalid(format!(
                        "the workspace has several apps ({}): name one as \"app\" in the build request",
                        several
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
            }
        }
    };
    let in_workspace = !app.is_empty() && members.contains(&app);
    if !in_workspace {
        let dir = if app.is_empty() {
            checkout.to_path_buf()
        } else {
            checkout.join(&app)
        };
        if let Some(package) = read_package(&dir) {
            for section in ["dependencies", "devDependencies"] {
                for (name, spec) in package[section].as_object().into_iter().flatten() {
                    if spec.as_str().is_some_and(local_only) {
                        return Err(invalid(format!(
                            "{name} is a workspace package ({}): sync the whole workspace, or its \
                             name could be fetched from a registry",
                            spec.as_str().unwrap_or_default()
                        )));
                    }
                }
            }
        }
    }
    Ok(Layout {
        app,
        members: if in_workspace { members } else { Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    const APP: &str = r#"{"dependencies": {"react-native": "0.88.1", "@x/greeting": "*"}}"#;
    const LIB: &str = r#"{"name": "@x/greeting"}"#;

    #[test]
    fn a_workspace_builds_its_one_app_installing_at_the_root() {
        let dir = tree(&[
            (
                "package.json",
                r#"{"private": true, "workspaces": ["apps/*", "packages/*"]}"#,
            ),
            ("apps/mobile/package.json", APP),
            ("packages/greeting/package.json", LIB),
            ("packages/notes.txt", ""),
        ]);
        let layout = layout(dir.path(), None).unwrap();
        assert_eq!(layout.app, "apps/mobile");
        assert_eq!(layout.members, ["apps/mobile", "packages/greeting"]);
        assert_eq!(layout.install_root(), "");
        // Named explicitly, the same.
        assert_eq!(
            super::layout(dir.path(), Some("./apps/mobile")).unwrap(),
            layout
        );
    }

    #[test]
    fn pnpm_workspaces_and_several_apps() {
        let dir = tree(&[
            ("package.json", r#"{"private": true}"#),
            (
                "pnpm-workspace.yaml",
                "packages:\n  - 'apps/*'\n  - \"packages/*\" # libs\nonlyBuiltDependencies:\n  - x\n",
            ),
            ("apps/a/package.json", APP),
            ("apps/b/package.json", APP),
            ("packages/greeting/package.json", LIB),
        ]);
        match layout(dir.path(), None) {
            Err(DetectError::Invalid(why)) => {
                assert!(why.contains("apps/a, apps/b"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let b = layout(dir.path(), Some("apps/b")).unwrap();
        assert_eq!(b.app, "apps/b");
        assert_eq!(b.members, ["apps/a", "apps/b", "packages/greeting"]);
    }

    #[test]
    fn a_plain_app_installs_where_it_is() {
        let dir = tree(&[("package.json", r#"{"dependencies": {"expo": "57.0.26"}}"#)]);
        let layout = layout(dir.path(), None).unwrap();
        assert_eq!((layout.app.as_str(), layout.install_root()), ("", ""));
        assert!(layout.members.is_empty());
    }

    #[test]
    fn an_app_without_its_workspace_cannot_depend_on_workspace_packages() {
        for spec in [
            "workspace:*",
            "link:../greeting",
            "file:../greeting",
            "portal:x",
        ] {
            let dir = tree(&[(
                "package.json",
                &format!(r#"{{"dependencies": {{"react-native": "1", "@x/greeting": "{spec}"}}}}"#),
            )]);
            match layout(dir.path(), None) {
                Err(DetectError::Invalid(why)) => {
                    assert!(why.contains("sync the whole workspace"), "{why}")
                }
                other => panic!("{spec}: {other:?}"),
            }
        }
        let inside = tree(&[(
            "package.json",
            r#"{"dependencies": {"react-native": "1", "vendored": "file:vendor/x"}}"#,
        )]);
        assert!(layout(inside.path(), None).is_ok());
    }

    #[test]
    fn an_app_folder_outside_the_tree_or_without_a_package_is_refused() {
        let dir = tree(&[("apps/mobile/package.json", APP)]);
        for bad in ["../x", "/etc", "apps/none", "apps/.git"] {
            assert!(
                matches!(layout(dir.path(), Some(bad)), Err(DetectError::Invalid(_))),
                "{bad}"
            );
        }
        assert_eq!(
            layout(dir.path(), Some("apps/mobile")).unwrap().app,
            "apps/mobile"
        );
    }
}
