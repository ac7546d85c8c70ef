//! [`JobContext`]: what every handler can use (`Data<JobContext>` in its arguments): the
//! domain services, outgoing mail, templates and the webhook HTTP client, built once per
//! process.

use std::sync::Arc;

use orderly::Services;

use crate::{mailer::Mailer, templates::Templates, webhook_client::WebhookClient};

/// What every handler can use (`Data<JobContext>` in its arguments).
#[derive(Clone, Debug)]
pub struct JobContext {
    /// Domain services and connections.
    pub services: Services,
    /// Outgoing mail.
    pub mailer: Mailer,
    /// Email templates.
    pub templates: Arc<Templates>,
    /// Outgoing webhook requests (redirects off, SSRF guard on).
    pub webhooks: WebhookClient,
}

impl JobContext {
    /// Builds the context from the services' config.
    pub async fn new(services: Services) -> anyhow::Result<Self> {
        let mailer = Mailer::from_config(&services.config.mail)?;
        let webhooks = WebhookClient::from_config(&services.config.webhooks)?;
        Ok(Self {
            services,
            mailer,
            templates: Arc::new(Templates::load()?),
            webhooks,
        })
    }
}
