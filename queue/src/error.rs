//! The queue's own error: what can fail inside it is PostgreSQL (the outbox) or Redis (the
//! engine). The application converts it into its own error type (`From<QueueError>`), deciding
//! there what a caller is told.

/// A failure of the outbox or the engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// PostgreSQL refused or lost a statement of the outbox.
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or lost a call of the engine.
    #[error("queue redis error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// `Result` with [`QueueError`].
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
