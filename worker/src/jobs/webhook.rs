//! Webhook deliveries: send one delivery, signed per the Standard Webhooks spec, and record the
//! attempt on its row.
//!
//! Outcomes:
//! - 2xx: delivered.
//! - 410 Gone: the receiver asks us to stop: the endpoint is disabled and the delivery fails
//!   for good.
//! - any other status (3xx included: redirects are never followed), a timeout or a network
//!   error: retried on the webhook schedule; a `Retry-After` (seconds or HTTP date) pushes the
//!   next attempt later, never earlier than the schedule.
//! - an address the guard refuses (private, loopback, ... and not allow-listed): fails for
//!   good without any connection.
//!
//! Idempotent: a delivery that is no longer pending is not sent again, and every attempt sends
//! the same `webhook-id` and body, so a receiver drops the duplicate that at-least-once
//! delivery can cause (a crash after the receiver's 2xx and before the row was updated).

use std::time::{Duration, SystemTime};

use apalis_core::task::data::Data;
use chrono::{DateTime, Utc};
use orderly::{
    jobs::WebhookJob,
    queue::{Job, JobError, JobInfo, RetryPolicy, job::JobResultExt},
    webhooks::{AttemptOutcome, AttemptRecord, DeliveryStatus, WebhookDelivery, WebhookEndpoint},
};
use reqwest::{
    StatusCode,
    header::{CONTENT_TYPE, HeaderMap, HeaderValue},
};

use crate::{
    context::JobContext,
    webhook_client::{Answer, SendError},
};

/// Longest wait a receiver's `Retry-After` can impose; anything longer is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

/// Reads a `Retry-After` value: delay-seconds or an HTTP date (a date in the past means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(
            value
                .parse::<u64>()
                .map_or(MAX_RETRY_AFTER, Duration::from_secs),
        );
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What to do after an attempt: what to record, what to tell the queue, whether to disable
/// the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Written on the delivery row.
    pub record: AttemptRecord,
    /// Returned to the engine (which applies the retry policy to an error).
    pub job: Result<(), JobError>,
    /// The receiver said 410 Gone.
    pub disable_endpoint: bool,
}

/// Where this attempt stands in the job's life, and the policy the engine retries it with.
#[derive(Debug, Clone)]
pub struct AttemptContext<'a> {
    /// This attempt, from 1.
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The job's retry policy (the engine's schedule).
    pub policy: &'a RetryPolicy,
    /// Now, for `next_retry_at` and HTTP-date `Retry-After` values.
    pub now: DateTime<Utc>,
}

/// Maps the result of one attempt to a [`Verdict`]. Pure, so every branch is unit-tested.
pub fn judge(sent: Result<Answer, SendError>, at: &AttemptContext<'_>) -> Verdict {
    let record = |status_code, latency, outcome| AttemptRecord {
        attempt: at.attempt,
        status_code,
        latency,
        outcome,
    };
    let answer = match sent {
        Ok(answer) => answer,
        Err(SendError::Refused(refused)) => {
            let error = format!("refused: {refused}");
            return Verdict {
                record: record(
                    None,
                    None,
                    AttemptOutcome::Failed {
                        error: error.clone(),
                    },
                ),
                job: Err(JobError::permanent(error)),
                disable_endpoint: false,
            };
        }
        Err(error) => return retry_or_give_up(at, None, error.latency(), error.to_string(), None),
    };
    let code = Some(answer.status.as_u16());
    if answer.status.is_success() {
        return Verdict {
            record: record(code, Some(answer.latency), AttemptOutcome::Delivered),
            job: Ok(()),
            disable_endpoint: false,
        };
    }
    if answer.status == StatusCode::GONE {
        let error = "HTTP 410 Gone: the endpoint was disabled".to_owned();
        return Verdict {
            record: record(
                code,
                Some(answer.latency),
                AttemptOutcome::Failed {
                    error: error.clone(),
                },
            ),
            job: Err(JobError::permanent(error)),
            disable_endpoint: true,
        };
    }
    let mut error = format!("HTTP {}", answer.status);
    if answer.status.is_redirection() {
        error.push_str(&format!(
            " (redirect to {} not followed)",
            answer.location.as_deref().unwrap_or("nowhere")
        ));
    }
    let retry_after = answer
        .retry_after
        .as_deref()
        .and_then(|value| parse_retry_after(value, at.now.into()))
        .map(|wait| wait.min(MAX_RETRY_AFTER));
    retry_or_give_up(at, code, Some(answer.latency), error, retry_after)
}

