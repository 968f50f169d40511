//! The `ObjectStore` port: preview bundles and other blobs, streamed.

use std::fmt;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};

use crate::domain::truncate_for_display;
use crate::error::{Error, Result};

/// A stream of chunks, the unit of every object body: bundles can be large, so nothing requires
/// holding a whole object in memory.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send + 'static>>;

/// An object key: `/`-separated segments, validated so that no key can address anything outside
/// the store (no `..`, no absolute paths, no hidden segments, no backslashes or control
/// characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey(String);

impl ObjectKey {
    pub const MAX_LEN: usize = 1024;
    const MAX_SEGMENT_LEN: usize = 255;

    /// Validates `key`.
    ///
    /// Rules: 1 to 1024 bytes; segments separated by single `/` (no leading, trailing or doubled
    /// `/`); each segment at most 255 bytes, not starting with `.` (which rules out `.` and `..`
    /// and keeps the filesystem adapter's own files out of reach); no `\`, NUL or other control
    /// characters.
    pub fn new(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        let reject = |why: &str| {
            Error::validation(format!("invalid object key: {why}"))
                .with_context("key", truncate_for_display(&key))
        };
        if key.is_empty() || key.len() > Self::MAX_LEN {
            return Err(reject("it must be 1 to 1024 bytes"));
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Err(reject("it contains a backslash or a control character"));
        }
        for segment in key.split('/') {
            if segment.is_empty() {
                return Err(reject(
                    "it has an empty segment (leading, trailing or double '/')",
                ));
            }
            if segment.starts_with('.') {
                return Err(reject("a segment starts with '.'"));
            }
            if segment.len() > Self::MAX_SEGMENT_LEN {
                return Err(reject("a segment is longer than 255 bytes"));
            }
        }
        Ok(ObjectKey(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key's segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: ObjectKey,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
    /// An opaque version tag that changes whenever the object is replaced.
    pub etag: Option<String>,
}

/// The answer to a `get`: the object's metadata, the byte range being returned, and the bytes.
pub struct GetResult {
    pub meta: ObjectMeta,
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// What an adapter can do, so callers choose a path up front instead of failing at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `presign_get` returns URLs that clients can fetch directly.
    pub presign: bool,
}

/// Blob storage for preview bundles and other artifacts.
///
/// Adapters: filesystem (embedded default, `DATA_DIR/objects`) and S3-compatible services
/// (aws-sdk-s3 with a custom endpoint and path-style addressing for MinIO, R2, Linode). The
/// conformance suite in `testkit::object_store` checks every point below against each adapter.
///
/// # Behavior
///
/// - `put` streams the body and replaces the object atomically: readers see the old object or the
///   new one, never a part. If the body stream fails or the put is dropped, no object is left
///   behind under the key (and an older object under it is untouched).
/// - `get` of a missing key fails with `NotFound`. With a range, it returns those bytes; an end
///   past the object's size is clamped, a start at or past the size (of a non-empty object) is a
///   `Validation` error.
/// - `head` of a missing key returns `Ok(None)`.
/// - `list(prefix)` returns every object whose key starts with `prefix` (a plain string prefix,
///   not only whole segments), sorted by key; `""` lists everything.
/// - `delete` of a missing key succeeds.
/// - `presign_get` returns a URL valid for `expires_in` when [`Capabilities::presign`] is set, and
///   fails with `Unsupported` otherwise.
/// - Backend failures are `Unavailable` and marked retryable.
#[async_trait]
pub trait ObjectStore: Send + Sync + 'static {
    /// A short name for logs and health output (`filesystem`, `s3`).
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> Capabilities;
    async fn put(&self, key: &ObjectKey, body: ByteStream) -> Result<ObjectMeta>;
    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<GetResult>;
    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>>;
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    async fn delete(&self, key: &ObjectKey) -> Result<()>;
    async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> Result<String>;
}

/// Conveniences over [`ObjectStore`] for small objects. Implemented for every store; do not
/// implement it yourself.
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Stores `bytes` under `key`.
    async fn put_bytes(&self, key: &ObjectKey, bytes: Bytes) -> Result<ObjectMeta> {
        self.put(key, bytes_stream(bytes)).await
    }

    /// Reads a whole object into memory.
    async fn get_bytes(&self, key: &ObjectKey) -> Result<Bytes> {
        let result = self.get(key, None).await?;
        let chunks: Vec<Bytes> = result.body.try_collect().await?;
        Ok(Bytes::from(chunks.concat()))
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}

/// A body of one chunk.
pub fn bytes_stream(bytes: Bytes) -> ByteStream {
    futures::stream::once(async move { Ok(bytes) }).boxed()
}

/// Clamps a requested range to an object of `size` bytes.
pub(crate) fn resolve_range(requested: Option<Range<u64>>, size: u64) -> Result<Range<u64>> {
    match requested {
        None => Ok(0..size),
        Some(range) if range.start > range.end => Err(Error::validation(
            "a byte range must not end before it starts",
        )),
        Some(range) if range.start >= size && size > 0 => Err(Error::validation(
            "the byte range starts past the end of the object",
        )
        .with_context("size", size)),
        Some(range) => Ok(range.start.min(size)..range.end.min(size)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_escape_are_rejected() {
        for good in ["a", "previews/p/j/bundle.zip", "x y/z", "ü/ñ"] {
            assert!(ObjectKey::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/abs",
            "trail/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "a/.hidden",
            "a\\b",
            "nul\0",
            "tab\tx",
        ] {
            assert!(ObjectKey::new(bad).is_err(), "{bad:?}");
        }
        assert!(ObjectKey::new("k".repeat(1025)).is_err());
        assert!(ObjectKey::new(format!("a/{}", "s".repeat(256))).is_err());
    }

    #[test]
    fn ranges_are_clamped() {
        assert_eq!(resolve_range(None, 10).unwrap(), 0..10);
        assert_eq!(resolve_range(Some(2..5), 10).unwrap(), 2..5);
        assert_eq!(resolve_range(Some(8..50), 10).unwrap(), 8..10);
        assert!(resolve_range(Some(10..12), 10).is_err());
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 5..2;
        assert!(resolve_range(Some(reversed), 10).is_err());
        assert_eq!(resolve_range(Some(0..4), 0).unwrap(), 0..0);
    }
}
