//! Where slugs are kept. By default in the data directory. Runners on several machines share
//! them, so that a tree built once is deployed everywhere: `--slugs DIR` (a shared file system,
//! read and written in place) or `--slugs s3://BUCKET/PREFIX` (any S3-compatible store; each
//! runner keeps the slugs it uses in its data directory, fetched when missing).
//!
//! An S3 object appears whole or not at all (a single PUT, or a multipart upload completed
//! last), so a runner killed while storing a slug leaves no half slug for another to deploy.
//! The store's address and keys come from the usual `AWS_*` variables (`AWS_ENDPOINT`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`, `AWS_ALLOW_HTTP`); the
//! keys are never logged.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};

/// Parts of this size are uploaded one by one; a smaller slug is one PUT.
const PART: usize = 16 << 20;

/// Slugs shared by the runners of several machines.
#[derive(Debug, Clone)]
pub enum SharedSlugs {
    /// A directory every runner mounts.
    Dir(PathBuf),
    /// An S3-compatible bucket and prefix.
    S3(S3Slugs),
}

#[derive(Debug, thiserror::Error)]
pub enum SlugStoreError {
    #[error("--slugs {url}: {why}")]
    Setting { url: String, why: String },
    #[error("{action} {url}: {source}")]
    Store { action: &'static str, url: String, source: object_store::Error },
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
}

impl SharedSlugs {
    /// `s3://BUCKET/PREFIX` or a directory (made absolute).
    pub fn parse(value: &str) -> Result<SharedSlugs, SlugStoreError> {
        if let Some(rest) = value.strip_prefix("s3://") {
            return S3Slugs::open(rest).map(SharedSlugs::S3);
        }
        if value.contains("://") {
            return Err(SlugStoreError::Setting {
                url: value.to_owned(),
                why: "not a directory nor an s3:// URL".to_owned(),
            });
        }
        let dir = PathBuf::from(value);
        Ok(SharedSlugs::Dir(std::path::absolute(&dir).unwrap_or(dir)))
    }
}

/// A bucket and prefix of an S3-compatible store, with a runtime of its own for the client
/// (the runner's workers are threads).
#[derive(Clone)]
pub struct S3Slugs {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
    runtime: Arc<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Slugs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Slugs({})", self.url())
    }
}

impl S3Slugs {
    /// `BUCKET/PREFIX` (the prefix may be empty), with the store's settings from `AWS_*`.
    fn open(bucket_prefix: &str) -> Result<S3Slugs, SlugStoreError> {
        let (bucket, prefix) = bucket_prefix.split_once('/').unwrap_or((bucket_prefix, ""));
        let url = format!("s3://{bucket_prefix}");
        let setting = |why: String| SlugStoreError::Setting { url: url.clone(), why };
        if bucket.is_empty() {
            return Err(setting("the bucket is missing".to_owned()));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|part| part == "." || part == "..") {
            return Err(setting("the prefix may not hold `.` or `..`".to_owned()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        if std::env::var_os("AWS_DEFAULT_REGION").is_none() && std::env::var_os("AWS_REGION").is_none() {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| setting(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pushgate-s3")
            .enable_all()
            .build()
            .map_err(|e| setting(format!("starting its client: {e}")))?;
        Ok(S3Slugs { store: Arc::new(store), bucket: bucket.to_owned(), prefix, runtime: Arc::new(runtime) })
    }

    /// Where the slug `KEY` is, as a URL to show.
    pub fn url_of(&self, key: &str) -> String {
        format!("{}/{key}.tar.zst", self.url())
    }

    fn url(&self) -> String {
        match self.prefix.as_str() {
            "" => format!("s3://{}", self.bucket),
            prefix => format!("s3://{}/{prefix}", self.bucket),
        }
    }

    fn location(&self, key: &str) -> object_store::path::Path {
        match self.prefix.as_str() {
            "" => object_store::path::Path::from(format!("{key}.tar.zst")),
            prefix => object_store::path::Path::from(format!("{prefix}/{key}.tar.zst")),
        }
    }

    /// Copies slug `key` into `local` if the store has it. False when it has not.
    pub fn fetch(&self, key: &str, local: &Path) -> Result<bool, SlugStoreError> {
        let url = self.url_of(key);
        let store_err = |action| move |source| SlugStoreError::Store { action, url: self.url_of(key), source };
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| SlugStoreError::Io { action, path, source }
        };
        let result = self.runtime.block_on(self.store.get(&self.location(key)));
        let got = match result {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(false),
            Err(source) => return Err(SlugStoreError::Store { action: "fetching", url, source }),
        };
        if let Some(dir) = local.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        }
        // Written aside and renamed: a slug in the local cache is whole.
        // One name per fetch: two workers may fetch the same slug at once.
        static FETCHING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = FETCHING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = local.with_extension(format!("fetching.{}.{n}", std::process::id()));
        let copied = (|| {
            let mut file = std::fs::File::create(&tmp).map_err(io("creating", &tmp))?;
            let mut stream = got.into_stream();
            while let Some(chunk) = self.runtime.block_on(stream.next()) {
                file.write_all(&chunk.map_err(store_err("fetching"))?).map_err(io("writing", &tmp))?;
            }
            file.sync_all().map_err(io("writing", &tmp))?;
            std::fs::rename(&tmp, local).map_err(io("storing", local))
        })();
        if copied.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        copied.map(|()| true)
    }

    /// Stores the slug `key` from `local`.
    pub fn store(&self, key: &str, local: &Path) -> Result<(), SlugStoreError> {
        let store_err = |action| move |source| SlugStoreError::Store { action, url: self.url_of(key), source };
        let io = |action| move |source| SlugStoreError::Io { action, path: local.to_owned(), source };
        let _runtime = self.runtime.enter(); // the upload's parts are tasks on it
        let location = self.location(key);
        let mut file = std::fs::File::open(local).map_err(io("reading"))?;
        let size = file.metadata().map_err(io("reading"))?.len();
        if size <= PART as u64 {
            let mut bytes = Vec::with_capacity(size as usize);
            file.read_to_end(&mut bytes).map_err(io("reading"))?;
            self.runtime.block_on(self.store.put(&location, PutPayload::from(bytes))).map_err(store_err("storing"))?;
            return Ok(());
        }
        let upload = self.runtime.block_on(self.store.put_multipart(&location)).map_err(store_err("storing"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buf = vec![0; PART];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = self.runtime.block_on(writer.abort());
                    return Err(io("reading")(e));
                }
            };
            if let Err(e) = self.runtime.block_on(writer.wait_for_capacity(4)) {
                return Err(store_err("storing")(e));
            }
            writer.write(&buf[..n]);
        }
        // Completing the upload is what makes the object appear, whole.
        self.runtime.block_on(writer.finish()).map_err(store_err("storing"))?;
        Ok(())
    }
}
