//! The S3 object store (`aws-sdk-s3`). Credentials come from the standard AWS
//! chain (env, profile, web identity, IMDS); only the flusher ever holds them.

use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, Delete, ObjectIdentifier, ServerSideEncryption};
use aws_sdk_s3::Client;
use bytes::Bytes;

use crate::object_store::{ObjectInfo, ObjectStore, StoreError};

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub bucket: String,
    pub region: String,
    /// Custom endpoint (MinIO and other S3-compatible servers).
    pub endpoint: Option<String>,
    pub path_style: bool,
    /// Attempts per request, including the first (retries 5xx, throttling, timeouts).
    pub max_attempts: u32,
    /// Upper bound for one attempt; the whole operation gets `max_attempts` of them.
    pub attempt_timeout: Duration,
    /// Encrypt segments with this KMS key (SSE-KMS); None: the bucket's default.
    pub kms_key_id: Option<String>,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    kms_key_id: Option<String>,
    endpoint: String,
}

impl S3Store {
    pub async fn connect(s: &S3Settings) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(s.region.clone()))
            .load()
            .await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(s.path_style)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(s.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(50))
                    .with_max_backoff(Duration::from_secs(2)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(s.attempt_timeout)
                    .operation_timeout(s.attempt_timeout * s.max_attempts.max(1))
                    .build(),
            );
        if let Some(ep) = &s.endpoint {
            b = b.endpoint_url(ep);
        }
        Self {
            client: Client::from_conf(b.build()),
            bucket: s.bucket.clone(),
            kms_key_id: s.kms_key_id.clone(),
            endpoint: s.endpoint.clone().unwrap_or_else(|| "aws".into()),
        }
    }

    /// Creates the bucket if it does not exist (dev and test setups).
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.code().unwrap_or_default().to_string();
                if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
                    Ok(())
                } else {
                    Err(map_err(&self.bucket, e))
                }
            }
        }
    }
}

fn map_err<E>(key: &str, e: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = match &e {
        SdkError::ServiceError(se) => Some(se.raw().status().as_u16()),
        _ => None,
    };
    let code = e.code().unwrap_or_default().to_string();
    match (&e, status, code.as_str()) {
        (_, Some(412), _) | (_, _, "PreconditionFailed") | (_, _, "ConditionalRequestConflict") => {
            StoreError::AlreadyExists(key.to_string())
        }
        (_, Some(404), _) | (_, _, "NoSuchKey") | (_, _, "NotFound") => {
            StoreError::NotFound(key.to_string())
        }
        (SdkError::ServiceError(_), Some(s), _) if s < 500 && s != 429 => StoreError::Other(
            format!("{key}: {code} {}", e.message().unwrap_or("request refused")),
        ),
        _ => StoreError::Unavailable(format!("{key}: {}", describe_sdk_error(&e))),
    }
}

fn describe_sdk_error<E>(e: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::ServiceError(se) => format!(
            "{} {}",
            se.err().code().unwrap_or("error"),
            se.err().message().unwrap_or("")
        ),
        SdkError::TimeoutError(_) => "request timed out".into(),
        SdkError::DispatchFailure(d) => format!("connection failed: {d:?}"),
        other => other.to_string(),
    }
}

async fn read_body(key: &str, body: ByteStream) -> Result<Bytes, StoreError> {
    body.collect()
        .await
        .map(|b| b.into_bytes())
        .map_err(|e| StoreError::Unavailable(format!("{key}: reading body: {e}")))
}

impl S3Store {
    /// One PutObject with what every upload shares. The body is protected by
    /// a CRC-32C checksum that the server verifies (and the segment's own
    /// CRC-32C on every read), so the SigV4 payload hash is not computed: on
    /// both sides it cost more CPU than the rest of an upload together.
    async fn put(
        &self,
        key: &str,
        body: Bytes,
        condition: impl FnOnce(PutObjectFluentBuilder) -> PutObjectFluentBuilder,
    ) -> Result<(), SdkError<aws_sdk_s3::operation::put_object::PutObjectError, HttpResponse>> {
        let mut put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .checksum_algorithm(ChecksumAlgorithm::Crc32C)
            .body(ByteStream::from(body));
        if let Some(kms) = &self.kms_key_id {
            put = put
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms);
        }
        condition(put)
            .customize()
            .disable_payload_signing()
            .send()
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_if_absent(&self, key: &str, body: Bytes) -> Result<(), StoreError> {
        self.put(key, body, |put| put.if_none_match("*"))
            .await
            .map_err(|e| map_err(key, e))
    }

    async fn put_replacing(
        &self,
        key: &str,
        body: Bytes,
        expected_etag: Option<&str>,
    ) -> Result<(), StoreError> {
        let put = self.put(key, body, |put| {
            put.set_if_match(expected_etag.map(str::to_string))
        });
        match put.await.map_err(|e| map_err(key, e)) {
            // 412 on If-Match means the object changed, not that it exists.
            Err(StoreError::AlreadyExists(k)) => Err(StoreError::Changed(k)),
            other => other.map(|_| ()),
        }
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| map_err(key, e))?;
        read_body(key, out.body).await
    }

    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| map_err(key, e))?;
        read_body(key, out.body).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(prefix, e))?;
            for o in page.contents() {
                if let Some(k) = o.key() {
                    out.push(ObjectInfo {
                        key: k.to_string(),
                        size: o.size().unwrap_or(0).max(0) as u64,
                        last_modified_ms: o
                            .last_modified()
                            .and_then(|t| t.to_millis().ok())
                            .unwrap_or(0),
                        etag: o.e_tag().unwrap_or_default().to_string(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        // DeleteObjects takes at most 1000 keys per request.
        for chunk in keys.chunks(1000) {
            let ids = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(k).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| StoreError::Other(e.to_string()))?;
            let delete = Delete::builder()
                .set_objects(Some(ids))
                .quiet(true)
                .build()
                .map_err(|e| StoreError::Other(e.to_string()))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| map_err("delete", e))?;
            if let Some(err) = out.errors().first() {
                return Err(StoreError::Unavailable(format!(
                    "deleting {}: {}",
                    err.key().unwrap_or("?"),
                    err.message().unwrap_or("failed")
                )));
            }
        }
        Ok(())
    }

    async fn probe(&self) -> Result<(), StoreError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| map_err(&self.bucket, e))
    }

    fn describe(&self) -> String {
        format!("s3://{} (endpoint {})", self.bucket, self.endpoint)
    }
}
