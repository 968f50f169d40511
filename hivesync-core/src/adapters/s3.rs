//! The S3-compatible `ObjectStore` (AWS S3, Cloudflare R2, Linode, MinIO, ...), on aws-sdk-s3.
//!
//! With a custom endpoint, requests use path-style addressing (`endpoint/bucket/key`), which every
//! S3-compatible server accepts. Bodies are streamed: an object that fits in one part goes up as a
//! single `PutObject`; a larger one as a multipart upload, which S3 only makes visible when it is
//! completed, and which is aborted when the body fails or the put is dropped, so no partial object
//! is ever left behind.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::config::S3Config;
use crate::error::{Error, ErrorKind, Result};
use crate::ports::object_store::resolve_range;
use crate::ports::{ByteStream, Capabilities, GetResult, ObjectKey, ObjectMeta, ObjectStore};

/// Size of each multipart part; S3 requires at least 5 MiB for all parts but the last.
const PART_SIZE: usize = 8 * 1024 * 1024;

/// An S3 bucket, optionally under a key prefix.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
    bucket: String,
    /// Empty, or ends with `/`.
    prefix: String,
}

impl S3ObjectStore {
    /// Builds a client from `config`. Static credentials are used when given, otherwise the
    /// standard AWS chain (environment, profile, instance metadata).
    pub async fn connect(config: &S3Config) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(Region::new(config.region.clone()));
        if let Some((access_key, secret_key)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key,
                secret_key.expose(),
                None,
                None,
                "hivesync-config",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint).force_path_style(true);
        }
        Ok(S3ObjectStore {
            client: Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
            prefix: if config.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", config.prefix)
            },
        })
    }

    fn full_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Checks that the bucket exists and the credentials can reach it.
    pub async fn check_bucket(&self) -> Result<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| sdk_error("cannot reach the bucket", None, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        first_part: Bytes,
        body: ByteStream,
    ) -> Result<()> {
        let full_key = self.full_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&full_key)
            .send()
            .await
            .map_err(|e| sdk_error("cannot start a multipart upload", Some(key), e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| Error::unavailable("S3 returned no upload id"))?
            .to_owned();
        // Aborts the upload if this future is dropped before it finishes.
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: full_key.clone(),
            upload_id: Some(upload_id.clone()),
        };
        let uploaded = self
            .upload_parts(key, &full_key, &upload_id, first_part, body)
            .await;
        guard.upload_id = None;
        if let Err(err) = uploaded {
            // A failed upload is aborted before the error is returned, so the caller never sees
            // a failure while parts still linger.
            if let Err(abort) =
                abort_upload(&self.client, &self.bucket, &full_key, &upload_id).await
            {
                tracing::warn!(error = %abort, key = %key, "cannot abort a failed multipart upload");
            }
            return Err(err);
        }
        Ok(())
    }

    /// Uploads every part and completes the upload.
    async fn upload_parts(
        &self,
        key: &ObjectKey,
        full_key: &str,
        upload_id: &str,
        first_part: Bytes,
        mut body: ByteStream,
    ) -> Result<()> {
        let mut parts = Vec::new();
        let mut pending = Some(first_part);
        let mut buffer = BytesMut::new();
        loop {
            let part = match pending.take() {
                Some(part) => Some(part),
                None => fill_part(&mut body, &mut buffer).await?,
            };
            let Some(part) = part else { break };
            let number = parts.len() as i32 + 1;
            let uploaded = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(full_key)
                .upload_id(upload_id)
                .part_number(number)
                .body(SdkByteStream::from(part))
                .send()
                .await
                .map_err(|e| sdk_error("cannot upload a part", Some(key), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error("cannot complete a multipart upload", Some(key), e))?;
        Ok(())
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) -> Result<()> {
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await
        .map_err(|e| {
            Error::unavailable("cannot abort a multipart upload")
                .with_source(DisplayErrorContext(e).to_string())
        })?;
    Ok(())
}

/// Aborts an unfinished multipart upload when the put is dropped (cancelled) midway.
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        runtime.spawn(async move {
            if let Err(err) = abort_upload(&client, &bucket, &key, &upload_id).await {
                tracing::warn!(error = %err, "cannot abort a cancelled multipart upload");
            }
        });
    }
}

