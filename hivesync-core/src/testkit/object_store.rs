//! The `ObjectStore` conformance suite.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind};
use crate::ports::{ByteStream, ObjectKey, ObjectStore, ObjectStoreExt};

/// Runs every point of [`ObjectStore`]'s `# Behavior` list against `store`. Every key is placed
/// under `namespace` (a unique segment per run) so that runs sharing a bucket never meet.
pub async fn run(store: Arc<dyn ObjectStore>, namespace: &str) {
    let ns = Namespace(namespace.trim_matches('/').to_owned());
    round_trip(&*store, &ns).await;
    empty_object(&*store, &ns).await;
    overwrite_replaces(&*store, &ns).await;
    large_streaming_put(&*store, &ns).await;
    failed_put_leaves_nothing(&*store, &ns).await;
    missing_keys(&*store, &ns).await;
    ranges(&*store, &ns).await;
    listing(&*store, &ns).await;
    presigning(&*store, &ns).await;
}

struct Namespace(String);

impl Namespace {
    fn key(&self, rest: &str) -> ObjectKey {
        ObjectKey::new(format!("{}/{rest}", self.0)).expect("valid test key")
    }

    fn prefix(&self, rest: &str) -> String {
        format!("{}/{rest}", self.0)
    }
}

/// A body of `total` pseudo-random bytes in chunks of `chunk`, with its sha256.
fn patterned_body(total: usize, chunk: usize) -> (ByteStream, [u8; 32]) {
    let data: Vec<u8> = (0..total)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect();
    let digest: [u8; 32] = Sha256::digest(&data).into();
    let chunks: Vec<crate::error::Result<Bytes>> = data
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (futures::stream::iter(chunks).boxed(), digest)
}

/// A body that yields `good_bytes` and then fails.
fn failing_body(good_bytes: usize) -> ByteStream {
    let (good, _) = patterned_body(good_bytes, 1 << 20);
    good.chain(futures::stream::once(async {
        Err(Error::unavailable("the client went away"))
    }))
    .boxed()
}

async fn read_all(store: &dyn ObjectStore, key: &ObjectKey) -> Vec<u8> {
    store.get_bytes(key).await.expect("get").to_vec()
}

async fn round_trip(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("round/trip.bin");
    let meta = store
        .put_bytes(&key, Bytes::from_static(b"hello, hive"))
        .await
        .expect("put");
    assert_eq!((meta.key.clone(), meta.size), (key.clone(), 11));
    assert_eq!(read_all(store, &key).await, b"hello, hive");
    let head = store.head(&key).await.unwrap().expect("head after put");
    assert_eq!(head.size, 11);
    assert_eq!(head.etag, meta.etag, "put and head report the same version");
    let got = store.get(&key, None).await.unwrap();
    assert_eq!((got.range.clone(), got.meta.size), (0..11, 11));
    store.delete(&key).await.unwrap();
    assert!(store.head(&key).await.unwrap().is_none(), "deleted");
}

async fn empty_object(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("empty");
    let meta = store
        .put(&key, futures::stream::empty().boxed())
        .await
        .expect("empty put");
    assert_eq!(meta.size, 0);
    assert!(read_all(store, &key).await.is_empty());
    store.delete(&key).await.unwrap();
}

async fn overwrite_replaces(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("overwrite");
    let first = store
        .put_bytes(&key, Bytes::from_static(b"version one"))
        .await
        .unwrap();
    let second = store
        .put_bytes(&key, Bytes::from_static(b"v2"))
        .await
        .unwrap();
    assert_eq!(read_all(store, &key).await, b"v2");
    assert_eq!(second.size, 2);
    assert_ne!(first.etag, second.etag, "a replaced object gets a new etag");
    store.delete(&key).await.unwrap();
}

async fn large_streaming_put(store: &dyn ObjectStore, ns: &Namespace) {
    // Larger than one S3 part, in chunks that do not divide the part size.
    let key = ns.key("large/bundle.zip");
    let total = 17 * 1024 * 1024 + 123;
    let (body, digest) = patterned_body(total, 700 * 1024 + 1);
    let meta = store.put(&key, body).await.expect("large put");
    assert_eq!(meta.size, total as u64);
    let got = store.get(&key, None).await.unwrap();
    let mut hasher = Sha256::new();
    let mut chunks = got.body;
    let mut read = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("read chunk");
        read += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(read, total);
    assert_eq!(
        <[u8; 32]>::from(hasher.finalize()),
        digest,
        "content survives the round trip"
    );
    store.delete(&key).await.unwrap();
}

