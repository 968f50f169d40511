//! The example apps under `examples/`, as tests and benchmarks sync them.

use std::path::{Path, PathBuf};

/// `examples/<name>` in this workspace.
pub fn example_app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
}

/// Directories a client never syncs: installed dependencies and build output.
const NOT_SOURCES: &[&str] = &["node_modules", "build", "dist", ".expo"];

/// Decides what a synced file holds: its path and content in, the content to send out (`None`
/// leaves the file out).
pub type Edit<'a> = &'a dyn Fn(&str, Vec<u8>) -> Option<Vec<u8>>;

/// A tar of the sources under `dir`, as a client would sync them, in a stable order. `edit` sees
/// each file's path (relative, `/`-separated) and content, and returns the content to send, or
/// `None` to leave the file out.
pub fn tar_of_sources(dir: &Path, edit: Edit<'_>) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(dir.join(&relative))
            .expect("read the example")
            .map(|e| e.expect("read the example"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if NOT_SOURCES.contains(&name.as_str()) {
                continue;
            }
            let path = relative.join(&name);
            if entry.file_type().expect("read the example").is_dir() {
                pending.push(path);
                continue;
            }
            let key = path.to_string_lossy().into_owned();
            let Some(bytes) = edit(&key, std::fs::read(entry.path()).expect("read the example"))
            else {
                continue;
            };
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            builder
                .append_data(&mut header, &key, bytes.as_slice())
                .expect("append to the tar");
        }
    }
    builder.into_inner().expect("finish the tar")
}
