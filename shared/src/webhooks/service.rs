//! Webhook rules: who manages endpoints, how an event becomes deliveries, and what the delivery
//! job may read and record.
//!
//! Endpoints are shop-level integrations (an ERP, a fulfilment partner, a chat notification) and
//! the order events they receive concern every customer, so only admins manage them; a customer
//! never sees another customer's orders through a webhook.

use std::{net::IpAddr, time::Duration};

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::JobStager,
    pagination::{Page, PageRequest},
    queue::{RunAt, UnitOfWork},
    users::Actor,
    webhooks::{
        address::{AddressPolicy, HostCheck, Refused},
        job::WebhookJob,
        model::{
            AttemptRecord, NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint, WebhookEventType,
            WebhookUrl,
        },
        repository::WebhookRepository,
        signature::WebhookSecret,
    },
};

/// The body of every delivery (Standard Webhooks' recommended shape).
#[derive(Debug, Serialize)]
struct Envelope<'a> {
    /// `order.placed`...
    #[serde(rename = "type")]
    kind: &'static str,
    /// When the event happened (RFC 3339, UTC).
    timestamp: String,
    /// What it is about.
    data: &'a Value,
}

/// Webhook endpoints (admin only), the deliveries an event fans out to, and what the delivery
/// job reads and records.
#[derive(Debug, Clone)]
pub struct WebhookService {
    pool: PgPool,
    webhooks: WebhookRepository,
    jobs: JobStager,
    /// The addresses deliveries may reach (`WEBHOOK_ALLOWLIST` and public addresses): a URL
    /// that can never pass is refused when it is registered.
    addresses: AddressPolicy,
}

fn require_admin(actor: &Actor) -> Result<(), AppError> {
    if actor.is_admin() {
        Ok(())
    } else {
        Err(AppError::forbidden("only admins can manage webhooks"))
    }
}

impl WebhookService {
    /// Wires the service; `jobs` stages the delivery jobs; `addresses` says which addresses
    /// deliveries may reach.
    pub fn new(pool: PgPool, jobs: JobStager, addresses: AddressPolicy) -> Self {
        Self {
            pool,
            webhooks: WebhookRepository,
            jobs,
            addresses,
        }
    }

    /// Refuses a URL no delivery could reach: an address the policy refuses, or a name that
    /// resolves only to such addresses. A name that does not resolve now is accepted (its DNS
    /// may not be published yet); every delivery checks the addresses again when it connects,
    /// so a name that later resolves elsewhere is still refused then.
    async fn refuse_unreachable(&self, url: &WebhookUrl) -> Result<(), AppError> {
        let refused = |refused: Refused| AppError::invalid_field("url", refused.to_string());
        let parsed = url::Url::parse(url.as_str())
            .map_err(|_| AppError::invalid_field("url", "must be an absolute http or https URL"))?;
        let host = match self.addresses.check_url(&parsed).map_err(refused)? {
            HostCheck::Permitted(_) => return Ok(()),
            HostCheck::ResolveAtConnect(host) => host,
        };
        let port = parsed.port_or_known_default().unwrap_or(443);
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let Ok(Ok(resolved)) = tokio::time::timeout(Duration::from_secs(2), lookup).await else {
            return Ok(());
        };
        let addresses: Vec<IpAddr> = resolved.map(|a| a.ip()).collect();
        if !addresses.is_empty() && !addresses.iter().any(|ip| self.addresses.permits(*ip)) {
            return Err(refused(Refused::blocked(host, &addresses)));
        }
        Ok(())
    }

    /// Registers an endpoint with a fresh secret (admin). The returned endpoint carries the
    /// secret; it is the only time anyone sees it.
    #[tracing::instrument(skip(self, new), fields(user_id = %actor.user_id))]
    pub async fn create(
        &self,
        actor: &Actor,
        new: NewWebhookEndpoint,
    ) -> Result<WebhookEndpoint, AppError> {
        require_admin(actor)?;
        self.refuse_unreachable(&new.url).await?;
        let mut conn = self.pool.acquire().await?;
        let endpoint = self
            .webhooks
            .insert_endpoint(&mut conn, &new, &WebhookSecret::generate(), actor.user_id)
            .await?;
        tracing::info!(endpoint_id = %endpoint.id, url = %endpoint.url, "webhook endpoint registered");
        Ok(endpoint)
    }

    /// Endpoints, newest first (admin).
    #[tracing::instrument(skip(self))]
    pub async fn list(
        &self,
        actor: &Actor,
        page: PageRequest,
    ) -> Result<Page<WebhookEndpoint>, AppError> {
        require_admin(actor)?;
        let mut conn = self.pool.acquire().await?;
        self.webhooks.list_endpoints(&mut conn, &page).await
    }

