//! File storage for report files and uploads, behind one interface (`object_store`): a local
//! folder by default (`STORAGE_DIR`), or any S3-compatible bucket with `STORAGE_URL=s3://...`
//! (credentials and endpoint from the usual `AWS_*` variables).
//!
//! Writes stream in parts ([`Storage::writer`]) and reads stream out ([`Storage::read`]), so a
//! 100 MB report never sits in memory.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{
    ObjectStore, ObjectStoreExt, buffered::BufWriter, local::LocalFileSystem, path::Path,
};

use crate::config::StorageConfig;

/// A place to keep files.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    description: String,
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("at", &self.description)
            .finish()
    }
}

/// A file's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Size in bytes.
    pub size: u64,
}

impl Storage {
    /// The store configured by `STORAGE_URL` / `STORAGE_DIR`.
    pub fn from_config(config: &StorageConfig) -> anyhow::Result<Self> {
        if let Some(url) = &config.url {
            let parsed = url::Url::parse(url)?;
            let options: Vec<(String, String)> = std::env::vars()
                .filter(|(k, _)| k.starts_with("AWS_"))
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            let (store, prefix) = object_store::parse_url_opts(&parsed, options)?;
            let store: Arc<dyn ObjectStore> = if prefix.as_ref().is_empty() {
                Arc::from(store)
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
            };
            return Ok(Self {
                store,
                description: url.clone(),
            });
        }
        Self::local(&config.dir)
    }

    /// A local folder (created if missing).
    pub fn local(dir: &std::path::Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self {
            store: Arc::new(LocalFileSystem::new_with_prefix(dir)?),
            description: dir.display().to_string(),
        })
    }

    /// A streaming writer for `key`; call `shutdown` (AsyncWriteExt) to finish the upload.
    pub fn writer(&self, key: &str) -> BufWriter {
        BufWriter::new(self.store.clone(), Path::from(key))
    }

    /// The contents of `key` as a byte stream, and its size.
    pub async fn read(
        &self,
        key: &str,
    ) -> object_store::Result<(StoredFile, BoxStream<'static, object_store::Result<Bytes>>)> {
        let result = self.store.get(&Path::from(key)).await?;
        let size = result.meta.size;
        Ok((StoredFile { size }, result.into_stream()))
    }

    /// The whole contents of `key` (small files only: images, not reports).
    pub async fn read_all(&self, key: &str) -> object_store::Result<Bytes> {
        self.store.get(&Path::from(key)).await?.bytes().await
    }

    /// Writes a small file in one go.
    pub async fn put(&self, key: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&Path::from(key), bytes.into())
            .await
            .map(|_| ())
    }

    /// Moves a file to another key (replacing what is there). Local folders rename; object stores
    /// copy then delete.
    pub async fn rename(&self, from: &str, to: &str) -> object_store::Result<()> {
        self.store.rename(&Path::from(from), &Path::from(to)).await
    }

    /// Deletes a file (missing files are fine).
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
