//! What kind of project a checkout is, and which file the bundler starts from.
//!
//! Expo when `expo` is among the project's dependencies, as the Expo CLI itself decides: its
//! configuration may be `app.json` (read as JSON5, like the CLI reads it: comments and trailing
//! commas allowed), `app.config.js` or `app.config.ts` (which `expo export` evaluates), or nothing
//! at all, and `main` may name a package entry (`expo-router/entry`) that the CLI resolves. An
//! `app.json` with an `expo` object but no `expo` dependency is refused (spec §7.6 calls that Expo,
//! and it cannot build). Otherwise bare React Native, which needs `react-native` among its
//! dependencies and an entry file: `package.json`'s `main`, else `index.js` (or `.ts`, `.tsx`,
//! `.jsx`), else `App.js`. Anything else is `INVALID_PROJECT_STRUCTURE`, with a message that says
//! what is missing.

use std::path::Path;

use hivesync_core::repo::RepoPath;
use serde_json::Value;

/// The bundler a project is built with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectKind {
    /// `expo export`; the Expo CLI finds the entry itself.
    Expo,
    /// `react-native bundle --entry-file <entry>`.
    ReactNative { entry: String },
}

impl ProjectKind {
    pub fn bundler(&self) -> &'static str {
        match self {
            ProjectKind::Expo => "expo",
            ProjectKind::ReactNative { .. } => "metro",
        }
    }
}

/// Why a checkout cannot be built.
#[derive(Debug)]
pub enum DetectError {
    /// The project is not shaped as a buildable app (`INVALID_PROJECT_STRUCTURE`); the message
    /// says what is missing.
    Invalid(String),
    /// The checkout could not be read.
    Io(std::io::Error),
}

impl std::fmt::Display for DetectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectError::Invalid(why) => f.write_str(why),
            DetectError::Io(err) => write!(f, "cannot read the checkout: {err}"),
        }
    }
}

impl std::error::Error for DetectError {}

impl From<std::io::Error> for DetectError {
    fn from(err: std::io::Error) -> Self {
        DetectError::Io(err)
    }
}

type Result<T> = std::result::Result<T, DetectError>;

fn invalid(message: impl Into<String>) -> DetectError {
    DetectError::Invalid(message.into())
}

/// How a file is parsed.
#[derive(Clone, Copy)]
enum Syntax {
    Json,
    /// What the Expo CLI accepts in `app.json`.
    Json5,
}

fn read_json(dir: &Path, name: &str, syntax: Syntax) -> Result<Option<Value>> {
    let path = dir.join(name);
    // A link could point anywhere once checked out; only regular files are read.
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => return Err(invalid(format!("{name} is not a regular file"))),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.into()),
    }
    let bytes = std::fs::read(&path)?;
    match syntax {
        Syntax::Json => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| invalid(format!("{name} is not valid JSON: {err}"))),
        Syntax::Json5 => {
            let text =
                std::str::from_utf8(&bytes).map_err(|_| invalid(format!("{name} is not UTF-8")))?;
            json5::from_str(text.trim_start_matches('\u{feff}'))
                .map(Some)
                .map_err(|err| invalid(format!("{name} is not valid JSON5: {err}")))
        }
    }
}

pub(crate) fn depends_on(package: &Value, name: &str, sections: &[&str]) -> bool {
    sections
        .iter()
        .any(|section| package[section].get(name).is_some())
}

fn is_regular_file(dir: &Path, relative: &str) -> bool {
    std::fs::symlink_metadata(dir.join(relative)).is_ok_and(|m| m.is_file())
}

/// The oldest React Native whose own CLI bundles on the Node versions workers run (20+): older
/// Metro hashes with md4, which Node 17+ refuses (`ERR_OSSL_EVP_UNSUPPORTED`). Measured on
/// 0.68–0.73 with the builder's command (`../shared/notes`, issue #8).
pub const MINIMUM_REACT_NATIVE: (u64, u64) = (0, 68);

/// `^0.71.3`, `~0.68.0`, `0.70.15`, `>=0.72` → (major, minor); `None` for what is not a version
/// (a tag, a git URL, an alias), which is left to the install to judge.
fn minor_of(spec: &str) -> Option<(u64, u64)> {
    let spec = spec
        .trim()
        .trim_start_matches(['^', '~', '=', '>', 'v', ' ']);
    let mut parts = spec.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()
        .map(|m| m.split(|c: char| !c.is_ascii_digit()).next().unwrap_or(""))
        .and_then(|m| m.parse().ok())?;
    Some((major, minor))
}

