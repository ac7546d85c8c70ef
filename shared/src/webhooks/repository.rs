//! SQL for webhook endpoints and deliveries.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    error::AppError,
    pagination::{Page, PageRequest},
    queue::{WriteRef, Writes},
    webhooks::{
        model::{
            AttemptOutcome, AttemptRecord, DeliveryStatus, NewWebhookEndpoint, WebhookDelivery,
            WebhookEndpoint, WebhookEndpointChanges, WebhookEventType,
        },
        signature::WebhookSecret,
    },
};

/// A `webhook_endpoints` row, events and secret as stored.
struct EndpointRow {
    id: Uuid,
    url: String,
    events: Vec<String>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_expires_at: Option<DateTime<Utc>>,
    enabled: bool,
    disabled_reason: Option<String>,
    disabled_at: Option<DateTime<Utc>>,
    created_by: Option<Uuid>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<EndpointRow> for WebhookEndpoint {
    fn from(row: EndpointRow) -> Self {
        Self {
            id: row.id,
            url: row.url,
            // The table's check constraint admits known names only.
            events: row
                .events
                .iter()
                .filter_map(|e| WebhookEventType::parse(e))
                .collect(),
            secret: WebhookSecret::from_stored(row.secret),
            previous_secret: row.previous_secret.map(WebhookSecret::from_stored),
            previous_secret_expires_at: row.previous_secret_expires_at,
            enabled: row.enabled,
            disabled_reason: row.disabled_reason,
            disabled_at: row.disabled_at,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// Webhook endpoints and deliveries in PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookRepository;

impl WebhookRepository {
    /// Inserts an endpoint.
    #[tracing::instrument(skip_all)]
    pub async fn insert_endpoint(
        &self,
        conn: &mut PgConnection,
        new: &NewWebhookEndpoint,
        secret: &WebhookSecret,
        created_by: Uuid,
    ) -> Result<WebhookEndpoint, AppError> {
        let events: Vec<&str> = new.events.iter().map(|e| e.as_str()).collect();
        let row = sqlx::query_as!(
            EndpointRow,
            "insert into webhook_endpoints (id, url, events, secret, created_by) values ($1, $2, $3, $4, $5) \
             returning id, url, events, secret, previous_secret, previous_secret_expires_at, enabled, \
                       disabled_reason, disabled_at, created_by, created_at, updated_at",
            Uuid::now_v7(),
            new.url.as_str(),
            &events as &[&str],
            secret.expose(),
            created_by,
        )
        .fetch_one(conn)
        .await?;
        Ok(row.into())
    }

    /// An endpoint by id.
    #[tracing::instrument(skip(self, conn))]
    pub async fn find_endpoint(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<WebhookEndpoint>, AppError> {
        let row = sqlx::query_as!(
            EndpointRow,
            "select id, url, events, secret, previous_secret, previous_secret_expires_at, enabled, \
                    disabled_reason, disabled_at, created_by, created_at, updated_at \
             from webhook_endpoints where id = $1",
            id,
        )
        .fetch_optional(conn)
        .await?;
        Ok(row.map(Into::into))
    }

    /// A page of endpoints, newest first.
    #[tracing::instrument(skip(self, conn))]
    pub async fn list_endpoints(
        &self,
        conn: &mut PgConnection,
        page: &PageRequest,
    ) -> Result<Page<WebhookEndpoint>, AppError> {
        let rows = sqlx::query_as!(
            EndpointRow,
            "select id, url, events, secret, previous_secret, previous_secret_expires_at, enabled, \
                    disabled_reason, disabled_at, created_by, created_at, updated_at \
             from webhook_endpoints where ($1::uuid is null or id < $1) order by id desc limit $2",
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(conn)
        .await?;
        Ok(Page::from_rows(rows, page, |r| r.id).map(Into::into))
    }

    /// Applies `changes` to an endpoint; `None` if there is none. Disabling an enabled endpoint
    /// records `disabled_reason` and the time; enabling clears both; setting `enabled` to what it
    /// already is keeps them (a 410's reason is not overwritten by a later manual disable).
    #[tracing::instrument(skip(self, conn, changes))]
    pub async fn update_endpoint(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        changes: &WebhookEndpointChanges,
        disabled_reason: &str,
    ) -> Result<Option<WebhookEndpoint>, AppError> {
        let events: Option<Vec<&str>> = changes
            .events
            .as_ref()
            .map(|events| events.iter().map(|e| e.as_str()).collect());
        let row = sqlx::query_as!(
            EndpointRow,
            "update webhook_endpoints set \
                 url = coalesce($2, url), \
                 events = coalesce($3, events), \
                 enabled = coalesce($4, enabled), \
                 disabled_reason = case when $4 is null or $4 = enabled then disabled_reason \
                                        when $4 then null else $5 end, \
                 disabled_at = case when $4 is null or $4 = enabled then disabled_at \
                                    when $4 then null else now() end \
             where id = $1 \
             returning id, url, events, secret, previous_secret, previous_secret_expires_at, enabled, \
                       disabled_reason, disabled_at, created_by, created_at, updated_at",
            id,
            changes.url.as_ref().map(|url| url.as_str()),
            events.as_deref() as Option<&[&str]>,
            changes.enabled,
            disabled_reason,
        )
        .fetch_optional(conn)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Makes `secret` the endpoint's secret; the one it replaces keeps signing until
    /// `previous_expires_at`, or stops at once when that is `None`. `None` if there is no such
    /// endpoint.
    #[tracing::instrument(skip(self, conn, secret))]
    pub async fn rotate_secret(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        secret: &WebhookSecret,
        previous_expires_at: Option<DateTime<Utc>>,
    ) -> Result<Option<WebhookEndpoint>, AppError> {
        let row = sqlx::query_as!(
            EndpointRow,
            "update webhook_endpoints set \
                 previous_secret = case when $3::timestamptz is null then null else secret end, \
                 previous_secret_expires_at = $3, \
                 secret = $2 \
             where id = $1 \
             returning id, url, events, secret, previous_secret, previous_secret_expires_at, enabled, \
                       disabled_reason, disabled_at, created_by, created_at, updated_at",
            id,
            secret.expose(),
            previous_expires_at,
        )
        .fetch_optional(conn)
        .await?;
        Ok(row.map(Into::into))
    }

    /// Deletes an endpoint and its deliveries; false if there was none.
    #[tracing::instrument(skip(self, conn))]
    pub async fn delete_endpoint(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<bool, AppError> {
        let result = sqlx::query!("delete from webhook_endpoints where id = $1", id)
            .execute(conn)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Adds to `writes` one delivery of `payload` to every enabled endpoint subscribed to
    /// `event`; the write returns each new delivery's `id` and `endpoint_id` (no row when nobody
    /// subscribes), and its `event_id`: the event's own deliveries, when several operations'
    /// events go in one statement. Built at run time (one of an operation's [`Writes`]), so the
    /// macro does not check it; every test that places an order with an endpoint subscribed
    /// runs it.
    ///
    /// The endpoints are read without a lock: every order's transaction writes deliveries to the
    /// same few endpoints, and a key-share lock held from here to the commit by each of them
    /// makes PostgreSQL keep the endpoint's lockers as a multixact, rebuilt each time an order
    /// joins. The deliveries' reference to their endpoint is checked at the commit instead
    /// (migration 0019): an endpoint deleted in between fails that commit, and the client's
    /// retry under its idempotency key finds the endpoint gone.
    pub fn insert_deliveries_to_subscribers(
        &self,
        writes: &mut Writes,
        event: WebhookEventType,
        event_id: Uuid,
        payload: String,
    ) -> WriteRef {
        writes
            .write(
                "insert into webhook_deliveries (id, endpoint_id, event_type, payload, event_id) \
                 select orderly_uuidv7(), subscribed.id, event.kind, event.payload, event.id \
                 from unnest($1::text[], $2::text[], $3::uuid[]) as event(kind, payload, id) \
                 cross join lateral ( \
                   select id from webhook_endpoints \
                   where enabled and events @> array[event.kind]::text[] \
                   order by id \
                 ) as subscribed \
                 returning id, endpoint_id, event_id",
            )
            .bind(vec![event.as_str()])
            .bind(vec![payload])
            .bind(vec![event_id])
            .finish_keyed("event_id", event_id)
    }

    /// Stops deliveries to an endpoint; false if it was already disabled or is gone.
    #[tracing::instrument(skip(self, conn))]
    pub async fn disable_endpoint(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        reason: &str,
    ) -> Result<bool, AppError> {
        let result = sqlx::query!(
            "update webhook_endpoints set enabled = false, disabled_reason = $2, disabled_at = now() \
             where id = $1 and enabled",
            id,
            reason,
        )
        .execute(conn)
        .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Writes one delivery of `payload` to one endpoint (whatever it subscribed to).
    #[tracing::instrument(skip(self, conn, payload))]
    pub async fn insert_delivery(
        &self,
        conn: &mut PgConnection,
        endpoint_id: Uuid,
        event_type: &str,
        payload: &str,
    ) -> Result<WebhookDelivery, AppError> {
        Ok(sqlx::query_as!(
            WebhookDelivery,
            r#"insert into webhook_deliveries (id, endpoint_id, event_type, payload)
               values (orderly_uuidv7(), $1, $2, $3)
               returning id, endpoint_id, event_type, payload, status as "status: DeliveryStatus",
                         attempts, last_status_code, last_error, last_latency_ms, last_attempt_at,
                         next_retry_at, delivered_at, created_at, updated_at"#,
            endpoint_id,
            event_type,
            payload,
        )
        .fetch_one(conn)
        .await?)
    }

    /// Puts a settled (delivered or failed) delivery of `endpoint_id` back to pending, for
    /// another send; its attempt count and latest attempt are kept. `None` if there is no such
    /// delivery or it is pending already.
    #[tracing::instrument(skip(self, conn))]
    pub async fn reset_settled_delivery(
        &self,
        conn: &mut PgConnection,
        endpoint_id: Uuid,
        id: Uuid,
    ) -> Result<Option<WebhookDelivery>, AppError> {
        Ok(sqlx::query_as!(
            WebhookDelivery,
            r#"update webhook_deliveries set status = 'pending', next_retry_at = null,
                      delivered_at = null
               where id = $1 and endpoint_id = $2 and status <> 'pending'
               returning id, endpoint_id, event_type, payload, status as "status: DeliveryStatus",
                         attempts, last_status_code, last_error, last_latency_ms, last_attempt_at,
                         next_retry_at, delivered_at, created_at, updated_at"#,
            id,
            endpoint_id,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// A delivery by id.
    #[tracing::instrument(skip(self, conn))]
    pub async fn find_delivery(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<WebhookDelivery>, AppError> {
        Ok(sqlx::query_as!(
            WebhookDelivery,
            r#"select id, endpoint_id, event_type, payload, status as "status: DeliveryStatus",
                      attempts, last_status_code, last_error, last_latency_ms, last_attempt_at,
                      next_retry_at, delivered_at, created_at, updated_at
               from webhook_deliveries where id = $1"#,
            id,
        )
        .fetch_optional(conn)
        .await?)
    }

    /// A delivery with its endpoint, in one statement (the delivery job's read, once per
    /// delivery sent); `None` if either is gone.
    #[tracing::instrument(skip(self, conn))]
    pub async fn find_delivery_with_endpoint(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
    ) -> Result<Option<(WebhookDelivery, WebhookEndpoint)>, AppError> {
        let row = sqlx::query!(
            r#"select d.id, d.endpoint_id, d.event_type, d.payload,
                      d.status as "status: DeliveryStatus", d.attempts, d.last_status_code,
                      d.last_error, d.last_latency_ms, d.last_attempt_at, d.next_retry_at,
                      d.delivered_at, d.created_at, d.updated_at,
                      e.url, e.events, e.secret, e.previous_secret, e.previous_secret_expires_at,
                      e.enabled, e.disabled_reason, e.disabled_at, e.created_by,
                      e.created_at as endpoint_created_at, e.updated_at as endpoint_updated_at
               from webhook_deliveries d join webhook_endpoints e on e.id = d.endpoint_id
               where d.id = $1"#,
            id,
        )
        .fetch_optional(conn)
        .await?;
        Ok(row.map(|r| {
            let endpoint = EndpointRow {
                id: r.endpoint_id,
                url: r.url,
                events: r.events,
                secret: r.secret,
                previous_secret: r.previous_secret,
                previous_secret_expires_at: r.previous_secret_expires_at,
                enabled: r.enabled,
                disabled_reason: r.disabled_reason,
                disabled_at: r.disabled_at,
                created_by: r.created_by,
                created_at: r.endpoint_created_at,
                updated_at: r.endpoint_updated_at,
            };
            let delivery = WebhookDelivery {
                id: r.id,
                endpoint_id: r.endpoint_id,
                event_type: r.event_type,
                payload: r.payload,
                status: r.status,
                attempts: r.attempts,
                last_status_code: r.last_status_code,
                last_error: r.last_error,
                last_latency_ms: r.last_latency_ms,
                last_attempt_at: r.last_attempt_at,
                next_retry_at: r.next_retry_at,
                delivered_at: r.delivered_at,
                created_at: r.created_at,
                updated_at: r.updated_at,
            };
            (delivery, endpoint.into())
        }))
    }

    /// A page of an endpoint's deliveries, newest first.
    #[tracing::instrument(skip(self, conn))]
    pub async fn list_deliveries(
        &self,
        conn: &mut PgConnection,
        endpoint_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<WebhookDelivery>, AppError> {
        let rows = sqlx::query_as!(
            WebhookDelivery,
            r#"select id, endpoint_id, event_type, payload, status as "status: DeliveryStatus",
                      attempts, last_status_code, last_error, last_latency_ms, last_attempt_at,
                      next_retry_at, delivered_at, created_at, updated_at
               from webhook_deliveries where endpoint_id = $1 and ($2::uuid is null or id < $2)
               order by id desc limit $3"#,
            endpoint_id,
            page.cursor,
            page.fetch_limit(),
        )
        .fetch_all(conn)
        .await?;
        Ok(Page::from_rows(rows, page, |d| d.id))
    }

    /// Writes one attempt on a delivery. A delivery already delivered is left alone (a late
    /// duplicate run must not turn it back into a failure).
    #[tracing::instrument(skip(self, conn, record), fields(attempt = record.attempt))]
    pub async fn record_attempt(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        record: &AttemptRecord,
    ) -> Result<(), AppError> {
        let next_retry_at = match &record.outcome {
            AttemptOutcome::Retrying { next_retry_at, .. } => Some(*next_retry_at),
            _ => None,
        };
        sqlx::query!(
            "update webhook_deliveries set \
                 attempts = greatest(attempts + 1, $2), status = $3, last_status_code = $4, last_error = $5, \
                 last_latency_ms = $6, last_attempt_at = now(), next_retry_at = $7, \
                 delivered_at = case when $3 = 'delivered' then now() else delivered_at end \
             where id = $1 and status <> 'delivered'",
            id,
            i32::try_from(record.attempt).unwrap_or(i32::MAX),
            record.status().as_str(),
            record.status_code.map(|code| code as i16),
            record.error(),
            record.latency.map(|l| i32::try_from(l.as_millis()).unwrap_or(i32::MAX)),
            next_retry_at,
        )
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Deletes at most `limit` finished deliveries (delivered or failed) created before
    /// `cutoff`; pending ones, which a job still refers to, are never deleted.
    pub async fn delete_finished_before(
        &self,
        conn: &mut PgConnection,
        cutoff: DateTime<Utc>,
        limit: i64,
    ) -> Result<u64, AppError> {
        Ok(sqlx::query!(
            "delete from webhook_deliveries where ctid in (select ctid from webhook_deliveries \
             where status <> 'pending' and created_at < $1 limit $2)",
            cutoff,
            limit,
        )
        .execute(conn)
        .await?
        .rows_affected())
    }
}
