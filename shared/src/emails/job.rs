//! The email job: one queue, `emails`, for every message the shop sends. Transient SMTP failures
//! retry with exponential backoff (from `MAIL_RETRY_BASE_SECS`, doubling, capped at 30 minutes:
//! eight attempts span about an hour by default). Order emails are customer-facing and jump
//! ahead of welcome and report mails.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{
    jobs::settings::JobSettings,
    queue::{Job, Priority, QueueName, RetryPolicy},
};

/// An email to send; the handler loads what it needs by id and renders the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EmailJob {
    /// "Thanks for your order", with its lines and total.
    OrderConfirmation {
        /// The confirmed order.
        order_id: Uuid,
    },
    /// "Your order was cancelled".
    OrderCancelled {
        /// The cancelled order.
        order_id: Uuid,
    },
    /// Welcome to a new account.
    Welcome {
        /// The account just registered.
        user_id: Uuid,
    },
    /// "Your report is ready", with the download link.
    ReportReady {
        /// The report that finished building.
        report_id: Uuid,
    },
}

impl Job for EmailJob {
    type Settings = JobSettings;
    const QUEUE: QueueName = QueueName::new("emails");

    fn kind(&self) -> &'static str {
        match self {
            Self::OrderConfirmation { .. } => "email.order_confirmation",
            Self::OrderCancelled { .. } => "email.order_cancelled",
            Self::Welcome { .. } => "email.welcome",
            Self::ReportReady { .. } => "email.report_ready",
        }
    }

    fn priority(&self) -> Priority {
        match self {
            Self::OrderConfirmation { .. } | Self::OrderCancelled { .. } => Priority::HIGH,
            Self::Welcome { .. } | Self::ReportReady { .. } => Priority::NORMAL,
        }
    }

    fn retry_policy(&self, settings: &JobSettings) -> RetryPolicy {
        RetryPolicy::exponential(8, settings.email_retry_base, Duration::from_secs(1800))
    }

    fn timeout(_: &JobSettings) -> Duration {
        Duration::from_secs(60)
    }
}
