//! Events of the reports domain. Like order events, they carry the report itself, so
//! subscribers need not read it back.

use serde::Serialize;

use crate::reports::model::Report;

/// Something that happened to a report.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReportEvent {
    /// A report finished building and can be downloaded.
    Ready {
        /// The finished report.
        report: Report,
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
