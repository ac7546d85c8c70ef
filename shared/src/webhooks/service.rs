//! Webhook rules: who manages endpoints, how an event becomes deliveries, and what the delivery
//! job may read and record; and the admin's tools around an endpoint: changing it, disabling and
//! re-enabling it, rotating its secret, a test ping and resending a delivery.
//!
//! Endpoints are shop-level integrations (an ERP, a fulfilment partner, a chat notification) and
//! the order events they receive concern every customer, so only admins manage them; a customer
//! never sees another customer's orders through a webhook.

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, Utc};

use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    error::AppError,
    jobs::JobStager,
    pagination::{Page, PageRequest},
    queue::{Outbox, RunAt, Staging, UnitOfWork},
    users::Actor,
    webhooks::{
        address::{AddressPolicy, HostCheck, Refused},
        job::{WebhookFanOutJob, WebhookJob},
        model::{
            AttemptRecord, NewWebhookEndpoint, WebhookDelivery, WebhookEndpoint,
            WebhookEndpointChanges, WebhookEventType, WebhookUrl,
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

impl Envelope<'_> {
    /// The body of a delivery of `data` as `kind`, timestamped now.
    fn body(kind: WebhookEventType, data: &Value) -> Result<String, AppError> {
        Ok(serde_json::to_string(&Envelope {
            kind: kind.as_str(),
            timestamp: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            data,
        })?)
    }
}

/// The reason recorded when an admin disables an endpoint.
pub const DISABLED_BY_ADMIN: &str = "disabled by an admin";
/// Longest time a rotated-out secret may keep signing deliveries: a week.
pub const MAX_SECRET_OVERLAP: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// How long a rotated-out secret keeps signing when the admin does not say: a day.
pub const DEFAULT_SECRET_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);

/// Webhook endpoints (admin only), the deliveries an event fans out to, and what the delivery
/// job reads and records.
#[derive(Debug, Clone)]
pub struct WebhookService {
    pool: PgPool,
    webhooks: WebhookRepository,
    jobs: JobStager,
    /// Commits the units of work that stage delivery jobs outside a domain event (a ping, a
    /// resend) and pushes their jobs.
    outbox: Outbox,
    /// The addresses deliveries may reach (`WEBHOOK_ALLOWLIST` and public addresses): a URL
    /// that can never pass is refused when it is registered.
    addresses: AddressPolicy,
}

