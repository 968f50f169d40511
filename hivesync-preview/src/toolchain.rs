//! The Node and npm a worker builds with. Their versions are part of the dependency store's key and
//! of every whole-build key: the same lockfile installed by another npm, or bundled by another
//! Node, is another build.

use std::fmt;
use std::process::Command;
use std::sync::OnceLock;

/// The versions of `node` and `npm` on `PATH`; `None` where the program is missing or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    pub node: Option<String>,
    pub npm: Option<String>,
}

impl Toolchain {
    /// Asks `node --version` and `npm --version` (about half a second; see [`toolchain`]).
    pub fn detect() -> Self {
        Toolchain {
            node: version_of("node"),
            npm: version_of("npm"),
        }
    }

    /// Whether both programs answered.
    pub fn is_complete(&self) -> bool {
        self.node.is_some() && self.npm.is_some()
    }
}

impl fmt::Display for Toolchain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let node = self.node.as_deref().unwrap_or("missing");
        let npm = self.npm.as_deref().unwrap_or("missing");
        write!(f, "node {node}, npm {npm}")
    }
}

fn version_of(program: &str) -> Option<String> {
    let output = Command::new(program)
        .arg("--version")
        .env("NO_UPDATE_NOTIFIER", "1")
        .output()
        .ok()?;
    let version = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !version.is_empty() && version.len() <= 64).then_some(version)
}

/// This process's toolchain, detected once. Blocking on first use.
pub fn toolchain() -> &'static Toolchain {
    static TOOLCHAIN: OnceLock<Toolchain> = OnceLock::new();
    TOOLCHAIN.get_or_init(Toolchain::detect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_npm_are_found_and_named() {
        let found = Toolchain::detect();
        assert!(found.is_complete(), "node and npm must be on PATH: {found}");
        assert!(found.node.as_deref().unwrap().starts_with('v'));
        assert!(found.to_string().starts_with("node v"));
        let missing = Toolchain {
            node: None,
            npm: Some("10.0.0".to_owned()),
        };
        assert!(!missing.is_complete());
        assert_eq!(missing.to_string(), "node missing, npm 10.0.0");
        assert_eq!(version_of("hivesync-no-such-program"), None);
    }
}
