//! The runtime a bundle needs: a JavaScript bundle only runs in a client app built with the same
//! React Native (and Expo SDK), the same native modules, and, for Hermes bytecode, the same
//! bytecode version. A build records it in `metadata.json` and its status; a client that says
//! what it is (`X-HiveSync-Runtime` or `?runtime=`) is refused a bundle that would crash it, with
//! the differences named (`409 RUNTIME_MISMATCH`), before it downloads anything.
//!
//! A client describes itself as `key=value` pairs separated by `;` ([`ClientRuntime::parse`]):
//! `react-native=0.86.3;expo-sdk=57.0.0;hermes-bytecode=96;react-native-screens=4.26.2`, or just
//! `fingerprint=<hex>`. Versions match on major and minor (patch releases keep the native
//! interface); the bytecode version and the fingerprint match exactly. A native module the bundle
//! needs is a difference when the client names it with another version, or when the client names
//! any native module but not this one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What a bundle needs of the app that runs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// The `react-native` version installed for the build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub react_native: Option<String>,
    /// The Expo SDK (`expo`'s major version as `57.0.0`), for Expo projects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expo_sdk: Option<String>,
    /// The Hermes bytecode version, when the bundle is bytecode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hermes_bytecode: Option<u32>,
    /// Packages with native code the app must contain, with their versions.
    #[serde(default)]
    pub native_modules: BTreeMap<String, String>,
    /// sha256 of all of the above, exact versions included.
    pub fingerprint: String,
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The version of `package` in the nearest of `node_modules` that has it.
pub(crate) fn version_in(node_modules: &[PathBuf], package: &str) -> Option<String> {
    node_modules.iter().find_map(|dir| {
        read_json(&dir.join(package).join("package.json"))?["version"]
            .as_str()
            .map(str::to_owned)
    })
}

/// Whether an installed package carries native code: Android or iOS sources, a podspec, or an
/// Expo module config.
fn is_native(package_dir: &Path) -> bool {
    if package_dir.join("android").is_dir()
        || package_dir.join("ios").is_dir()
        || package_dir.join("expo-module.config.json").is_file()
    {
        return true;
    }
    std::fs::read_dir(package_dir).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".podspec"))
    })
}

/// Every package directly under `node_modules` (scoped ones included), by name.
fn installed_packages(node_modules: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(entries) = std::fs::read_dir(node_modules) else {
        return names;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if name.starts_with('@') {
            if let Ok(scoped) = std::fs::read_dir(entry.path()) {
                names.extend(
                    scoped
                        .flatten()
                        .map(|e| format!("{name}/{}", e.file_name().to_string_lossy())),
                );
            }
        } else {
            names.push(name);
        }
    }
    names
}

/// The version of a Hermes bytecode file: after the 8-byte magic, a little-endian u32.
pub fn hermes_bytecode_version(bundle: &[u8]) -> Option<u32> {
    const MAGIC: u64 = 0x1F19_03C1_03BC_1FC6;
    let magic = u64::from_le_bytes(bundle.get(..8)?.try_into().ok()?);
    (magic == MAGIC).then(|| u32::from_le_bytes(bundle[8..12].try_into().unwrap_or_default()))
}

impl Runtime {
    /// The runtime of a project whose `package.json` is in `project` and whose dependencies are
    /// installed in `node_modules` (the nearest first, as Node resolves them), for a bundle
    /// starting with `bundle_head`.
    ///
    /// Native modules: the project's own dependencies with native code (what React Native's
    /// autolinking links) and every Expo module installed (what Expo's autolinking links, which
    /// includes those `expo` itself depends on).
    pub fn of(project: &Path, node_modules: &[PathBuf], bundle_head: &[u8]) -> Runtime {
        let package = read_json(&project.join("package.json")).unwrap_or_default();
        let direct: Vec<String> = package["dependencies"]
            .as_object()
            .map(|deps| deps.keys().cloned().collect())
            .unwrap_or_default();
        let expo = version_in(node_modules, "expo");
        let mut native_modules = BTreeMap::new();
        let installed = node_modules.iter().flat_map(|dir| {
            installed_packages(dir)
                .into_iter()
                .filter(|name| dir.join(name).join("expo-module.config.json").is_file())
        });
        for name in direct.into_iter().chain(installed) {
            // Recorded on their own.
            if name == "react-native" || name == "expo" || native_modules.contains_key(&name) {
                continue;
            }
            let Some(dir) = node_modules
                .iter()
                .map(|dir| dir.join(&name))
                .find(|dir| dir.join("package.json").is_file())
            else {
                continue;
            };
            if is_native(&dir)
                && let Some(version) = version_in(node_modules, &name)
            {
                native_modules.insert(name, version);
            }
        }
        let mut runtime = Runtime {
            react_native: version_in(node_modules, "react-native"),
            expo_sdk: expo
                .as_deref()
                .and_then(|v| v.split('.').next())
                .map(|major| format!("{major}.0.0")),
            hermes_bytecode: hermes_bytecode_version(bundle_head),
            native_modules,
            fingerprint: String::new(),
        };
        runtime.fingerprint = runtime.compute_fingerprint();
        runtime
    }