/// Refuses, before anything is installed, a bare React Native older than
/// [`MINIMUM_REACT_NATIVE`].
fn check_minimum(package: &Value) -> Result<()> {
    let spec = ["dependencies", "devDependencies", "peerDependencies"]
        .iter()
        .find_map(|section| package[section].get("react-native")?.as_str());
    if let Some(spec) = spec
        && let Some(version) = minor_of(spec)
        && version < MINIMUM_REACT_NATIVE
    {
        let (major, minor) = MINIMUM_REACT_NATIVE;
        return Err(invalid(format!(
            "React Native {spec} is older than {major}.{minor}, the oldest version previews build \
             (its Metro cannot run on current Node); upgrade the app to React Native {major}.{minor} or later"
        )));
    }
    Ok(())
}

/// Detects the kind of project checked out in `dir`.
pub fn detect(dir: &Path) -> Result<ProjectKind> {
    let package = read_json(dir, "package.json", Syntax::Json)?
        .ok_or_else(|| invalid("the project has no package.json"))?;
    if !package.is_object() {
        return Err(invalid("package.json is not an object"));
    }
    let app = read_json(dir, "app.json", Syntax::Json5)?;
    if let Some(app) = &app
        && !app.is_object()
    {
        return Err(invalid("app.json is not an object"));
    }
    let has_expo = depends_on(&package, "expo", &["dependencies", "devDependencies"]);
    if has_expo {
        return Ok(ProjectKind::Expo);
    }
    if app
        .as_ref()
        .is_some_and(|app| app.get("expo").is_some_and(Value::is_object))
    {
        return Err(invalid(
            "app.json configures Expo but package.json does not depend on expo",
        ));
    }
    let has_react_native = depends_on(
        &package,
        "react-native",
        &["dependencies", "devDependencies", "peerDependencies"],
    );
    if !has_react_native {
        return Err(invalid(
            "not a React Native project: package.json depends on neither expo nor react-native",
        ));
    }
    check_minimum(&package)?;
    if let Some(main) = package.get("main").and_then(Value::as_str) {
        let entry = RepoPath::parse(main.trim_start_matches("./")).map_err(|_| {
            invalid(format!(
                "package.json's main ({main:?}) is not a path inside the project"
            ))
        })?;
        if is_regular_file(dir, entry.as_str()) {
            return Ok(ProjectKind::ReactNative {
                entry: entry.as_str().to_owned(),
            });
        }
        return Err(invalid(format!(
            "package.json's main names {entry}, which does not exist"
        )));
    }
    for candidate in ["index.js", "index.ts", "index.tsx", "index.jsx", "App.js"] {
        if is_regular_file(dir, candidate) {
            return Ok(ProjectKind::ReactNative {
                entry: candidate.to_owned(),
            });
        }
    }
    Err(invalid(
        "no entry file: add index.js (registering the root component) or set main in package.json",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    const RN: &str = r#"{"dependencies": {"react-native": "0.88.1"}}"#;

    #[test]
    fn expo_and_react_native_projects_are_told_apart() {
        let expo = project(&[
            (
                "package.json",
                r#"{"dependencies": {"expo": "57.0.26", "react-native": "0.86.3"}}"#,
            ),
            ("app.json", r#"{"expo": {"name": "x"}}"#),
            ("index.js", ""),
        ]);
        assert_eq!(detect(expo.path()).unwrap(), ProjectKind::Expo);

        let rn = project(&[
            ("package.json", RN),
            ("app.json", r#"{"name": "x"}"#),
            ("index.js", ""),
            ("App.js", ""),
        ]);
        assert_eq!(
            detect(rn.path()).unwrap(),
            ProjectKind::ReactNative {
                entry: "index.js".into()
            }
        );

        // Expo is its dependency, whatever configures it: app.config.ts with a package entry as
        // main and no app.json, an app.json without an expo key, an app.json the CLI accepts
        // but strict JSON does not.
        let router = project(&[
            (
                "package.json",
                r#"{"main": "expo-router/entry", "dependencies": {"expo": "57.0.26", "expo-router": "57.0.24"}}"#,
            ),
            ("app.config.ts", "export default { name: 'x' };"),
            ("app/index.tsx", ""),
        ]);
        assert_eq!(detect(router.path()).unwrap(), ProjectKind::Expo);
        let blank = project(&[
            ("package.json", r#"{"dependencies": {"expo": "57.0.26"}}"#),
            ("app.json", r#"{"name": "blank", "slug": "blank"}"#),
            ("App.js", ""),
        ]);
        assert_eq!(detect(blank.path()).unwrap(), ProjectKind::Expo);
        let json5 = project(&[
            (
                "package.json",
                r#"{"devDependencies": {"expo": "57.0.26"}}"#,
            ),
            (
                "app.json",
                "{\n  // the official example's shape\n  \"expo\": {\"name\": \"x\",},\n}\n",
            ),
        ]);
        assert_eq!(detect(json5.path()).unwrap(), ProjectKind::Expo);

        // The oldest React Native that builds, and specs that are no version, pass.
        for spec in [
            "0.68.7",
            "~0.71.19",
            ">=0.72.0",
            "1.0.0",
            "npm:react-native-tvos@0.73.1-0",
            "latest",
        ] {
            let dir = project(&[
                (
                    "package.json",
                    &format!(r#"{{"dependencies": {{"react-native": "{spec}"}}}}"#),
                ),
                ("index.js", ""),
            ]);
            assert!(detect(dir.path()).is_ok(), "{spec}");
        }

        let app_only = project(&[("package.json", RN), ("App.js", "")]);
        assert_eq!(
            detect(app_only.path()).unwrap(),
            ProjectKind::ReactNative {
                entry: "App.js".into()
            }
        );

        let main = project(&[
            (
                "package.json",
                r#"{"main": "./src/entry.js", "dependencies": {"react-native": "1"}}"#,
            ),
            ("src/entry.js", ""),
            ("index.js", ""),
        ]);
        assert_eq!(
            detect(main.path()).unwrap(),
            ProjectKind::ReactNative {
                entry: "src/entry.js".into()
            }
        );
    }

    #[test]
    fn anything_else_is_an_invalid_structure_that_says_why() {
        let cases: Vec<(tempfile::TempDir, &str)> = vec![
            (project(&[("index.js", "")]), "no package.json"),
            (project(&[("package.json", "{not json")]), "not valid JSON"),
            (
                project(&[
                    ("package.json", r#"{"dependencies": {"expo": "1"}}"#),
                    ("app.json", "{expo: {name: "),
                ]),
                "app.json is not valid JSON5",
            ),
            (
                project(&[
                    ("package.json", r#"{"dependencies": {"left-pad": "1"}}"#),
                    ("index.js", ""),
                ]),
                "not a React Native project",
            ),
            (
                project(&[("package.json", RN), ("src/App.js", "")]),
                "no entry file",
            ),
            (
                project(&[(
                    "package.json",
                    r#"{"main": "../outside.js", "dependencies": {"react-native": "1"}}"#,
                )]),
                "not a path inside",
            ),
            (
                project(&[(
                    "package.json",
                    r#"{"main": "gone.js", "dependencies": {"react-native": "1"}}"#,
                )]),
                "does not exist",
            ),
            (
                project(&[
                    ("package.json", RN),
                    ("app.json", r#"{"expo": {}}"#),
                    ("index.js", ""),
                ]),
                "does not depend on expo",
            ),
            (
                project(&[
                    (
                        "package.json",
                        r#"{"dependencies": {"react-native": "^0.67.5"}}"#,
                    ),
                    ("index.js", ""),
                ]),
                "older than 0.68, the oldest version previews build",
            ),
        ];
        for (dir, expected) in cases {
            match detect(dir.path()) {
                Err(DetectError::Invalid(why)) => {
                    assert!(why.contains(expected), "{expected}: {why}")
                }
                other => panic!("{expected}: {other:?}"),
            }
        }
        // A package.json that is a link is not followed.
        let linked = project(&[("real.json", RN), ("index.js", "")]);
        std::os::unix::fs::symlink("real.json", linked.path().join("package.json")).unwrap();
        assert!(matches!(
            detect(linked.path()),
            Err(DetectError::Invalid(_))
        ));
    }
}