async fn failed_put_leaves_nothing(store: &dyn ObjectStore, ns: &Namespace) {
    // A body that fails early (single-request path) and one that fails after several MiB (the
    // multipart path on S3).
    for good_bytes in [10, 9 * 1024 * 1024] {
        let fresh = ns.key(&format!("failed/fresh-{good_bytes}"));
        let err = store
            .put(&fresh, failing_body(good_bytes))
            .await
            .expect_err("the body failed");
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        assert!(
            store.head(&fresh).await.unwrap().is_none(),
            "no object after a failed put"
        );

        let existing = ns.key(&format!("failed/existing-{good_bytes}"));
        store
            .put_bytes(&existing, Bytes::from_static(b"keep me"))
            .await
            .unwrap();
        store
            .put(&existing, failing_body(good_bytes))
            .await
            .expect_err("the body failed");
        assert_eq!(
            read_all(store, &existing).await,
            b"keep me",
            "the old object is untouched"
        );
        store.delete(&existing).await.unwrap();
    }
    assert!(
        store.list(&ns.prefix("failed/")).await.unwrap().is_empty(),
        "no leftovers"
    );
}

async fn missing_keys(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("missing/never-written");
    assert_eq!(
        store.get(&key, None).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(store.head(&key).await.unwrap().is_none());
    store
        .delete(&key)
        .await
        .expect("deleting a missing key succeeds");
}

async fn ranges(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("ranges/digits");
    store
        .put_bytes(&key, Bytes::from_static(b"0123456789"))
        .await
        .unwrap();
    let key = &key;
    let read_range = |range: std::ops::Range<u64>| async move {
        let got = store.get(key, Some(range)).await?;
        let returned = got.range.clone();
        let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(got.body).await?;
        Ok::<_, Error>((returned, chunks.concat()))
    };
    assert_eq!(read_range(2..5).await.unwrap(), (2..5, b"234".to_vec()));
    assert_eq!(read_range(0..1).await.unwrap(), (0..1, b"0".to_vec()));
    assert_eq!(
        read_range(7..100).await.unwrap(),
        (7..10, b"789".to_vec()),
        "end is clamped"
    );
    let err = store.get(key, Some(10..12)).await.unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Validation,
        "a range starting at the end"
    );
    store.delete(key).await.unwrap();
}

async fn listing(store: &dyn ObjectStore, ns: &Namespace) {
    let keys = [
        "list/a/b1",
        "list/a/b2",
        "list/a/c",
        "list/ab",
        "list/z/deep/er",
    ];
    for key in keys {
        store
            .put_bytes(&ns.key(key), Bytes::from(key.to_owned()))
            .await
            .unwrap();
    }
    let list = |prefix: &'static str| async move {
        store
            .list(&ns.prefix(prefix))
            .await
            .unwrap()
            .into_iter()
            .map(|m| {
                m.key
                    .as_str()
                    .trim_start_matches(&format!("{}/", ns.0))
                    .to_owned()
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        list("list/").await,
        keys,
        "everything under a prefix, sorted"
    );
    assert_eq!(
        list("list/a/b").await,
        ["list/a/b1", "list/a/b2"],
        "a string prefix, not a segment"
    );
    assert_eq!(
        list("list/a").await,
        ["list/a/b1", "list/a/b2", "list/a/c", "list/ab"]
    );
    assert_eq!(list("list/z/").await, ["list/z/deep/er"]);
    assert!(list("list/nothing").await.is_empty());
    let sizes: Vec<u64> = store
        .list(&ns.prefix("list/a/"))
        .await
        .unwrap()
        .iter()
        .map(|m| m.size)
        .collect();
    assert_eq!(sizes, [9, 9, 8]);
    for key in keys {
        store.delete(&ns.key(key)).await.unwrap();
    }
    assert!(list("list/").await.is_empty(), "all deleted");
}

async fn presigning(store: &dyn ObjectStore, ns: &Namespace) {
    let key = ns.key("presign/object.txt");
    if !store.capabilities().presign {
        let err = store
            .presign_get(&key, Duration::from_secs(60))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported);
        return;
    }
    store
        .put_bytes(&key, Bytes::from_static(b"presigned body"))
        .await
        .unwrap();
    let url = store
        .presign_get(&key, Duration::from_secs(60))
        .await
        .expect("presign");
    let response = reqwest::get(&url).await.expect("fetch presigned URL");
    assert!(
        response.status().is_success(),
        "presigned GET answered {}",
        response.status()
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"presigned body");
    store.delete(&key).await.unwrap();
}