    fn compute_fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        let mut part = |key: &str, value: &str| {
            hasher.update((key.len() as u64).to_le_bytes());
            hasher.update(key.as_bytes());
            hasher.update((value.len() as u64).to_le_bytes());
            hasher.update(value.as_bytes());
        };
        part("react-native", self.react_native.as_deref().unwrap_or(""));
        part("expo-sdk", self.expo_sdk.as_deref().unwrap_or(""));
        part(
            "hermes-bytecode",
            &self
                .hermes_bytecode
                .map(|v| v.to_string())
                .unwrap_or_default(),
        );
        for (name, version) in &self.native_modules {
            part(name, version);
        }
        hex::encode(hasher.finalize())
    }

    /// What keeps a client described by `client` from running this bundle; empty when nothing.
    pub fn differences(&self, client: &ClientRuntime) -> Vec<Difference> {
        let mut found = Vec::new();
        let mut lacking = Vec::new();
        let mut check = |what: &str, needed: Option<&str>, has: Option<&str>, exact: bool| {
            if let (Some(needed), Some(has)) = (needed, has) {
                let same = if exact {
                    needed == has
                } else {
                    same_minor(needed, has)
                };
                if !same {
                    found.push(Difference {
                        what: what.to_owned(),
                        bundle: Some(needed.to_owned()),
                        client: Some(has.to_owned()),
                    });
                }
            }
        };
        check(
            "fingerprint",
            Some(&self.fingerprint),
            client.fingerprint.as_deref(),
            true,
        );
        check(
            "react-native",
            self.react_native.as_deref(),
            client.react_native.as_deref(),
            false,
        );
        check(
            "expo-sdk",
            self.expo_sdk.as_deref(),
            client.expo_sdk.as_deref(),
            false,
        );
        let bytecode = self.hermes_bytecode.map(|v| v.to_string());
        check(
            "hermes-bytecode",
            bytecode.as_deref(),
            client.hermes_bytecode.as_deref(),
            true,
        );
        for (name, needed) in &self.native_modules {
            match client.native_modules.get(name) {
                Some(has) => check(name, Some(needed), Some(has), false),
                None if !client.native_modules.is_empty() => lacking.push(Difference {
                    what: name.clone(),
                    bundle: Some(needed.clone()),
                    client: None,
                }),
                None => {}
            }
        }
        found.extend(lacking);
        found
    }
}

/// `1.2.3` and `1.2.9` are the same minor; `1.2` and `1.3.0` are not.
fn same_minor(a: &str, b: &str) -> bool {
    let minor = |v: &str| {
        let v = v.trim().trim_start_matches(['^', '~', 'v']);
        let mut parts = v.split(['.', '-', '+']);
        (
            parts.next().unwrap_or("").to_owned(),
            parts.next().unwrap_or("0").to_owned(),
        )
    };
    minor(a) == minor(b)
}

/// One way a client differs from what a bundle needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// `react-native`, `expo-sdk`, `hermes-bytecode`, `fingerprint` or a native module's name.
    pub what: String,
    /// What the bundle needs.
    pub bundle: Option<String>,
    /// What the client has (`None`: it lacks the module).
    pub client: Option<String>,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let bundle = self.bundle.as_deref().unwrap_or("none");
        match &self.client {
            Some(client) => write!(
                f,
                "{}: the bundle needs {bundle}, the app has {client}",
                self.what
            ),
            None => write!(
                f,
                "{}: the bundle needs {bundle}, the app lacks it",
                self.what
            ),
        }
    }
}

/// What a client says it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRuntime {
    pub react_native: Option<String>,
    pub expo_sdk: Option<String>,
    pub hermes_bytecode: Option<String>,
    pub fingerprint: Option<String>,
    pub native_modules: BTreeMap<String, String>,
}

/// Bounds on what a client may send.
const MAX_CLIENT_RUNTIME: usize = 8192;
const MAX_VALUE: usize = 128;

impl ClientRuntime {
    /// Parses `key=value;key=value`. Errors say what is wrong, for a `VALIDATION_ERROR`.
    pub fn parse(text: &str) -> Result<ClientRuntime, String> {
        if text.len() > MAX_CLIENT_RUNTIME {
            return Err(format!(
                "the runtime description is longer than {MAX_CLIENT_RUNTIME} bytes"
            ));
        }
        let mut client = ClientRuntime::default();
        for pair in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
            if key.is_empty() || value.is_empty() || value.len() > MAX_VALUE || key.len() > 214 {
                return Err(format!("{pair:?}: empty or too long"));
            }
            if !printable(key) || !printable(value) {
                return Err(format!("{pair:?}: only printable ASCII is allowed"));
            }
            let value = value.to_owned();
            match key {
                "react-native" => client.react_native = Some(value),
                "expo-sdk" => client.expo_sdk = Some(value),
                "hermes-bytecode" => client.hermes_bytecode = Some(value),
                "fingerprint" => client.fingerprint = Some(value),
                module => {
                    client.native_modules.insert(module.to_owned(), value);
                }
            }
        }
        Ok(client)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs() -> Runtime {
        let mut runtime = Runtime {
            react_native: Some("0.86.3".into()),
            expo_sdk: Some("57.0.0".into()),
            hermes_bytecode: None,
            native_modules: BTreeMap::from([
                ("react-native-screens".into(), "4.26.2".into()),
                ("expo-router".into(), "57.0.24".into()),
            ]),
            fingerprint: String::new(),
        };
        runtime.fingerprint = runtime.compute_fingerprint();
        runtime
    }

