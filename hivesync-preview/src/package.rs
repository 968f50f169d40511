//! Packaging: `bundle.zip` with the bundle, `assets/`, `metadata.json` and `logs.txt`
//! (spec §7.7), written beside its final place and renamed in, so a reader never sees half a zip.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Which caches a build used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheHits {
    /// `store` (the dependency store had it), `installed`, or `repository`.
    pub dependencies: String,
    /// Whether Metro's cache directory for this configuration existed before the build.
    pub metro_warm: bool,
}

/// `metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metadata {
    pub job_id: String,
    pub project_id: String,
    pub platform: String,
    /// RFC 3339.
    pub built_at: String,
    pub token_version: u8,
    pub commit: String,
    pub tree: String,
    pub bundler: String,
    pub bundler_version: String,
    /// The path of the bundle inside the zip.
    pub bundle: String,
    pub bundle_sha256: String,
    pub bundle_bytes: u64,
    pub cache: CacheHits,
    pub timeout: bool,
    /// What the app that runs the bundle must be ([`crate::runtime`]).
    pub runtime: crate::runtime::Runtime,
    /// `npm`, `yarn 1.22.22`, `pnpm 10.34.9`.
    pub package_manager: String,
    /// The lockfile the dependencies came from (`None`: there was none).
    pub lockfile: Option<String>,
    /// What the developer should know about this build (no lockfile, …).
    pub warnings: Vec<String>,
    /// Expo's own `metadata.json`, when Expo built it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expo: Option<serde_json::Value>,
}

/// A written bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packaged {
    pub path: PathBuf,
    pub bytes: u64,
    /// Of the whole zip: the download's ETag.
    pub sha256: String,
}

pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        total += read as u64;
    }
    let digest = hasher.finalize();
    Ok((hex::encode(digest), total))
}

/// Every file under `dir`, relative, sorted (so equal outputs make equal zips).
fn files_under(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        for entry in std::fs::read_dir(dir.join(&relative))? {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                found.push(path);
            }
            // Links in the output are not followed: the bundlers write none.
        }
    }
    found.sort();
    Ok(found)
}

/// Zips the bundler's output `out` with `metadata` and the build log into `zip_path`.
/// `metadata.json` in `out` (Expo writes one) must already have been moved into
/// `metadata.expo` by the caller; any left is replaced.
pub fn package(
    out: &Path,
    metadata: &Metadata,
    log: &Path,
    zip_path: &Path,
) -> std::io::Result<Packaged> {
    let dir = zip_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // Written beside its place and renamed in, so `zip_path` is whole or absent; the staging
    // file goes away with `staging` if anything fails.
    let staging = tempfile::Builder::new()
        .prefix(".bundle-")
        .suffix(".zip")
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .tempfile_in(dir)?;
    {
        let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(staging.as_file()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(0o644);
        let zip_err = |err: zip::result::ZipError| std::io::Error::other(err.to_string());
        for relative in files_under(out)? {
            let name = relative.to_string_lossy().replace('\\', "/");
            if name == "metadata.json" || name == "logs.txt" {
                continue;
            }
            zip.start_file(name, options).map_err(zip_err)?;
            std::io::copy(&mut std::fs::File::open(out.join(&relative))?, &mut zip)?;
        }
        zip.start_file("metadata.json", options).map_err(zip_err)?;
        zip.write_all(&serde_json::to_vec_pretty(metadata).map_err(std::io::Error::other)?)?;
        zip.start_file("logs.txt", options).map_err(zip_err)?;
        std::io::copy(&mut std::fs::File::open(log)?, &mut zip)?;
        let mut writer = zip.finish().map_err(zip_err)?;
        writer.flush()?;
        writer
            .into_inner()
            .map_err(|e| e.into_error())?
            .sync_all()?;
    }
    staging.persist(zip_path).map_err(|err| err.error)?;
    let (sha256, bytes) = sha256_file(zip_path)?;
    Ok(Packaged {
        path: zip_path.to_path_buf(),
        bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> Metadata {
        Metadata {
            job_id: "j".into(),
            project_id: "p".into(),
            platform: "android".into(),
            built_at: "2026-11-26T00:00:00Z".into(),
            token_version: 1,
            commit: "c".repeat(40),
            tree: "t".repeat(40),
            bundler: "metro".into(),
            bundler_version: "react-native@0.88.1".into(),
            bundle: "main.jsbundle".into(),
            bundle_sha256: "0".repeat(64),
            bundle_bytes: 5,
            cache: CacheHits::default(),
            timeout: false,
            runtime: crate::runtime::Runtime::default(),
            package_manager: "npm".into(),
            lockfile: Some("package-lock.json".into()),
            warnings: Vec::new(),
            expo: None,
        }
    }

    #[test]
    fn the_zip_holds_the_bundle_assets_metadata_and_log() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("assets/img")).unwrap();
        std::fs::write(out.join("main.jsbundle"), "var a;").unwrap();
        std::fs::write(out.join("assets/img/hive.png"), [137u8, 80, 78, 71]).unwrap();
        std::fs::write(out.join("metadata.json"), "{\"stale\": true}").unwrap();
        let log = dir.path().join("build.log");
        std::fs::write(&log, "[0.1s] built\n").unwrap();
        let zip_path = dir.path().join("previews/job/bundle.zip");
        let packaged = package(&out, &metadata(), &log, &zip_path).unwrap();
        assert_eq!(packaged.sha256, sha256_file(&zip_path).unwrap().0);

        let mut archive = zip::ZipArchive::new(std::fs::File::open(&zip_path).unwrap()).unwrap();
        let mut names: Vec<String> = archive
            .file_names()
            .map(|n| n.unwrap().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                "assets/img/hive.png",
                "logs.txt",
                "main.jsbundle",
                "metadata.json"
            ]
        );
        let mut json = String::new();
        archive
            .by_name("metadata.json")
            .unwrap()
            .read_to_string(&mut json)
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(json["job_id"], "j");
        assert_eq!(json["token_version"], 1);
        assert!(json.get("stale").is_none(), "ours replaces the bundler's");
        let mut text = String::new();
        archive
            .by_name("logs.txt")
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "[0.1s] built\n");
        // No staging file is left beside it.
        let beside: Vec<_> = std::fs::read_dir(zip_path.parent().unwrap())
            .unwrap()
            .collect();
        assert_eq!(beside.len(), 1);
    }
}
