//! What `hivesync login` stores: the server and an access token, in `credentials.json` under
//! `$HIVESYNC_CONFIG_DIR`, `$XDG_CONFIG_HOME/hivesync` or `~/.config/hivesync`, readable by its
//! owner only.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::usage_error;
use crate::Result;

/// A server and a token for it.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    pub url: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

fn var(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// Where the credentials live.
pub fn config_dir() -> Result<PathBuf> {
    var("HIVESYNC_CONFIG_DIR")
        .or_else(|| var("XDG_CONFIG_HOME").map(|d| d.join("hivesync")))
        .or_else(|| var("HOME").map(|d| d.join(".config/hivesync")))
        .ok_or_else(|| {
            usage_error("cannot find a configuration directory: set HIVESYNC_CONFIG_DIR")
        })
}

/// Where the sync stat caches live.
pub fn cache_dir() -> Result<PathBuf> {
    var("XDG_CACHE_HOME")
        .map(|d| d.join("hivesync"))
        .or_else(|| var("HOME").map(|d| d.join(".cache/hivesync")))
        .map_or_else(|| config_dir().map(|d| d.join("cache")), Ok)
}

/// The stored credentials, if any.
pub fn load() -> Result<Option<Credentials>> {
    let path = config_dir()?.join("credentials.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|_| {
            usage_error(format!(
                "{} is not valid; run hivesync login again",
                path.display()
            ))
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err.into()),
    }
}

/// Stores `credentials`, readable by their owner only, replacing the file atomically. Returns
/// the file's path.
pub fn store(credentials: &Credentials) -> Result<PathBuf> {
    let dir = config_dir()?;
    if !dir.exists() {
        // Only a directory made here is made private; an existing one is the user's.
        std::fs::create_dir_all(&dir)?;
        set_mode(&dir, 0o700)?;
    }
    let path = dir.join("credentials.json");
    let bytes = serde_json::to_vec_pretty(credentials)
        .map_err(|err| crate::Error::internal("cannot encode credentials").with_source(err))?;
    write_private(&path, &bytes)?;
    Ok(path)
}

/// Writes `bytes` to `path` through a private file beside it and a rename, so `path` is always
/// whole and never readable by others; the staging file is removed if anything fails.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut staging = tempfile::Builder::new()
        .prefix(".hivesync-")
        .permissions(private_file())
        .tempfile_in(dir)?;
    staging.write_all(bytes)?;
    staging.as_file().sync_all()?;
    staging.persist(path).map_err(|err| err.error)?;
    Ok(())
}

fn private_file() -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(0o600)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_write_replaces_whole_and_stays_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing staged is left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