    fn whats(found: &[Difference]) -> Vec<&str> {
        found.iter().map(|d| d.what.as_str()).collect()
    }

    #[test]
    fn a_client_that_matches_or_says_nothing_gets_no_difference() {
        let runtime = needs();
        let same = ClientRuntime::parse(
            "react-native=0.86.1; expo-sdk=57; react-native-screens=4.26.0;expo-router=57.0.30",
        )
        .unwrap();
        assert_eq!(runtime.differences(&same), vec![]);
        assert_eq!(runtime.differences(&ClientRuntime::default()), vec![]);
        let fingerprint =
            ClientRuntime::parse(&format!("fingerprint={}", runtime.fingerprint)).unwrap();
        assert_eq!(runtime.differences(&fingerprint), vec![]);
    }

    #[test]
    fn each_difference_is_named() {
        let runtime = needs();
        let older = ClientRuntime::parse("react-native=0.85.2;expo-sdk=56.0.0").unwrap();
        let found = runtime.differences(&older);
        assert_eq!(whats(&found), ["react-native", "expo-sdk"]);
        assert_eq!(
            found[0].to_string(),
            "react-native: the bundle needs 0.86.3, the app has 0.85.2"
        );
        // Naming any native module means naming all: a missing one is a difference.
        let lacking = ClientRuntime::parse("react-native-screens=4.26.2").unwrap();
        let found = runtime.differences(&lacking);
        assert_eq!(whats(&found), ["expo-router"]);
        assert_eq!(found[0].client, None);
        let wrong = ClientRuntime::parse("fingerprint=00").unwrap();
        assert_eq!(whats(&runtime.differences(&wrong)), ["fingerprint"]);
        let mut bytecode = needs();
        bytecode.hermes_bytecode = Some(96);
        let client = ClientRuntime::parse("hermes-bytecode=94").unwrap();
        assert_eq!(whats(&bytecode.differences(&client)), ["hermes-bytecode"]);
    }

    #[test]
    fn malformed_descriptions_are_refused() {
        for bad in [
            "react-native",
            "=1",
            "a=",
            "a=b c",
            "a=\u{7f}",
            &"a=1;".repeat(3000),
        ] {
            assert!(ClientRuntime::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_runtime_is_read_from_the_installed_packages() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path();
        let modules = project.join("node_modules");
        let package = |name: &str, version: &str, native: &[&str]| {
            let path = modules.join(name);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(
                path.join("package.json"),
                format!(r#"{{"name": "{name}", "version": "{version}"}}"#),
            )
            .unwrap();
            for marker in native {
                if marker.contains('.') {
                    std::fs::write(path.join(marker), "{}").unwrap();
                } else {
                    std::fs::create_dir_all(path.join(marker)).unwrap();
                }
            }
        };
        std::fs::write(
            project.join("package.json"),
            r#"{"dependencies": {"react-native": "0.86.3", "expo": "57.0.26", "lodash": "4", "@scope/native": "1"}}"#,
        )
        .unwrap();
        package("react-native", "0.86.3", &["android", "ios"]);
        package("expo", "57.0.26", &["expo-module.config.json"]);
        package("lodash", "4.17.21", &[]);
        package("@scope/native", "1.2.3", &["Native.podspec"]);
        // Not a direct dependency, but an Expo module: linked all the same.
        package("expo-constants", "57.0.22", &["expo-module.config.json"]);
        package("left-pad", "1.0.0", &["android"]);
        let hbc: Vec<u8> = [
            0x1F19_03C1_03BC_1FC6_u64.to_le_bytes().as_slice(),
            &96u32.to_le_bytes(),
        ]
        .concat();
        let runtime = Runtime::of(project, std::slice::from_ref(&modules), &hbc);
        assert_eq!(runtime.react_native.as_deref(), Some("0.86.3"));
        assert_eq!(runtime.expo_sdk.as_deref(), Some("57.0.0"));
        assert_eq!(runtime.hermes_bytecode, Some(96));
        assert_eq!(
            runtime.native_modules,
            BTreeMap::from([
                ("@scope/native".to_owned(), "1.2.3".to_owned()),
                ("expo-constants".to_owned(), "57.0.22".to_owned()),
            ])
        );
        assert_eq!(runtime.fingerprint.len(), 64);
        assert_eq!(
            Runtime::of(project, &[modules], b"__d(").hermes_bytecode,
            None
        );
    }
}
