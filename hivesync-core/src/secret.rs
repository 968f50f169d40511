//! Secrets that cannot leak through `Debug`, `Display` or logs, and the embedded mode's
//! generated-and-persisted secrets.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

use crate::error::{Error, ErrorKind, Result};

/// A secret string. Its `Debug` prints `Secret(<redacted>)`; the value is only reachable through
/// [`Secret::expose`], which makes every use easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value. Call this only where the value is used (signing, connecting).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A fresh secret: 32 random bytes, base64url-encoded.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret(URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Reads the secret stored at `path`, or generates one and stores it there (mode 0600).
///
/// The new secret is written to a temporary file and hard-linked into place, which fails if the
/// path exists: when two processes start on a fresh `DATA_DIR` at once, exactly one secret wins
/// and both use it. A crash never leaves a half-written secret under `path`.
///
/// Only the embedded mode calls this: a deployment with external services must be given its
/// secrets explicitly.
pub fn load_or_generate(path: &Path) -> Result<Secret> {
    if let Some(secret) = read_stored(path)? {
        return Ok(secret);
    }
    let generated = Secret::generate();
    match publish_private(path, generated.expose().as_bytes()) {
        Ok(()) => Ok(generated),
        // Another process published first: use its secret.
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => read_stored(path)?
            .ok_or_else(|| Error::new(ErrorKind::Config, "a stored secret vanished")),
        Err(err) => Err(
            Error::new(ErrorKind::Config, "cannot store a generated secret")
                .with_context("path", path.display())
                .with_source(err),
        ),
    }
}

pub(crate) fn read_stored(path: &Path) -> Result<Option<Secret>> {
    match std::fs::read_to_string(path) {
        Ok(stored) => {
            let value = stored.trim();
            if value.len() < crate::config::MIN_SECRET_LEN {
                return Err(Error::new(
                    ErrorKind::Config,
                    "a stored secret is too short; delete the file to generate a new one",
                )
                .with_context("path", path.display()));
            }
            Ok(Some(Secret::new(value)))
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::new(ErrorKind::Config, "cannot read a stored secret")
            .with_context("path", path.display())
            .with_source(err)),
    }
}

/// Writes `contents` to a private temporary file beside `path`, then links it to `path` without
/// replacing anything there.
fn publish_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("a secret path has no parent directory"))?;
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let (tmp_path, mut file) = tempfile_in(dir)?;
    let linked = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::hard_link(&tmp_path, path));
    let _ = std::fs::remove_file(&tmp_path);
    linked
}

/// Creates a uniquely named file in `dir`, readable only by its owner.
fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    let name = format!(".tmp-{}", uuid::Uuid::new_v4().simple());
    let path = dir.join(name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(&path)?;
    Ok((path, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-hunter2-hunter2-hunter2!");
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(&secret)).contains("hunter2"));
    }

    #[test]
    fn generated_secrets_are_long_and_distinct() {
        let a = Secret::generate();
        let b = Secret::generate();
        assert!(a.expose().len() >= 43);
        assert_ne!(a, b);
    }

    #[test]
    fn persisted_secret_is_stable_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets").join("jwt_secret");
        let first = load_or_generate(&path).unwrap();
        let second = load_or_generate(&path).unwrap();
        assert_eq!(first, second);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(
                mode & 0o077,
                0,
                "secret file must not be readable by others"
            );
        }
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets").join("race");
        let secrets: Vec<Secret> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_generate(&path).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            secrets.windows(2).all(|w| w[0] == w[1]),
            "every process uses the same secret"
        );
        assert_eq!(load_or_generate(&path).unwrap(), secrets[0]);
        let leftovers = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary files are left behind");
    }

    #[test]
    fn a_truncated_stored_secret_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("short");
        std::fs::write(&path, "abc").unwrap();
        assert_eq!(
            load_or_generate(&path).unwrap_err().kind(),
            ErrorKind::Config
        );
    }
}
