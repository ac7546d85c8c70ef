//! Wiring: builds the pools, the queue engine, the outbox, the event bus and every domain service
//! once, from config. Both binaries start here; tests build one per test with their own
//! database and Redis prefix.

use std::sync::Arc;

use orderly_queue::RedisConnection;
use sqlx::PgPool;

use crate::{
    cache::Cache,
    config::Config,
    emails::{SentEmailService, subscriber::EmailSubscriber},
    error::AppError,
    events::EventBus,
    idempotency::IdempotencyService,
    jobs::{JobLifecycle, JobSettings, JobStager, ReportJob, UploadJob, WebhookFanOutJob},
    maintenance::{MaintainedDomains, MaintenanceService},
    orders::OrderService,
    products::{ProductService, repository::CachedProductRepository},
    queue::{
        GroupCommit, Job, Outbox, Producer, QueueEngine, ReplicaAcks, Retention,
        schedule::Schedules,
    },
    reports::{ReportScheduleService, ReportService},
    storage::Storage,
    uploads::UploadService,
    users::{TokenIssuer, UserService, repository::CachedUserRepository, revocation::Revocations},
    webhooks::{WebhookService, WebhookSubscriber},
};

/// Everything a process needs, built once; cheap to clone.
#[derive(Debug, Clone)]
pub struct Services {
    /// The configuration it was built from.
    pub config: Arc<Config>,
    /// PostgreSQL.
    pub db: PgPool,
    /// Redis (shared multiplexed connection).
    pub redis: RedisConnection,
    /// Read-through cache.
    pub cache: Cache,
    /// The queue engine.
    pub queue: QueueEngine,
    /// Group-committed enqueue.
    pub producer: Producer,
    /// Outbox dispatch and relay.
    pub outbox: Outbox,
    /// Domain events.
    pub events: EventBus,
    /// Stages the shop's jobs with the retry delays and time limits from config.
    pub jobs: JobStager,
    /// Accounts, logins, sessions and token checks.
    pub users: UserService,
    /// The catalogue and its stock (cached reads).
    pub products: ProductService,
    /// Placing, listing and changing orders.
    pub orders: OrderService,
    /// Idempotency keys.
    pub idempotency: IdempotencyService,
    /// Housekeeping tasks (run by the maintenance job).
    pub maintenance: MaintenanceService,
    /// Recurring jobs (the built-in maintenance schedules and whatever is defined at run time).
    pub schedules: Schedules,
    /// The sent-mail log.
    pub sent_emails: SentEmailService,
    /// Report requests, downloads and the build bookkeeping.
    pub reports: ReportService,
    /// Admins' report schedules (rows mirrored as engine schedules) and their runs.
    pub report_schedules: ReportScheduleService,
    /// Webhook endpoints and deliveries.
    pub webhooks: WebhookService,
    /// Report files and uploads.
    pub storage: Storage,
    /// Uploads (product imports and images).
    pub uploads: UploadService,
}

impl Services {
    /// Builds everything with lazy connections (no I/O yet). Must run inside a tokio runtime.
    pub fn build(config: Config) -> anyhow::Result<Self> {
        let db = crate::db::pool(&config.database)?;
        Self::build_with_pool(config, db)
    }