/// Reads from `body` until `buffer` holds a whole part or the body ends. Returns `None` when the
/// body is exhausted and nothing is buffered.
async fn fill_part(body: &mut ByteStream, buffer: &mut BytesMut) -> Result<Option<Bytes>> {
    while buffer.len() < PART_SIZE {
        match body.next().await {
            Some(chunk) => buffer.extend_from_slice(&chunk?),
            None => break,
        }
    }
    if buffer.is_empty() {
        return Ok(None);
    }
    let take = buffer.len().min(PART_SIZE);
    Ok(Some(buffer.split_to(take).freeze()))
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { presign: true }
    }

    async fn put(&self, key: &ObjectKey, mut body: ByteStream) -> Result<ObjectMeta> {
        let mut buffer = BytesMut::new();
        let first = fill_part(&mut body, &mut buffer).await?;
        let has_more = if buffer.is_empty() {
            // The first part may be exactly PART_SIZE with more to come; peek for one more chunk.
            match body.next().await {
                Some(chunk) => {
                    buffer.extend_from_slice(&chunk?);
                    true
                }
                None => false,
            }
        } else {
            true
        };
        match (first, has_more) {
            (first, false) => {
                let bytes = first.unwrap_or_default();
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(self.full_key(key))
                    .content_length(bytes.len() as i64)
                    .body(SdkByteStream::from(bytes))
                    .send()
                    .await
                    .map_err(|e| sdk_error("cannot put object", Some(key), e))?;
            }
            (Some(first), true) => {
                let rest = futures::stream::once(async move { Ok(buffer.freeze()) })
                    .chain(body)
                    .boxed();
                self.put_multipart(key, first, rest).await?;
            }
            (None, true) => unreachable!("a non-empty buffer always yields a first part"),
        }
        self.head(key)
            .await?
            .ok_or_else(|| Error::unavailable("the object is not visible right after its put"))
    }

    async fn get(&self, key: &ObjectKey, range: Option<Range<u64>>) -> Result<GetResult> {
        // The range is resolved against the current size first, so that every adapter clamps and
        // rejects ranges the same way.
        let meta = self.head(key).await?.ok_or_else(|| not_found(key))?;
        let range = resolve_range(range, meta.size)?;
        if range.is_empty() {
            return Ok(GetResult {
                meta,
                range,
                body: futures::stream::empty().boxed(),
            });
        }
        let mut request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key));
        if range != (0..meta.size) {
            request = request.range(format!("bytes={}-{}", range.start, range.end - 1));
        }
        // Pin the version we sized the range against.
        if let Some(etag) = &meta.etag {
            request = request.if_match(etag);
        }
        let output = request.send().await.map_err(|e| {
            if e.as_service_error().is_some_and(|s| s.is_no_such_key()) {
                not_found(key)
            } else {
                sdk_error("cannot get object", Some(key), e)
            }
        })?;
        let body = futures::stream::unfold(output.body, |mut body| async move {
            body.next().await.map(|chunk| {
                let chunk = chunk.map_err(|e| {
                    Error::unavailable("reading an object from S3 failed").with_source(e)
                });
                (chunk, body)
            })
        })
        .boxed();
        Ok(GetResult { meta, range, body })
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
        {
            Ok(output) => Ok(Some(ObjectMeta {
                key: key.clone(),
                size: output.content_length().unwrap_or(0).max(0) as u64,
                last_modified: output
                    .last_modified()
                    .and_then(to_chrono)
                    .unwrap_or_default(),
                etag: output.e_tag().map(str::to_owned),
            })),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_not_found()) => Ok(None),
            Err(e) => Err(sdk_error("cannot read object metadata", Some(key), e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let mut found = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{}", self.prefix, prefix))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| sdk_error("cannot list objects", None, e))?;
            for object in page.contents() {
                let Some(full_key) = object.key() else {
                    continue;
                };
                let Some(relative) = full_key.strip_prefix(&self.prefix) else {
                    continue;
                };
                // Keys written by something other than HiveSync may not be valid ObjectKeys;
                // they are not ours to report.
                let Ok(key) = ObjectKey::new(relative) else {
                    continue;
                };
                found.push(ObjectMeta {
                    key,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object
                        .last_modified()
                        .and_then(to_chrono)
                        .unwrap_or_default(),
                    etag: object.e_tag().map(str::to_owned),
                });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .send()
            .await
            .map_err(|e| sdk_error("cannot delete object", Some(key), e))?;
        Ok(())
    }

    async fn presign_get(&self, key: &ObjectKey, expires_in: Duration) -> Result<String> {
        let config = PresigningConfig::expires_in(expires_in)
            .map_err(|e| Error::validation("invalid presign lifetime").with_source(e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.full_key(key))
            .presigned(config)
            .await
            .map_err(|e| sdk_error("cannot presign a URL", Some(key), e))?;
        Ok(request.uri().to_owned())
    }
}

fn to_chrono(time: &aws_sdk_s3::primitives::DateTime) -> Option<DateTime<Utc>> {
    DateTime::<Utc>::from_timestamp(time.secs(), time.subsec_nanos())
}

fn not_found(key: &ObjectKey) -> Error {
    Error::not_found("no such object").with_context("key", key)
}

/// Converts an SDK error into ours, by HTTP status where there is one.
fn sdk_error<E, R>(what: &'static str, key: Option<&ObjectKey>, err: SdkError<E, R>) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    SdkError<E, R>: HasStatus,
{
    let kind = match (&err, err.status()) {
        (SdkError::TimeoutError(_) | SdkError::DispatchFailure(_), _) => ErrorKind::Unavailable,
        (_, Some(404)) => ErrorKind::NotFound,
        (_, Some(412)) => ErrorKind::Conflict,
        (_, Some(416)) => ErrorKind::Validation,
        // Wrong credentials or a missing permission will not fix themselves.
        (_, Some(401 | 403)) => ErrorKind::Internal,
        _ => ErrorKind::Unavailable,
    };
    let mut error = Error::new(kind, what)
        .with_context("backend", "s3")
        .with_source(DisplayErrorContext(err).to_string());
    if let Some(key) = key {
        error = error.with_context("key", key);
    }
    error
}

/// The HTTP status of an SDK error's raw response, when there was one.
trait HasStatus {
    fn status(&self) -> Option<u16>;
}

impl<E> HasStatus for SdkError<E, aws_sdk_s3::config::http::HttpResponse> {
    fn status(&self) -> Option<u16> {
        self.raw_response().map(|r| r.status().as_u16())
    }
}