fn retry_or_give_up(
    at: &AttemptContext<'_>,
    status_code: Option<u16>,
    latency: Option<Duration>,
    error: String,
    retry_after: Option<Duration>,
) -> Verdict {
    if at.attempt >= at.max_attempts {
        return Verdict {
            record: AttemptRecord {
                attempt: at.attempt,
                status_code,
                latency,
                outcome: AttemptOutcome::Failed {
                    error: format!(
                        "{error} (attempt {} of {}, giving up)",
                        at.attempt, at.max_attempts
                    ),
                },
            },
            // The engine sees the last attempt and moves the job to dead.
            job: Err(JobError::retry(error)),
            disable_endpoint: false,
        };
    }
    let scheduled = at.policy.backoff.delay(at.attempt, 0.5);
    let (delay, job) = match retry_after {
        // Never sooner than the receiver asked, never sooner than the schedule.
        Some(asked) => {
            let delay = asked.max(scheduled);
            (delay, JobError::retry_after(error.clone(), delay))
        }
        None => (scheduled, JobError::retry(error.clone())),
    };
    Verdict {
        record: AttemptRecord {
            attempt: at.attempt,
            status_code,
            latency,
            outcome: AttemptOutcome::Retrying {
                error,
                next_retry_at: at.now + chrono::Duration::from_std(delay).unwrap_or_default(),
            },
        },
        job: Err(job),
        disable_endpoint: false,
    }
}

/// The Standard Webhooks headers for one attempt.
fn signed_headers(
    endpoint: &WebhookEndpoint,
    delivery: &WebhookDelivery,
    timestamp: i64,
) -> Result<HeaderMap, JobError> {
    let message_id = delivery.id.to_string();
    // Both the new and the previous secret's signatures while a rotation's overlap lasts.
    let signature = endpoint
        .signature(&message_id, timestamp, &delivery.payload, Utc::now())
        .map_err(|e| JobError::permanent(format!("cannot sign: {e}")))?;
    let value =
        |v: String| HeaderValue::from_str(&v).map_err(|e| JobError::permanent(e.to_string()));
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", value(message_id)?);
    headers.insert("webhook-timestamp", value(timestamp.to_string())?);
    headers.insert("webhook-signature", value(signature)?);
    Ok(headers)
}

/// Sends one delivery.
#[tracing::instrument(skip_all, fields(delivery_id = %job.delivery_id))]
pub async fn handle(
    job: WebhookJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    let services = &ctx.services;
    let Some((delivery, endpoint)) = services
        .webhooks
        .delivery_to_send(job.delivery_id)
        .await
        .context("loading the delivery")?
    else {
        tracing::warn!("delivery or its endpoint no longer exists; nothing to send");
        return Ok(());
    };
    if delivery.status != DeliveryStatus::Pending {
        tracing::info!(
            status = delivery.status.as_str(),
            "delivery already settled; not sending again"
        );
        return Ok(());
    }
    if !endpoint.enabled {
        let record = AttemptRecord {
            attempt: info.attempt,
            status_code: None,
            latency: None,
            outcome: AttemptOutcome::Failed {
                error: "endpoint disabled; not sent".into(),
            },
        };
        services
            .webhooks
            .record_attempt(delivery.id, &record)
            .await
            .context("recording the attempt")?;
        tracing::info!(endpoint_id = %endpoint.id, "endpoint disabled; delivery dropped");
        return Ok(());
    }

    let headers = signed_headers(&endpoint, &delivery, Utc::now().timestamp())?;
    let sent = ctx
        .webhooks
        .post(&endpoint.url, headers, delivery.payload.clone())
        .await;
    let policy = job.retry_policy(services.jobs.settings());
    let verdict = judge(
        sent,
        &AttemptContext {
            attempt: info.attempt,
            max_attempts: info.max_attempts,
            policy: &policy,
            now: Utc::now(),
        },
    );
    // The endpoint first: whoever reads the delivery as failed by a 410 then finds its endpoint
    // disabled too (the other way round, a reader could see the one without the other).
    if verdict.disable_endpoint {
        services
            .webhooks
            .disable_endpoint(endpoint.id, "the receiver answered 410 Gone")
            .await
            .context("disabling the endpoint")?;
    }
    services
        .webhooks
        .record_attempt(delivery.id, &verdict.record)
        .await
        .context("recording the attempt")?;
    match &verdict.job {
        Ok(()) => tracing::info!(
            endpoint_id = %endpoint.id,
            status = verdict.record.status_code,
            latency_ms = verdict.record.latency.map(|l| l.as_millis() as u64),
            "webhook delivered"
        ),
        Err(error) => {
            tracing::warn!(endpoint_id = %endpoint.id, error = %error, "webhook attempt failed")
        }
    }
    verdict.job
}

#[cfg(test)]
mod tests {
    use orderly::webhooks::address::Refused;

    use super::*;