    /// Builds everything on an existing pool (tests pass the per-test database's pool).
    pub fn build_with_pool(config: Config, db: PgPool) -> anyhow::Result<Self> {
        let servers = crate::redis::servers(&config.redis)?;
        let redis = RedisConnection::lazy(&servers, crate::redis::manager_config())?;
        let prefix = config.redis.prefix.clone();
        let cache = Cache::with_near(redis.clone(), &prefix, config.cache.near_max_bytes);
        // Settings that name queues must name the shop's.
        let named = [
            (
                "QUEUE_PARTITIONS",
                config
                    .worker
                    .queue_partitions
                    .queues()
                    .map(|(queue, _)| queue)
                    .collect::<Vec<_>>(),
            ),
            (
                "QUEUE_RATE_LIMITS or QUEUE_CONCURRENCY_LIMITS",
                config
                    .worker
                    .queue_limits
                    .iter()
                    .map(|(queue, _)| queue.as_str())
                    .collect(),
            ),
        ];
        for (setting, queues) in named {
            if let Some(unknown) = queues
                .into_iter()
                .find(|queue| crate::jobs::queue_named(queue).is_none())
            {
                anyhow::bail!(
                    "{setting} names queue {unknown:?}, which does not exist (queues: {})",
                    crate::jobs::QUEUE_NAMES.join(", ")
                );
            }
        }
        let queue = QueueEngine::new(
            redis.clone(),
            &prefix,
            Retention {
                completed_keep: config.worker.completed_keep,
                completed_max_age: config.worker.completed_max_age,
            },
        )
        .with_limits(queue_limits(&config))
        .with_partitions(config.worker.queue_partitions.clone());
        let producer = Producer::new(queue.clone());
        // Pushes that must reach replicas wait for them on a connection of their own, so the
        // wait never holds up the rest of the process's Redis traffic (each push and its
        // `WAIT` travel in one pipeline, see `QueueEngine::enqueue_confirmed`). Both
        // connections share `servers`, so one Sentinel watcher and one lookup cache serve them.
        let outbox_producer = match config.redis.wait_replicas {
            0 => producer.clone(),
            replicas => Producer::replicated(
                QueueEngine::new(
                    RedisConnection::lazy(&servers, crate::redis::manager_config())?,
                    &prefix,
                    Retention {
                        completed_keep: config.worker.completed_keep,
                        completed_max_age: config.worker.completed_max_age,
                    },
                )
                .with_partitions(config.worker.queue_partitions.clone()),
                ReplicaAcks {
                    replicas,
                    timeout: config.redis.wait_timeout,
                },
            ),
        };
        let outbox = Outbox::new(db.clone(), outbox_producer)
            .with_unique_window(config.worker.outbox_unique_window)
            .with_expansion(
                WebhookFanOutJob { rows: Vec::new() }.kind(),
                WebhookFanOutJob::expansion(JobSettings::from_config(&config)),
            );
        let jobs = JobStager::new(JobSettings::from_config(&config));
        let products = ProductService::new(
            db.clone(),
            CachedProductRepository::new(cache.clone(), config.cache.ttl),
        )
        .with_orders_in_flight_per_product(config.database.orders_in_flight_per_product);
        let idempotency = IdempotencyService::new(db.clone());
        let webhooks = WebhookService::new(
            db.clone(),
            jobs.clone(),
            outbox.clone(),
            crate::webhooks::address::AddressPolicy::new(config.webhooks.allowlist.clone()),
        );
        let webhook_subscriber = WebhookSubscriber::new(webhooks.clone());
        let events = EventBus::builder()
            .subscribe(Arc::new(EmailSubscriber::new(jobs.clone())))
            .subscribe(Arc::new(webhook_subscriber))
            .build();

        let tokens = TokenIssuer::new(&config.auth);
        let users = UserService::new(
            db.clone(),
            CachedUserRepository::new(cache.clone(), config.cache.ttl),
            tokens,
            Revocations::new(redis.clone(), &prefix),
            config.auth.refresh_ttl,
            events.clone(),
            outbox.clone(),
        )
        .with_login_throttle(crate::users::login_throttle::LoginThrottle::new(
            redis.clone(),
            &prefix,
            config.rate_limit.login_max_failures,
            config.rate_limit.login_failure_window,
            &config.auth.jwt_secret,
        ));
        let mut orders = OrderService::new(
            db.clone(),
            products.clone(),
            idempotency.clone(),
            events.clone(),
            outbox.clone(),
        );
        if config.database.order_statements_in_flight > 0 {
            orders = orders.with_group_commit(GroupCommit::new(
                outbox.clone(),
                config.database.order_statements_in_flight,
                config.database.orders_per_statement,
            ));
        }
        let storage = Storage::from_config(&config.storage)?;
        let lifecycle = JobLifecycle::new(queue.clone());
        let schedules = Schedules::new(queue.clone());
        let report_schedules = ReportScheduleService::new(
            db.clone(),
            schedules.clone(),
            users.clone(),
            jobs.clone(),
            outbox.clone(),
        );
        let reports = ReportService::new(
            db.clone(),
            storage.clone(),
            events.clone(),
            outbox.clone(),
            jobs.clone(),
            lifecycle.clone(),
        );
        let uploads = UploadService::new(
            db.clone(),
            products.clone(),
            storage.clone(),
            outbox.clone(),
            jobs.clone(),
            lifecycle,
            config.storage.upload_max_bytes as u64,
        );
        let sent_emails = SentEmailService::new(db.clone());
        let maintenance = MaintenanceService::new(
            MaintainedDomains {
                idempotency: idempotency.clone(),
                sent_emails: sent_emails.clone(),
                webhooks: webhooks.clone(),
                reports: reports.clone(),
                uploads: uploads.clone(),
            },
            queue.clone(),
            crate::jobs::QUEUE_NAMES.to_vec(),
            &config.maintenance,
        );
        Ok(Self {
            maintenance,
            schedules,
            report_schedules,
            uploads,
            sent_emails,
            reports,
            webhooks,
            storage,
            config: Arc::new(config),
            db,
            redis,
            cache,
            queue,
            producer,
            outbox,
            events,
            jobs,
            users,
            products,
            orders,
            idempotency,
        })
    }
}

impl Services {
    /// Tells the domain that the job `id` of `queue` was cancelled before it ran (an operator
    /// cancelled it on the dashboard): the report or upload it would have built says
    /// `cancelled` too, instead of `queued` for ever. Jobs of other queues have no row.
    pub async fn job_cancelled_before_run(&self, queue: &str, id: &str) -> Result<(), AppError> {
        let Some(job) = self.queue.job(queue, id).await? else {
            return Ok(());
        };
        if queue == ReportJob::QUEUE.as_str()
            && let Ok(ReportJob { report_id }) = serde_json::from_value(job.payload.clone())
        {
            self.reports.mark_cancelled(report_id).await?;
        } else if queue == UploadJob::QUEUE.as_str()
            && let Ok(UploadJob { upload_id }) = serde_json::from_value(job.payload)
        {
            self.uploads.mark_cancelled(upload_id).await?;
        }
        Ok(())
    }
}

/// The flow control of every queue: `QUEUE_RATE_LIMITS` and `QUEUE_CONCURRENCY_LIMITS`, with
/// the webhook queue's per-endpoint limits (its jobs are grouped by endpoint).
fn queue_limits(config: &Config) -> Vec<(String, orderly_queue::QueueLimits)> {
    let mut limits = config.worker.queue_limits.clone();
    let webhooks = crate::jobs::WebhookJob::QUEUE.as_str();
    match limits.iter_mut().find(|(queue, _)| queue == webhooks) {
        Some((_, l)) => l.group = config.webhooks.per_endpoint,
        None => limits.push((
            webhooks.to_owned(),
            orderly_queue::QueueLimits {
                group: config.webhooks.per_endpoint,
                ..Default::default()
            },
        )),
    }
    limits
}
