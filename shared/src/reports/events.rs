//! Events of the reports domain.

use serde::Serialize;
use uuid::Uuid;

/// Something that happened to a report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReportEvent {
    /// A report finished building and can be downloaded.
    Ready {
        /// The report.
        report_id: Uuid,
        /// Who asked for it.
        user_id: Uuid,
    },
}

impl ReportEvent {
    /// Dotted event name, also the webhook event type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ready { .. } => "report.ready",
        }
    }
}