fn endpoint_not_found() -> AppError {
    AppError::not_found("webhook endpoint not found")
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
    pub fn new(pool: PgPool, jobs: JobStager, outbox: Outbox, addresses: AddressPolicy) -> Self {
        Self {
            pool,
            webhooks: WebhookRepository,
            jobs,
            outbox,
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
            .ok_or_else(endpoint_not_found)
    }

    /// Changes an endpoint (admin): a new URL is checked like at registration (including the
    /// refusal of addresses no delivery could reach); `enabled: true` starts deliveries again,
    /// also after a 410, and clears the reason; `enabled: false` stops them with the reason
    /// [`DISABLED_BY_ADMIN`]. Nothing changes when the input is refused.
    #[tracing::instrument(skip(self, changes), fields(user_id = %actor.user_id))]
    pub async fn update(
        &self,
        actor: &Actor,
        id: Uuid,
        changes: WebhookEndpointChanges,
    ) -> Result<WebhookEndpoint, AppError> {
        require_admin(actor)?;
        if let Some(url) = &changes.url {
            self.refuse_unreachable(url).await?;
        }
        let mut conn = self.pool.acquire().await?;
        let endpoint = self
            .webhooks
            .update_endpoint(&mut conn, id, &changes, DISABLED_BY_ADMIN)
            .await?
            .ok_or_else(endpoint_not_found)?;
        tracing::info!(endpoint_id = %id, enabled = endpoint.enabled, "webhook endpoint changed");
        Ok(endpoint)
    }

    /// Gives an endpoint a fresh secret (admin) and returns the endpoint with it, the only time
    /// anyone sees it. The secret it replaces keeps signing deliveries, beside the new one, for
    /// `overlap` (at most [`MAX_SECRET_OVERLAP`]; zero stops it at once). Rotating again within
    /// the window drops the oldest secret: only the last two ever sign.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn rotate_secret(
        &self,
        actor: &Actor,
        id: Uuid,
        overlap: Duration,
    ) -> Result<WebhookEndpoint, AppError> {
        require_admin(actor)?;
        if overlap > MAX_SECRET_OVERLAP {
            return Err(AppError::invalid_field(
                "overlap_secs",
                format!("must be at most {}", MAX_SECRET_OVERLAP.as_secs()),
            ));
        }
        let previous_expires_at: Option<DateTime<Utc>> = (!overlap.is_zero())
            .then(|| Utc::now() + chrono::Duration::from_std(overlap).unwrap_or_default());
        let mut conn = self.pool.acquire().await?;
        let endpoint = self
            .webhooks
            .rotate_secret(
                &mut conn,
                id,
                &WebhookSecret::generate(),
                previous_expires_at,
            )
            .await?
            .ok_or_else(endpoint_not_found)?;
        tracing::info!(endpoint_id = %id, overlap_secs = overlap.as_secs(), "webhook secret rotated");
        Ok(endpoint)
    }

    /// Sends a `webhook.ping` to one endpoint (admin), whatever it subscribed to, signed and
    /// recorded like any delivery; returns the staged delivery. 409 if the endpoint is
    /// disabled (nothing would be sent).
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn ping(
        &self,
        actor: &Actor,
        endpoint_id: Uuid,
    ) -> Result<WebhookDelivery, AppError> {
        require_admin(actor)?;
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let endpoint = self
            .webhooks
            .find_endpoint(uow.conn(), endpoint_id)
            .await?
            .ok_or_else(endpoint_not_found)?;
        if !endpoint.enabled {
            return Err(AppError::conflict(
                "the endpoint is disabled; enable it (PATCH enabled: true) to ping it",
            ));
        }
        let kind = WebhookEventType::Ping;
        let body = Envelope::body(
            kind,
            &serde_json::json!({ "endpoint_id": endpoint_id, "requested_by": actor.user_id }),
        )?;
        let delivery = self
            .webhooks
            .insert_delivery(uow.conn(), endpoint_id, kind.as_str(), &body)
            .await?;
        self.stage_send(&mut uow, delivery.id, delivery.endpoint_id)
            .await?;
        self.outbox.commit(uow).await?;
        tracing::info!(%endpoint_id, delivery_id = %delivery.id, "webhook ping staged");
        Ok(delivery)
    }

    /// Sends a settled delivery again (admin): a failed one, or a delivered one to resend. It
    /// goes back to pending and a new job is staged; the `webhook-id` and body are the same, so
    /// a receiver that got it already can drop it. 404 if the endpoint has no such delivery,
    /// 409 if it is pending already or the endpoint is disabled.
    #[tracing::instrument(skip(self), fields(user_id = %actor.user_id))]
    pub async fn redeliver(
        &self,
        actor: &Actor,
        endpoint_id: Uuid,
        delivery_id: Uuid,
    ) -> Result<WebhookDelivery, AppError> {
        require_admin(actor)?;
        let mut uow = UnitOfWork::begin(&self.pool).await?;
        let endpoint = self
            .webhooks
            .find_endpoint(uow.conn(), endpoint_id)
            .await?
            .ok_or_else(endpoint_not_found)?;
        let Some(delivery) = self
            .webhooks
            .reset_settled_delivery(uow.conn(), endpoint_id, delivery_id)
            .await?
        else {
            return Err(
                match self.webhooks.find_delivery(uow.conn(), delivery_id).await? {
                    Some(d) if d.endpoint_id == endpoint_id => {
                        AppError::conflict("the delivery is pending already; it will be sent")
                    }
                    _ => AppError::not_found("webhook delivery not found"),
                },
            );
        };
        if !endpoint.enabled {
            return Err(AppError::conflict(
                "the endpoint is disabled; enable it (PATCH enabled: true) to resend",
            ));
        }
        self.stage_send(&mut uow, delivery.id, delivery.endpoint_id)
            .await?;
        self.outbox.commit(uow).await?;
        tracing::info!(%endpoint_id, %delivery_id, "webhook delivery resent");
        Ok(delivery)
    }

    /// Stages the job that sends delivery `delivery_id` to `endpoint_id`, in the endpoint's
    /// group.
    async fn stage_send(
        &self,
        uow: &mut UnitOfWork<'_>,
        delivery_id: Uuid,
        endpoint_id: Uuid,
    ) -> Result<Uuid, AppError> {
        let job = WebhookJob {
            delivery_id,
            endpoint_id: Some(endpoint_id),
        };
        self.jobs.stage(uow, &job, RunAt::Now).await
    }

    /// Deletes an endpoint and its delivery history (admin). Deliveries still queued find
    /// their row gone and end quietly.
    #[tracing::instrument(skip(self))]
    pub async fn delete(&self, actor: &Actor, id: Uuid) -> Result<(), AppError> {
        require_admin(actor)?;
        let mut conn = self.pool.acquire().await?;
        if !self.webhooks.delete_endpoint(&mut conn, id).await? {
            return Err(endpoint_not_found());
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
            return Err(endpoint_not_found());
        }
        self.webhooks
            .list_deliveries(&mut conn, endpoint_id, &page)
            .await
    }

    /// Adds to `to`'s writes one delivery of `data` per enabled endpoint subscribed to `event`
    /// (none when nobody subscribes), and a [`WebhookFanOutJob`] carrying them if there are
    /// any, which queues their sends. The body is serialised once, here, so every endpoint and
    /// every retry gets the same bytes; the endpoints are found and their deliveries written
    /// by the operation's one statement, without a round trip of their own.
    #[tracing::instrument(skip(self, to, data), fields(event = event.as_str()))]
    pub fn stage_deliveries(
        &self,
        to: &mut impl Staging,
        event: WebhookEventType,
        data: &Value,
    ) -> Result<(), AppError> {
        let body = Envelope::body(event, data)?;
        let deliveries = self.webhooks.insert_deliveries_to_subscribers(
            to.writes(),
            event,
            Uuid::now_v7(),
            body,
        );
        self.jobs
            .stage_for_rows(to, deliveries, &WebhookFanOutJob { rows: Vec::new() })?;
        Ok(())
    }

    /// Queues the send of each delivery `job` carries, each job with the delivery's id as its
    /// id and uniqueness key: a fan-out that runs again (a worker died before acknowledging it)
    /// queues nothing twice.
    #[tracing::instrument(skip_all, fields(deliveries = job.rows.len()))]
    pub async fn fan_out(&self, job: &WebhookFanOutJob) -> Result<(), AppError> {
        self.outbox
            .push_now(job.deliveries(self.jobs.settings())?)
            .await?;
        Ok(())
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
        self.webhooks
            .find_delivery_with_endpoint(&mut conn, delivery_id)
            .await
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

    /// Stops all deliveries to an endpoint (the receiver said 410 Gone). An admin re-enables it
    /// ([`Self::update`]) to start again.
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
