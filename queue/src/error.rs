//! The queue's own error: what can fail inside it is PostgreSQL (the outbox), Redis (the
//! engine) or a payload that is not JSON. The application converts it into its own error type
//! (`From<QueueError>`), deciding there what a caller is told.

/// A failure of the outbox or the engine.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// PostgreSQL refused or lost a statement of the outbox.
    #[error("outbox database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or lost a call of the engine.
    #[error("queue redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A job's payload could not be written as JSON (a map with non-string keys, a failing
    /// `Serialize` impl).
    #[error("job payload cannot be serialised: {0}")]
    Payload(#[from] serde_json::Error),
}

/// `Result` with [`QueueError`].
pub type Result<T, E = QueueError> = std::result::Result<T, E>;
