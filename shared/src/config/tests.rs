//! `Config::from_map` end to end: defaults, and refusals that name the variable.

use super::*;

fn base() -> HashMap<String, String> {
    [
        ("DATABASE_URL", "postgres://postgres@127.0.0.1/orderly"),
        ("REDIS_URL", "redis://127.0.0.1:6379"),
        ("JWT_SECRET", "q7Vf2LxN9cRb4KdWm8ZtHs3YpJg6QeAu"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[test]
fn defaults_apply_when_only_required_variables_are_set() {
    let config = Config::from_map(&base()).expect("valid config");
    assert_eq!(config.http.port, 8080);
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(config.cache.ttl, Duration::from_secs(60));
    assert_eq!(config.cache.static_ttl, Duration::from_secs(86_400));
    assert_eq!(config.cache.near_max_bytes, 16 * 1024 * 1024);
    assert_eq!(config.database.orders_in_flight_per_product, 4);
    assert_eq!(config.database.order_statements_in_flight, 1);
    assert_eq!(config.database.orders_per_statement, 128);
    assert!(
        config.worker.queues.is_empty(),
        "no WORKER_QUEUES: every queue"
    );
}

#[test]
fn missing_database_url_names_the_variable() {
    let mut vars = base();
    vars.remove("DATABASE_URL");
    let err = Config::from_map(&vars).unwrap_err();
    assert!(matches!(
        err,
        ConfigError::Missing {
            name: "DATABASE_URL",
            ..
        }
    ));
    assert!(err.to_string().starts_with("DATABASE_URL is not set"));
}

#[test]
fn malformed_port_names_the_variable_and_value() {
    let mut vars = base();
    vars.insert("PORT".into(), "eighty".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("PORT is invalid"), "{err}");
    assert!(err.contains("eighty"), "{err}");
}

#[test]
fn short_jwt_secret_is_refused_without_echoing_it() {
    let mut vars = base();
    vars.insert("JWT_SECRET".into(), "hunter2".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("JWT_SECRET is invalid"), "{err}");
    assert!(!err.contains("hunter2"));
}

#[test]
fn published_placeholder_and_low_entropy_secrets_are_refused() {
    for (secret, why) in [
        (
            "dev-only-secret-change-me-dev-only-secret-change-me",
            "published",
        ),
        ("change-me-to-a-long-random-string-of-32-bytes", "published"),
        ("0123456789abcdef0123456789abcdef", "published"),
        ("my-very-own-secret-value-for-the-shop-api", "placeholder"),
        ("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "distinct"),
        ("abcdefghijkl".repeat(3).as_str(), "repeated"),
    ] {
        let mut vars = base();
        vars.insert("JWT_SECRET".into(), secret.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with("JWT_SECRET is invalid"), "{why}: {err}");
        assert!(!err.contains(secret), "the secret is echoed: {err}");
    }
    for generated in [
        "3f9c1e7a52b84d06a9e3c2f1b7d54e80c6a1f3e9d2b7c4a5",
        "Yh3kP9wQ2mZ7vB4nL8xR1tC6sD5fG0jA",
    ] {
        let mut vars = base();
        vars.insert("JWT_SECRET".into(), generated.into());
        assert!(Config::from_map(&vars).is_ok(), "{generated} refused");
    }
}

#[test]
fn access_token_lifetime_is_bounded() {
    let mut vars = base();
    vars.insert("JWT_TTL_SECS".into(), "2592000".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("JWT_TTL_SECS is invalid"), "{err}");
    vars.insert("JWT_TTL_SECS".into(), "0".into());
    assert!(Config::from_map(&vars).is_err());
}

#[test]
fn wrong_url_scheme_is_refused() {
    let mut vars = base();
    vars.insert("DATABASE_URL".into(), "mysql://localhost/db".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("DATABASE_URL is invalid"), "{err}");
}

#[test]
fn debug_output_hides_secrets() {
    let mut vars = base();
    vars.insert(
        "DATABASE_URL".into(),
        "postgres://app:s3cr3t-pw@db/orderly".into(),
    );
    let config = Config::from_map(&vars).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t-pw"));
    assert!(!debug.contains("0123456789abcdef"));
}

#[test]
fn webhook_allowlist_parses_cidrs_and_addresses() {
    let mut vars = base();
    vars.insert(
        "WEBHOOK_ALLOWLIST".into(),
        "127.0.0.0/8, ::1, 10.1.2.3/16".into(),
    );
    let config = Config::from_map(&vars).unwrap();
    let listed: Vec<String> = config
        .webhooks
        .allowlist
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(listed, ["127.0.0.0/8", "::1/128", "10.1.0.0/16"]);

    vars.insert("WEBHOOK_ALLOWLIST".into(), "127.0.0.0/8,localhost".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("WEBHOOK_ALLOWLIST is invalid"), "{err}");
    assert!(err.contains("localhost"), "{err}");
}

#[test]
fn trusted_proxies_parse_and_trust_proxy_true_is_refused() {
    let mut vars = base();
    assert!(
        Config::from_map(&vars)
            .unwrap()
            .http
            .trusted_proxies
            .is_empty()
    );
    vars.insert("TRUSTED_PROXIES".into(), "10.0.0.0/8, 2001:db8::/32".into());
    let listed: Vec<String> = Config::from_map(&vars)
        .unwrap()
        .http
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(listed, ["10.0.0.0/8", "2001:db8::/32"]);

    // `false` (what .env files copied from an older .env.example hold) means no proxy.
    vars.insert("TRUST_PROXY".into(), "false".into());
    assert!(Config::from_map(&vars).is_ok());
    vars.insert("TRUST_PROXY".into(), "true".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(err.starts_with("TRUST_PROXY is invalid"), "{err}");
    assert!(err.contains("TRUSTED_PROXIES"), "{err}");
}

#[test]
fn login_throttle_settings_have_defaults() {
    let mut vars = base();
    let config = Config::from_map(&vars).unwrap();
    assert_eq!(config.rate_limit.login_max_failures, 5);
    assert_eq!(config.rate_limit.login_failure_window, secs(900));
    vars.insert("LOGIN_FAILURE_WINDOW_SECS".into(), "0".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(
        err.starts_with("LOGIN_FAILURE_WINDOW_SECS is invalid"),
        "{err}"
    );
}

#[test]
fn slow_client_limits_have_defaults_and_refuse_zero() {
    let mut vars = base();
    let http = Config::from_map(&vars).unwrap().http;
    assert_eq!(http.header_read_timeout, millis(10_000));
    assert_eq!(http.body_read_timeout, millis(20_000));
    assert_eq!(http.upload_body_read_timeout, millis(300_000));
    assert_eq!(http.keepalive_idle, secs(75));
    assert_eq!(http.max_connections, 1024);

    vars.insert("HTTP_KEEPALIVE_IDLE_SECS".into(), "0".into());
    assert_eq!(
        Config::from_map(&vars).unwrap().http.keepalive_idle,
        Duration::ZERO,
        "0 turns keep-alive off"
    );
    for name in [
        "HTTP_HEADER_READ_TIMEOUT_MS",
        "HTTP_BODY_READ_TIMEOUT_MS",
        "HTTP_UPLOAD_BODY_READ_TIMEOUT_MS",
        "HTTP_MAX_CONNECTIONS",
    ] {
        let mut vars = base();
        vars.insert(name.into(), "0".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{name} is invalid")), "{err}");
        vars.insert(name.into(), "soon".into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{name} is invalid")), "{err}");
    }
}

#[test]
fn webhook_schedule_parses_seconds() {
    let mut vars = base();
    vars.insert("WEBHOOK_RETRY_SCHEDULE".into(), "0.1, 0.2,1".into());
    let config = Config::from_map(&vars).unwrap();
    assert_eq!(
        config.webhooks.retry_schedule,
        vec![millis(100), millis(200), secs(1)]
    );
}

#[test]
fn outbox_unique_window_defaults_to_fifteen_minutes_and_refuses_under_a_minute() {
    let mut vars = base();
    assert_eq!(
        Config::from_map(&vars).unwrap().worker.outbox_unique_window,
        secs(900)
    );
    vars.insert("OUTBOX_UNIQUE_WINDOW_SECS".into(), "60".into());
    assert_eq!(
        Config::from_map(&vars).unwrap().worker.outbox_unique_window,
        secs(60)
    );
    for refused in ["59", "0", "a while"] {
        vars.insert("OUTBOX_UNIQUE_WINDOW_SECS".into(), refused.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("OUTBOX_UNIQUE_WINDOW_SECS is invalid"),
            "{refused}: {err}"
        );
    }
}

#[test]
fn webhook_endpoint_limits_default_to_a_cap_of_four_and_a_breaker_after_five_failures() {
    use crate::queue::{Breaker, GroupLimits, RateLimit};
    let mut vars = base();
    let webhooks = Config::from_map(&vars).unwrap().webhooks;
    assert_eq!(
        webhooks.per_endpoint,
        GroupLimits {
            rate: None,
            concurrency: Some(4),
            breaker: Some(Breaker {
                failures: 5,
                cooldown: Duration::from_secs(30),
                max_cooldown: Duration::from_secs(1800),
            }),
        }
    );
    assert!(!webhooks.ordered);
    for (name, value) in [
        ("WEBHOOK_ENDPOINT_RATE", "10/s"),
        ("WEBHOOK_ENDPOINT_CONCURRENCY", "0"),
        ("WEBHOOK_BREAKER_FAILURES", "0"),
        ("WEBHOOK_ENDPOINT_ORDERED", "true"),
    ] {
        vars.insert(name.into(), value.into());
    }
    let webhooks = Config::from_map(&vars).unwrap().webhooks;
    assert_eq!(
        webhooks.per_endpoint,
        GroupLimits {
            rate: Some(RateLimit::parse("10/s").unwrap()),
            concurrency: None,
            breaker: None,
        },
        "0 turns the cap and the breaker off"
    );
    assert!(webhooks.ordered);
    for (name, refused) in [
        ("WEBHOOK_ENDPOINT_RATE", "10"),
        ("WEBHOOK_ENDPOINT_CONCURRENCY", "-1"),
        ("WEBHOOK_BREAKER_COOLDOWN_SECS", "0"),
    ] {
        let mut vars = base();
        vars.insert(name.into(), refused.into());
        assert!(Config::from_map(&vars).is_err(), "{name}={refused}");
    }
}

#[test]
fn queue_limits_combine_rates_and_caps_per_queue_and_refuse_mistakes() {
    use crate::queue::{QueueLimits, RateLimit};
    let mut vars = base();
    assert!(
        Config::from_map(&vars)
            .unwrap()
            .worker
            .queue_limits
            .is_empty()
    );
    vars.insert(
        "QUEUE_RATE_LIMITS".into(),
        "emails=40/s, webhooks=500/m".into(),
    );
    vars.insert(
        "QUEUE_CONCURRENCY_LIMITS".into(),
        "reports=2,emails=8".into(),
    );
    let limits = Config::from_map(&vars).unwrap().worker.queue_limits;
    assert_eq!(
        limits,
        vec![
            (
                "emails".to_owned(),
                QueueLimits {
                    rate: Some(RateLimit::parse("40/s").unwrap()),
                    concurrency: Some(8),
                    ..QueueLimits::default()
                }
            ),
            (
                "webhooks".to_owned(),
                QueueLimits {
                    rate: Some(RateLimit::parse("500/m").unwrap()),
                    ..QueueLimits::default()
                }
            ),
            (
                "reports".to_owned(),
                QueueLimits {
                    concurrency: Some(2),
                    ..QueueLimits::default()
                }
            ),
        ]
    );
    for (name, refused) in [
        ("QUEUE_RATE_LIMITS", "emails=40"),
        ("QUEUE_RATE_LIMITS", "emails=0/s"),
        ("QUEUE_RATE_LIMITS", "emails=1/s,emails=2/s"),
        ("QUEUE_CONCURRENCY_LIMITS", "reports=0"),
        ("QUEUE_CONCURRENCY_LIMITS", "Reports=2"),
    ] {
        let mut vars = base();
        vars.insert(name.into(), refused.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{name} is invalid")),
            "{refused}: {err}"
        );
    }
}

#[test]
fn queue_partitions_are_read_and_must_fit_the_queues_limits() {
    let mut vars = base();
    let partitions = Config::from_map(&vars).unwrap().worker.queue_partitions;
    assert_eq!(partitions.count("emails"), 1);
    vars.insert("QUEUE_PARTITIONS".into(), "emails=4, webhooks=2".into());
    vars.insert("QUEUE_CONCURRENCY_LIMITS".into(), "emails=4".into());
    let partitions = Config::from_map(&vars).unwrap().worker.queue_partitions;
    assert_eq!(
        (partitions.count("emails"), partitions.count("webhooks")),
        (4, 2)
    );
    assert_eq!(partitions.names("webhooks"), ["webhooks", "webhooks~1"]);
    for (partitions, limits, says) in [
        ("emails=0", "", "partition count from 1 to 64"),
        ("emails=65", "", "partition count from 1 to 64"),
        ("emails=4,emails=2", "", "listed twice"),
        ("Emails=4", "", "not a queue name"),
        (
            "emails=4",
            "emails=3",
            "cap of 3 cannot be shared by 4 partitions",
        ),
    ] {
        let mut vars = base();
        vars.insert("QUEUE_PARTITIONS".into(), partitions.into());
        vars.insert("QUEUE_CONCURRENCY_LIMITS".into(), limits.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with("QUEUE_PARTITIONS is invalid") && err.contains(says),
            "{partitions} / {limits}: {err}"
        );
    }
    let mut vars = base();
    vars.insert("QUEUE_PARTITIONS".into(), "emails=8".into());
    vars.insert("QUEUE_RATE_LIMITS".into(), "emails=7/h".into());
    let err = Config::from_map(&vars).unwrap_err().to_string();
    assert!(
        err.contains("7/h cannot be shared by 8 partitions"),
        "{err}"
    );
}

#[test]
fn upload_retention_and_its_schedule_are_configurable() {
    use crate::queue::schedule::Recurrence;
    let mut vars = base();
    let config = Config::from_map(&vars).unwrap().maintenance;
    assert_eq!(config.upload_retention, secs(30 * 86_400));
    assert_eq!(
        config.expire_uploads,
        Some(Recurrence::cron("0 10 4 * * *", "UTC").unwrap()),
        "daily at 04:10 by default"
    );

    vars.insert("UPLOAD_RETENTION_DAYS".into(), "7".into());
    vars.insert(
        "MAINTENANCE_EXPIRE_UPLOADS_CRON".into(),
        "0 30 2 * * SUN".into(),
    );
    let config = Config::from_map(&vars).unwrap().maintenance;
    assert_eq!(config.upload_retention, secs(7 * 86_400));
    assert_eq!(
        config.expire_uploads,
        Some(Recurrence::cron("0 30 2 * * SUN", "UTC").unwrap())
    );
    vars.insert("MAINTENANCE_EXPIRE_UPLOADS_CRON".into(), "OFF".into());
    assert!(
        Config::from_map(&vars)
            .unwrap()
            .maintenance
            .expire_uploads
            .is_none()
    );

    for (name, value, says) in [
        ("UPLOAD_RETENTION_DAYS", "0", "between 1 and 3650"),
        ("UPLOAD_RETENTION_DAYS", "3651", "between 1 and 3650"),
        ("UPLOAD_RETENTION_DAYS", "a month", "UPLOAD_RETENTION_DAYS"),
        ("MAINTENANCE_EXPIRE_UPLOADS_CRON", "nightly", "or \"off\""),
    ] {
        let mut vars = base();
        vars.insert(name.into(), value.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with(name) && err.contains(says),
            "{name}={value}: {err}"
        );
    }
}

#[test]
fn maintenance_schedules_are_checked_and_can_be_turned_off() {
    let mut vars = base();
    let config = Config::from_map(&vars).unwrap().maintenance;
    assert!(config.purge_idempotency_keys.is_some() && config.trim_dead_jobs.is_some());
    assert_eq!(config.dead_job_retention, secs(30 * 86_400));

    vars.insert("MAINTENANCE_TRIM_DEAD_JOBS_CRON".into(), "off".into());
    vars.insert("MAINTENANCE_TIME_ZONE".into(), "Europe/Berlin".into());
    vars.insert(
        "MAINTENANCE_PURGE_IDEMPOTENCY_KEYS_CRON".into(),
        "0 0 4 * * MON".into(),
    );
    let config = Config::from_map(&vars).unwrap().maintenance;
    assert!(config.trim_dead_jobs.is_none());
    assert_eq!(
        config.purge_idempotency_keys,
        Some(crate::queue::schedule::Recurrence::cron("0 0 4 * * MON", "Europe/Berlin").unwrap())
    );

    for (name, value, says) in [
        (
            "MAINTENANCE_TRIM_DEAD_JOBS_CRON",
            "every night",
            "5 or 6 fields",
        ),
        (
            "MAINTENANCE_PURGE_IDEMPOTENCY_KEYS_CRON",
            "0 61 * * * *",
            "minute",
        ),
        ("MAINTENANCE_TIME_ZONE", "Berlin", "time zone"),
        ("DEAD_JOB_RETENTION_DAYS", "0", "between 1 and 3650"),
    ] {
        let mut vars = base();
        vars.insert(name.into(), value.into());
        let err = Config::from_map(&vars).unwrap_err().to_string();
        assert!(
            err.starts_with(name) && err.contains(says),
            "{name}={value}: {err}"
        );
    }
}

fn with(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut vars = base();
    for (k, v) in pairs {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    Config::from_map(&vars)
}

fn refused_variable(pairs: &[(&str, &str)]) -> &'static str {
    match with(pairs).unwrap_err() {
        ConfigError::Invalid { name, .. } | ConfigError::Missing { name, .. } => name,
    }
}

#[test]
fn traces_are_off_without_an_endpoint_and_read_the_standard_variables() {
    let off = Config::from_map(&base()).unwrap().traces;
    assert_eq!(off.endpoint, None, "no endpoint: no export");
    assert_eq!(off.sampler, TraceSampler::ParentBased(ParentRoot::AlwaysOn));

    let on = with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=a%20b,tenant=shop"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "Tenant=traces"),
        ("OTEL_SERVICE_NAME", "orderly-eu"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_BSP_SCHEDULE_DELAY", "250"),
        ("TRACE_FILTER", "info,orderly=debug"),
    ])
    .unwrap()
    .traces;
    assert_eq!(
        on.endpoint.as_deref(),
        Some("http://collector:4318/v1/traces"),
        "the signal path is appended to the base endpoint"
    );
    assert_eq!(
        on.headers,
        vec![
            ("api-key".to_owned(), "a b".to_owned()),
            ("Tenant".to_owned(), "traces".to_owned())
        ],
        "values are percent-decoded and the traces variant wins"
    );
    assert_eq!(on.service_name.as_deref(), Some("orderly-eu"));
    assert_eq!(
        on.resource_attributes,
        vec![("deployment.environment".to_owned(), "prod".to_owned())]
    );
    assert_eq!(
        on.sampler,
        TraceSampler::ParentBased(ParentRoot::Ratio(0.25))
    );
    assert_eq!(on.batch_delay, Duration::from_millis(250));
    assert_eq!(on.filter, "info,orderly=debug");

    let exact = with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://traces.example/otlp",
        ),
    ])
    .unwrap()
    .traces;
    assert_eq!(
        exact.endpoint.as_deref(),
        Some("https://traces.example/otlp"),
        "the traces endpoint is used as given"
    );

    for off_switch in [
        ("OTEL_SDK_DISABLED", "true"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ] {
        let off = with(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            off_switch,
        ])
        .unwrap()
        .traces;
        assert_eq!(off.endpoint, None, "{off_switch:?} turns export off");
    }
}

#[test]
fn trace_settings_that_cannot_work_are_refused_by_name() {
    let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
    assert_eq!(
        refused_variable(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    );
    assert_eq!(
        refused_variable(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]),
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    );
    assert_eq!(
        refused_variable(&[endpoint, ("OTEL_TRACES_EXPORTER", "jaeger")]),
        "OTEL_TRACES_EXPORTER"
    );
    assert_eq!(
        refused_variable(&[endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")]),
        "OTEL_TRACES_SAMPLER"
    );
    assert_eq!(
        refused_variable(&[
            endpoint,
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5")
        ]),
        "OTEL_TRACES_SAMPLER_ARG"
    );
    assert_eq!(
        refused_variable(&[endpoint, ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign")]),
        "OTEL_EXPORTER_OTLP_HEADERS"
    );
    assert_eq!(
        refused_variable(&[endpoint, ("OTEL_BSP_SCHEDULE_DELAY", "0")]),
        "OTEL_BSP_SCHEDULE_DELAY"
    );
    let message = with(&[
        endpoint,
        ("OTEL_EXPORTER_OTLP_HEADERS", "secretvalue-without-key"),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        !message.contains("without-key"),
        "a malformed header is not echoed whole (it may be an API key): {message}"
    );
}

#[test]
fn the_old_pgbouncer_switch_is_refused_with_what_to_do_instead() {
    let message = with(&[("DATABASE_PGBOUNCER", "true")])
        .unwrap_err()
        .to_string();
    assert!(message.starts_with("DATABASE_PGBOUNCER"), "{message}");
    assert!(message.contains("max_prepared_statements"), "{message}");
    assert!(
        with(&[("DATABASE_PGBOUNCER", "false")]).is_ok(),
        "false meant the default and still does"
    );
}

#[test]
fn replica_acknowledgements_are_off_by_default_and_bounded() {
    let defaults = Config::from_map(&base()).unwrap().redis;
    assert_eq!(defaults.wait_replicas, 0);
    assert_eq!(defaults.wait_timeout, Duration::from_millis(500));
    let on = with(&[
        ("REDIS_WAIT_REPLICAS", "1"),
        ("REDIS_WAIT_TIMEOUT_MS", "250"),
    ])
    .unwrap()
    .redis;
    assert_eq!(on.wait_replicas, 1);
    assert_eq!(on.wait_timeout, Duration::from_millis(250));
    for refused in ["0", "5000"] {
        assert_eq!(
            refused_variable(&[("REDIS_WAIT_TIMEOUT_MS", refused)]),
            "REDIS_WAIT_TIMEOUT_MS"
        );
    }
}

#[test]
fn redis_mode_is_one_server_unless_sentinels_are_named() {
    assert_eq!(
        Config::from_map(&base()).unwrap().redis.mode,
        RedisMode::Single
    );
    let sentinel = with(&[
        ("REDIS_MODE", "sentinel"),
        (
            "REDIS_URL",
            "redis://10.0.0.1:26379, redis://10.0.0.2:26379,redis://10.0.0.3:26379",
        ),
        ("REDIS_SENTINEL_MASTER", "orderly"),
    ])
    .unwrap()
    .redis;
    assert_eq!(
        sentinel.mode,
        RedisMode::Sentinel {
            master: "orderly".into()
        }
    );
    let servers = crate::redis::servers(&sentinel).expect("three Sentinels");
    assert!(format!("{servers:?}").contains("orderly"));

    // Sentinel mode needs the master's name, and every listed URL must be a redis:// one.
    assert_eq!(
        refused_variable(&[("REDIS_MODE", "sentinel")]),
        "REDIS_SENTINEL_MASTER"
    );
    assert_eq!(
        refused_variable(&[
            ("REDIS_MODE", "sentinel"),
            ("REDIS_SENTINEL_MASTER", "orderly"),
            ("REDIS_URL", "redis://10.0.0.1:26379,10.0.0.2:26379"),
        ]),
        "REDIS_URL"
    );
    for refused in ["clusters", "sentinels", "replicas"] {
        assert_eq!(refused_variable(&[("REDIS_MODE", refused)]), "REDIS_MODE");
    }
}

#[test]
fn cluster_mode_takes_seed_nodes_in_database_0() {
    let seeds = "redis://10.0.0.1:7000, redis://10.0.0.2:7000,redis://10.0.0.3:7000";
    let cluster = with(&[("REDIS_MODE", "cluster"), ("REDIS_URL", seeds)])
        .unwrap()
        .redis;
    assert_eq!(cluster.mode, RedisMode::Cluster);
    let servers = crate::redis::servers(&cluster).expect("three seed nodes");
    assert!(format!("{servers:?}").contains("10.0.0.3:7000"));

    for url in [
        "redis://10.0.0.1:7000,redis://10.0.0.2:7000/2",
        "redis://10.0.0.1:7000,10.0.0.2:7000",
    ] {
        assert_eq!(
            refused_variable(&[("REDIS_MODE", "cluster"), ("REDIS_URL", url)]),
            "REDIS_URL",
            "{url}"
        );
    }
    assert!(
        with(&[
            ("REDIS_MODE", "cluster"),
            ("REDIS_URL", "redis://10.0.0.1:7000/0")
        ])
        .is_ok()
    );
    // Each queue's pushes are confirmed by the replicas of the node that serves it.
    let confirmed = with(&[
        ("REDIS_MODE", "cluster"),
        ("REDIS_URL", seeds),
        ("REDIS_WAIT_REPLICAS", "1"),
    ])
    .unwrap()
    .redis;
    assert_eq!(confirmed.wait_replicas, 1);
}
