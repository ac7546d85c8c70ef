//! Events of the users domain.

use serde::Serialize;
use uuid::Uuid;

/// Something that happened to an account.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UserEvent {
    /// A new account was created (the welcome email hangs off this).
    Registered {
        /// The new user.
        user_id: Uuid,
    },
}

impl UserEvent {
    /// Dotted event name.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "user.registered",
        }
    }
}