    fn answer(status: u16) -> Answer {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            location: None,
            latency: Duration::from_millis(12),
        }
    }

    fn schedule() -> RetryPolicy {
        RetryPolicy::schedule(&[Duration::from_secs(5), Duration::from_secs(300)])
    }

    fn at(attempt: u32, policy: &RetryPolicy) -> AttemptContext<'_> {
        AttemptContext {
            attempt,
            max_attempts: policy.max_attempts,
            policy,
            now: DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
                .unwrap()
                .to_utc(),
        }
    }

    fn next_retry(verdict: &Verdict) -> Option<DateTime<Utc>> {
        match verdict.record.outcome {
            AttemptOutcome::Retrying { next_retry_at, .. } => Some(next_retry_at),
            _ => None,
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 01 Jan 2025 00:00:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 01 Jan 2025 00:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            parse_retry_after("Tue, 31 Dec 2024 23:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(MAX_RETRY_AFTER)
        );
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn success_is_delivered() {
        let policy = schedule();
        let verdict = judge(Ok(answer(204)), &at(1, &policy));
        assert_eq!(verdict.job, Ok(()));
        assert_eq!(verdict.record.outcome, AttemptOutcome::Delivered);
        assert_eq!(verdict.record.status_code, Some(204));
        assert_eq!(verdict.record.latency, Some(Duration::from_millis(12)));
    }

    #[test]
    fn server_errors_retry_on_the_schedule() {
        let policy = schedule();
        let first = judge(Ok(answer(500)), &at(1, &policy));
        assert_eq!(
            first.job,
            Err(JobError::retry("HTTP 500 Internal Server Error"))
        );
        assert_eq!(
            next_retry(&first),
            Some(at(1, &policy).now + chrono::Duration::seconds(5))
        );
        let second = judge(Ok(answer(503)), &at(2, &policy));
        assert_eq!(
            next_retry(&second),
            Some(at(2, &policy).now + chrono::Duration::seconds(300))
        );
        let last = judge(Ok(answer(500)), &at(3, &policy));
        assert!(matches!(last.record.outcome, AttemptOutcome::Failed { .. }));
        assert!(
            matches!(last.job, Err(JobError::Retry { .. })),
            "the engine gives up on the last attempt"
        );
    }

    #[test]
    fn gone_disables_the_endpoint() {
        let policy = schedule();
        let verdict = judge(Ok(answer(410)), &at(1, &policy));
        assert!(verdict.disable_endpoint);
        assert!(matches!(verdict.job, Err(JobError::Permanent(_))));
        assert_eq!(verdict.record.status(), DeliveryStatus::Failed);
    }

    #[test]
    fn retry_after_postpones_but_never_hastens() {
        let policy = schedule();
        let mut later = answer(429);
        later.retry_after = Some("60".into());
        let verdict = judge(Ok(later), &at(1, &policy));
        assert_eq!(
            verdict.job,
            Err(JobError::retry_after(
                "HTTP 429 Too Many Requests",
                Duration::from_secs(60)
            ))
        );
        assert_eq!(
            next_retry(&verdict),
            Some(at(1, &policy).now + chrono::Duration::seconds(60))
        );

        let mut sooner = answer(503);
        sooner.retry_after = Some("1".into());
        let verdict = judge(Ok(sooner), &at(1, &policy));
        assert_eq!(
            next_retry(&verdict),
            Some(at(1, &policy).now + chrono::Duration::seconds(5))
        );

        let mut forever = answer(503);
        forever.retry_after = Some("31536000".into());
        let verdict = judge(Ok(forever), &at(1, &policy));
        assert_eq!(
            next_retry(&verdict),
            Some(at(1, &policy).now + chrono::Duration::from_std(MAX_RETRY_AFTER).unwrap())
        );
    }

    #[test]
    fn redirects_are_failures_naming_the_target() {
        let policy = schedule();
        let mut redirect = answer(302);
        redirect.location = Some("http://169.254.169.254/".into());
        let verdict = judge(Ok(redirect), &at(1, &policy));
        let AttemptOutcome::Retrying { error, .. } = &verdict.record.outcome else {
            panic!("a redirect is retried");
        };
        assert!(
            error.contains("302") && error.contains("not followed"),
            "{error}"
        );
    }

    #[test]
    fn refused_addresses_fail_at_once_without_latency() {
        let policy = schedule();
        let refused = SendError::Refused(Refused::blocked(
            "localhost",
            &["127.0.0.1".parse().unwrap()],
        ));
        let verdict = judge(Err(refused), &at(1, &policy));
        assert!(matches!(verdict.job, Err(JobError::Permanent(_))));
        assert_eq!(verdict.record.latency, None);
        assert_eq!(verdict.record.status(), DeliveryStatus::Failed);
    }

    #[test]
    fn timeouts_and_network_errors_retry() {
        let policy = schedule();
        let timeout = judge(
            Err(SendError::Timeout {
                latency: Duration::from_secs(10),
            }),
            &at(1, &policy),
        );
        assert!(matches!(
            timeout.job,
            Err(JobError::Retry { after: None, .. })
        ));
        assert_eq!(timeout.record.latency, Some(Duration::from_secs(10)));
        let network = judge(
            Err(SendError::Network {
                message: "connection refused".into(),
                latency: Duration::from_millis(1),
            }),
            &at(1, &policy),
        );
        assert!(matches!(network.job, Err(JobError::Retry { .. })));
        assert_eq!(network.record.status_code, None);
    }
}
