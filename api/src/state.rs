//! `AppState`: what every handler can reach, cheap to clone (one `Arc`).

use std::{ops::Deref, sync::Arc};

use orderly::{
    Services,
    ratelimit::{MemoryRateLimiter, Quota, RateLimiter, RedisRateLimiter},
};

use crate::dashboard::hub::LiveHub;

/// The api's shared state: the services plus the HTTP-only pieces (rate limiter, the
/// dashboard's live-update hub).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

/// The contents of [`AppState`].
pub struct AppInner {
    /// Config, pools and domain services.
    pub services: Services,
    /// Per-client request budgets.
    pub rate_limiter: Arc<dyn RateLimiter>,
    /// The budget each client gets.
    pub quota: Option<Quota>,
    /// Wakes the dashboard's open live streams when the queues change: one watcher per process
    /// however many pages are open, ended by [`crate::app::serve_app`] on shutdown.
    pub live_hub: LiveHub,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl AppState {
    /// State over `services`, with the rate limiter chosen by config.
    pub fn new(services: Services) -> Self {
        let limits = &services.config.rate_limit;
        let rate_limiter: Arc<dyn RateLimiter> = match limits.store {
            orderly::config::RateLimitStore::Memory => Arc::new(MemoryRateLimiter::new()),
            orderly::config::RateLimitStore::Redis => Arc::new(RedisRateLimiter::new(
                services.redis.clone(),
                &services.config.redis.prefix,
            )),
        };
        let quota = (limits.per_minute > 0).then_some(Quota {
            per_minute: limits.per_minute,
            burst: limits.burst.max(1),
        });
        let live_hub = LiveHub::new(services.queue.clone());
        Self(Arc::new(AppInner {
            services,
            rate_limiter,
            quota,
            live_hub,
        }))
    }
}
