//! Receiving an upload's bytes: streamed chunk by chunk to a temporary key in storage, counted
//! against the size limit as they arrive, never held whole in memory.
//!
//! A file lives under `uploads/incoming/` until its upload row is committed, then under
//! `uploads/{id}/`. Whatever goes wrong before that (too large, a broken connection, invalid
//! form fields, the database down, the request cancelled) deletes the partial object, so no
//! object is left without a row. Only a crash of the process itself can leave one behind, and
//! then only under `uploads/incoming/`, where a bucket lifecycle rule can expire it.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::{error::AppError, storage::Storage};

/// Where a file waits until its upload row is committed.
pub fn incoming_key(id: Uuid) -> String {
    format!("uploads/incoming/{id}")
}

/// Where an accepted file is kept.
pub fn original_key(id: Uuid) -> String {
    format!("uploads/{id}/original")
}

/// Where the thumbnail of an image upload is kept.
pub fn thumbnail_key(id: Uuid) -> String {
    format!("uploads/{id}/thumbnail.png")
}

/// A file that arrived whole and sits in storage, not yet recorded.
///
/// Dropping it without [`ReceivedFile::keep`] or [`ReceivedFile::discard`] deletes the object
/// in the background: a request that is cancelled half-way leaves nothing behind.
#[derive(Debug)]
pub struct ReceivedFile {
    id: Uuid,
    key: String,
    size: u64,
    storage: Storage,
    settled: bool,
}

impl ReceivedFile {
    /// The id the upload will have (it names the file's keys).
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Where the file is now.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Its size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves the file to `key`.
    pub(crate) async fn promote(&mut self, key: String) -> Result<(), AppError> {
        self.storage.rename(&self.key, &key).await.map_err(|e| {
            AppError::internal(format!("could not move the upload into place: {e}"))
        })?;
        self.key = key;
        Ok(())
    }

    /// The file now belongs to a committed upload row.
    pub(crate) fn keep(mut self) {
        self.settled = true;
    }

    /// Deletes the file (its upload was refused).
    pub async fn discard(mut self) {
        self.settled = true;
        if let Err(error) = self.storage.delete(&self.key).await {
            tracing::error!(key = %self.key, %error, "could not delete a refused upload");
        }
    }
}

impl Drop for ReceivedFile {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let storage = self.storage.clone();
        let key = std::mem::take(&mut self.key);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = storage.delete(&key).await {
                    tracing::error!(%key, %error, "could not delete an abandoned upload");
                }
            });
        }
    }
}

/// A write in progress. Dropped before it finished (the request was cancelled), it aborts the
/// write in the background so no partial object or multipart upload is left.
struct PendingWrite {
    writer: Option<BufWriter>,
    storage: Storage,
    key: String,
    /// `shutdown` was called: the object may exist, and the writer can no longer be aborted.
    finishing: bool,
}

impl PendingWrite {
    async fn put(&mut self, chunk: Bytes) -> Result<(), AppError> {
        let Some(writer) = self.writer.as_mut() else {
            return Err(AppError::internal("upload writer already closed"));
        };
        writer
            .put(chunk)
            .await
            .map_err(|e| AppError::internal(format!("could not write the upload: {e}")))
    }

    async fn abort(mut self) {
        if let Some(mut writer) = self.writer.take()
            && let Err(error) = writer.abort().await
        {
            tracing::error!(key = %self.key, %error, "could not abort a partial upload");
        }
    }

    async fn finish(mut self) -> Result<(), AppError> {
        let Some(mut writer) = self.writer.take() else {
            return Err(AppError::internal("upload writer already closed"));
        };
        self.finishing = true;
        let result = writer.shutdown().await;
        // Finished (or failed): from here on cleanup means deleting the object, not aborting.
        match result {
            Ok(()) => {
                self.finishing = false;
                Ok(())
            }
            Err(e) => {
                self.finishing = false;
                let _ = self.storage.delete(&self.key).await;
                Err(AppError::internal(format!(
                    "could not store the upload: {e}"
                )))
            }
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let storage = self.storage.clone();
        let key = std::mem::take(&mut self.key);
        if let Some(mut writer) = self.writer.take() {
            runtime.spawn(async move {
                let _ = writer.abort().await;
            });
        } else if self.finishing {
            runtime.spawn(async move {
                let _ = storage.delete(&key).await;
            });
        }
    }
}

/// Streams `chunks` to a temporary key, refusing past `limit` bytes (413) and empty files (422).
/// On any error nothing is left in storage.
pub(crate) async fn receive<S>(
    storage: &Storage,
    limit: u64,
    chunks: S,
) -> Result<ReceivedFile, AppError>
where
    S: Stream<Item = Result<Bytes, AppError>> + Send,
{
    let id = Uuid::now_v7();
    let key = incoming_key(id);
    let mut write = PendingWrite {
        writer: Some(storage.writer(&key)),
        storage: storage.clone(),
        key: key.clone(),
        finishing: false,
    };
    let mut chunks = std::pin::pin!(chunks);
    let mut size: u64 = 0;
    while let Some(chunk) = chunks.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(error) => {
                write.abort().await;
                return Err(error);
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            write.abort().await;
            return Err(AppError::PayloadTooLarge(format!(
                "the file is larger than the upload limit of {limit} bytes"
            )));
        }
        if let Err(error) = write.put(chunk).await {
            write.abort().await;
            return Err(error);
        }
    }
    if size == 0 {
        write.abort().await;
        return Err(AppError::invalid_field("file", "is empty"));
    }
    write.finish().await?;
    Ok(ReceivedFile {
        id,
        key,
        size,
        storage: storage.clone(),
        settled: false,
    })
}