    /// One endpoint (admin).
    #[tracing::instrument(skip(self))]
    pub async fn get(&self, actor: &Actor, id: Uuid) -> Result<WebhookEndpoint, AppError> {
        require_admin(actor)?;
        let mut conn = self.pool.acquire().await?;
        self.webhooks
            .find_endpoint(&mut conn, id)
            .await?
            .ok_or_else(|| AppError::not_found("webhook endpoint not found"))
    }

    /// Deletes an endpoint and its delivery history (admin). Deliveries still queued find
    /// their row gone and end quietly.
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, actor: &Actor, id: Uuid) -> Result<(), AppError> {
        require_admin(actor)?;
        let mut conn = self.pool.acquire().await?;
        if !self.webhooks.delete_endpoint(&mut conn, id).await? {
            return Err(AppError::not_found("webhook endpoint not found"));
        }
        tracing::info!(endpoint_id = %id, "webhook endpoint deleted");
        Ok(())
    }

    /// An endpoint's deliveries, newest first (admin); 404 if the endpoint does not exist.
    #[tracing::instrument(skip(self))]
    pub async fn deliveries(
        &self,
        actor: &Actor,
        endpoint_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<WebhookDelivery>, AppError> {
        require_admin(actor)?;
        let mut conn = self.pool.acquire().await?;
        if self
            .webhooks
            .find_endpoint(&mut conn, endpoint_id)
            .await?
            .is_none()
        {
            return Err(AppError::not_found("webhook endpoint not found"));
        }
        self.webhooks
            .list_deliveries(&mut conn, endpoint_id, &page)
            .await
    }

    /// Writes one delivery of `data` per enabled endpoint subscribed to `event` and stages its
    /// job, inside `uow`; returns the delivery ids (none when nobody subscribes). The body is
    /// serialised once, here, so every endpoint and every retry gets the same bytes, and the
    /// endpoints are found and their deliveries written in one statement.
    #[tracing::instrument(skip(self, uow, data), fields(event = event.as_str()))]
    pub async fn stage_deliveries(
        &self,
        uow: &mut UnitOfWork,
        event: WebhookEventType,
        data: &Value,
    ) -> Result<Vec<Uuid>, AppError> {
        let body = serde_json::to_string(&Envelope {
            kind: event.as_str(),
            timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            data,
        })?;
        let deliveries = self
            .webhooks
            .insert_deliveries_to_subscribers(uow.conn(), event, &body)
            .await?;
        let mut ids = Vec::with_capacity(deliveries.len());
        for (delivery_id, endpoint_id) in deliveries {
            let job = WebhookJob {
                delivery_id,
                endpoint_id: Some(endpoint_id),
            };
            self.jobs.stage(uow, &job, RunAt::Now).await?;
            ids.push(delivery_id);
        }
        Ok(ids)
    }

    /// Deletes finished deliveries (delivered or failed) older than `retention`, a few thousand
    /// per statement; pending ones are kept whatever their age. Returns how many.
    pub async fn prune_deliveries(&self, retention: std::time::Duration) -> Result<u64, AppError> {
        let cutoff = crate::retention::cutoff(retention);
        crate::retention::in_batches(|limit| async move {
            let mut conn = self.pool.acquire().await?;
            self.webhooks
                .delete_finished_before(&mut conn, cutoff, limit)
                .await
        })
        .await
    }

    /// A delivery and its endpoint, for the delivery job; `None` if either is gone.
    #[tracing::instrument(skip(self))]
    pub async fn delivery_to_send(
        &self,
        delivery_id: Uuid,
    ) -> Result<Option<(WebhookDelivery, WebhookEndpoint)>, AppError> {
        let mut conn = self.pool.acquire().await?;
        let Some(delivery) = self.webhooks.find_delivery(&mut conn, delivery_id).await? else {
            return Ok(None);
        };
        let endpoint = self
            .webhooks
            .find_endpoint(&mut conn, delivery.endpoint_id)
            .await?;
        Ok(endpoint.map(|endpoint| (delivery, endpoint)))
    }

    /// Records one attempt on a delivery.
    #[tracing::instrument(skip(self, record))]
    pub async fn record_attempt(
        &self,
        delivery_id: Uuid,
        record: &AttemptRecord,
    ) -> Result<(), AppError> {
        let mut conn = self.pool.acquire().await?;
        self.webhooks
            .record_attempt(&mut conn, delivery_id, record)
            .await
    }

    /// Stops all deliveries to an endpoint (the receiver said 410 Gone). An admin re-registers
    /// the endpoint to start again.
    #[tracing::instrument(skip(self))]
    pub async fn disable_endpoint(&self, endpoint_id: Uuid, reason: &str) -> Result<(), AppError> {
        let mut conn = self.pool.acquire().await?;
        if self
            .webhooks
            .disable_endpoint(&mut conn, endpoint_id, reason)
            .await?
        {
            tracing::warn!(%endpoint_id, reason, "webhook endpoint disabled");
        }
        Ok(())
    }
}
