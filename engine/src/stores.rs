//! Object stores by URL. `s3://bucket/…` (and `s3a://`) goes through
//! object_store's S3 client, built the first time a bucket is used and
//! kept; everything else is DataFusion's default registry (local files).
//!
//! Each process configures S3 from its own environment, never from the
//! client's: the standard `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, …) and, for what they leave unset, the shared
//! profile files (`~/.aws/credentials` and `~/.aws/config`, profile
//! `AWS_PROFILE` or `default`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};
use url::Url;

mod profile;

/// The object-store URL `location` names (`s3://bucket/key`), if it names
/// one; a local path, or a `file://` URL, names none.
pub fn object_url(location: &str) -> Option<&str> {
    (location.contains("://") && !location.starts_with("file://")).then_some(location)
}

/// A local `location` as a path: a `file://` URL's path, else as given.
pub fn local_path(location: &str) -> &str {
    location.strip_prefix("file://").unwrap_or(location)
}

/// A failed request is retried this often. S3 answers transient errors
/// (503 SlowDown) that a few retries absorb; a wrong endpoint or a dead
/// server must fail within seconds, not after object_store's default of
/// ten retries over three minutes.
const MAX_RETRIES: usize = 3;
/// The most time spent retrying one request.
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to open: an unreachable endpoint fails
/// after this, times the attempts.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one request may take in all; a Parquet row group of a large
/// file is one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// The object-store registry of every tone session.
#[derive(Debug, Default)]
pub struct ObjectStores {
    registered: DefaultObjectStoreRegistry,
    /// S3 stores built so far, by bucket.
    buckets: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl ObjectStores {
    pub fn new() -> Self {
        Self::default()
    }

    fn s3_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let bucket = url
            .host_str()
            .filter(|bucket| !bucket.is_empty())
            .ok_or_else(|| {
                DataFusionError::Plan(format!("'{url}' names no bucket (s3://BUCKET/prefix)"))
            })?;
        let mut buckets = self
            .buckets
            .lock()
            .map_err(|_| DataFusionError::Internal("the object-store cache is poisoned".into()))?;
        if let Some(store) = buckets.get(bucket) {
            return Ok(Arc::clone(store));
        }
        let store: Arc<dyn ObjectStore> =
            Arc::new(s3_builder(bucket).build().map_err(|error| {
                DataFusionError::Plan(format!("cannot reach '{url}': {error}"))
            })?);
        buckets.insert(bucket.to_string(), Arc::clone(&store));
        Ok(store)
    }
}

/// S3 for `bucket`, configured from this process's environment and
/// profile files, with bounded retries and timeouts.
fn s3_builder(bucket: &str) -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::from_env();
    for (key, value) in profile::settings_from_env() {
        if builder.get_config_value(&key).is_none() {
            builder = builder.with_config(key, value);
        }
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .is_none()
    {
        if let Some(region) = builder.get_config_value(&AmazonS3ConfigKey::DefaultRegion) {
            builder = builder.with_region(region);
        }
    }
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: MAX_RETRIES,
        retry_timeout: RETRY_TIMEOUT,
    };
    // Timeouts go in as settings, only where the environment set none:
    // replacing the client options would drop the ones it did set
    // (AWS_ALLOW_HTTP among them).
    for (key, value) in [
        (ClientConfigKey::ConnectTimeout, CONNECT_TIMEOUT),
        (ClientConfigKey::Timeout, REQUEST_TIMEOUT),
    ] {
        let key = AmazonS3ConfigKey::Client(key);
        if builder.get_config_value(&key).is_none() {
            builder = builder.with_config(key, format!("{}s", value.as_secs()));
        }
    }
    builder.with_bucket_name(bucket).with_retry(retry)
}

impl ObjectStoreRegistry for ObjectStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.registered.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.registered.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        if let Ok(store) = self.registered.get_store(url) {
            return Ok(store);
        }
        match url.scheme() {
            "s3" | "s3a" => self.s3_store(url),
            _ => self.registered.get_store(url),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gets_one_store_and_a_url_without_one_is_refused() {
        let stores = ObjectStores::new();
        let url = |text: &str| Url::parse(text).expect("url");
        let first = stores.get_store(&url("s3://data/a/")).expect("store");
        let again = stores
            .get_store(&url("s3://data/b/x.parquet"))
            .expect("store");
        assert!(Arc::ptr_eq(&first, &again));
        let other = stores.get_store(&url("s3://other/")).expect("store");
        assert!(!Arc::ptr_eq(&first, &other));
        let error = stores
            .get_store(&url("s3:///prefix"))
            .expect_err("no bucket");
        assert!(error.to_string().contains("names no bucket"), "{error}");
        assert!(stores.get_store(&url("file:///tmp")).is_ok());
        assert!(stores.get_store(&url("gs://bucket/")).is_err());
    }
}
