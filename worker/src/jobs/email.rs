//! Email jobs: order confirmation and cancellation, welcome, report ready.
//!
//! Idempotent as far as SMTP allows: the sent-mail log is checked before sending and written
//! after the server accepted the message. The window that remains is a crash (or a lost
//! connection) after the server accepted the message and before the log row is written; a
//! retry then sends a second copy. SMTP has no way to ask "did you get this one already?".

use apalis_core::task::data::Data;
use orderly::{
    emails::SentEmail,
    jobs::EmailJob,
    orders::Order,
    queue::{JobError, JobInfo, job::JobResultExt},
};
use serde_json::json;

use crate::{
    context::JobContext,
    mailer::{Email, Mailer},
};

/// Formats minor units as `12.99 EUR`.
pub fn money(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", cents / 100, cents % 100)
}

fn order_context(order: &Order, name: &str) -> serde_json::Value {
    json!({
        "name": name,
        "order": { "id": order.id.to_string(), "status": order.status.as_str() },
        "total": money(order.total_cents, &order.currency),
        "items": order.items.iter().map(|i| json!({
            "name": i.name,
            "sku": i.sku,
            "quantity": i.quantity,
            "unit_price": money(i.unit_price_cents, &order.currency),
            "line_total": money(i.line_total_cents(), &order.currency),
        })).collect::<Vec<_>>(),
    })
}

/// Renders the message for `job`, or `None` when what it is about no longer exists.
async fn render(job: &EmailJob, ctx: &JobContext) -> Result<Option<Email>, JobError> {
    let services = &ctx.services;
    let (template, to, context) = match job {
        EmailJob::OrderConfirmation { order_id } | EmailJob::OrderCancelled { order_id } => {
            let Some(order) = services
                .orders
                .find(*order_id)
                .await
                .context("loading the order")?
            else {
                tracing::warn!(%order_id, "order no longer exists; nothing to send");
                return Ok(None);
            };
            let Some(user) = services
                .users
                .find(order.user_id)
                .await
                .context("loading the customer")?
            else {
                tracing::warn!(user_id = %order.user_id, "customer no longer exists; nothing to send");
                return Ok(None);
            };
            let template = if matches!(job, EmailJob::OrderConfirmation { .. }) {
                "order_confirmation"
            } else {
                "order_cancelled"
            };
            (
                template,
                user.email.clone(),
                order_context(&order, &user.name),
            )
        }
        EmailJob::Welcome { user_id } => {
            let Some(user) = services
                .users
                .find(*user_id)
                .await
                .context("loading the user")?
            else {
                tracing::warn!(%user_id, "user no longer exists; nothing to send");
                return Ok(None);
            };
            (
                "welcome",
                user.email.clone(),
                json!({ "name": user.name, "email": user.email }),
            )
        }
        EmailJob::ReportReady { report_id } => {
            let Some(report) = services
                .reports
                .find(*report_id)
                .await
                .context("loading the report")?
            else {
                tracing::warn!(%report_id, "report no longer exists; nothing to send");
                return Ok(None);
            };
            let Some(user) = services
                .users
                .find(report.user_id)
                .await
                .context("loading the requester")?
            else {
                return Ok(None);
            };
            let download_url = format!(
                "{}/api/v1/reports/{}/download",
                services.config.mail.public_base_url.trim_end_matches('/'),
                report.id
            );
            (
                "report_ready",
                user.email.clone(),
                json!({
                    "name": user.name,
                    "download_url": download_url,
                    "report": {
                        "kind": report.kind,
                        "from": report.from_date.to_string(),
                        "to": report.to_date.to_string(),
                        "row_count": report.row_count.unwrap_or(0),
                    },
                }),
            )
        }
    };
    let rendered = ctx
        .templates
        .render(template, &context)
        .map_err(|e| JobError::permanent(e.to_string()))?;
    Ok(Some(Email {
        to,
        subject: rendered.subject,
        text: rendered.text,
        html: rendered.html,
    }))
}

/// Sends the email of one job.
pub async fn handle(
    job: EmailJob,
    ctx: Data<JobContext>,
    info: Data<JobInfo>,
) -> Result<(), JobError> {
    let services = &ctx.services;
    // The log check and the reads that render the message are independent, so they run side by
    // side on two connections: one round trip of latency instead of two on every email. Only a
    // retry of a message already sent wastes the render.
    let (already_sent, rendered) =
        tokio::join!(services.sent_emails.was_sent(&info.id), render(&job, &ctx));
    if already_sent.context("checking the sent-mail log")? {
        tracing::info!("already sent by an earlier attempt; skipping");
        return Ok(());
    }
    let Some(email) = rendered? else {
        return Ok(());
    };
    let from = services
        .config
        .mail
        .from
        .parse()
        .map_err(|e| JobError::permanent(format!("MAIL_FROM is not a valid address: {e}")))?;
    let message = Mailer::build(&from, &email)?;
    ctx.mailer.send(message).await?;
    services
        .sent_emails
        .record(&SentEmail {
            job_id: info.id.clone(),
            kind: info.kind.clone(),
            recipient: email.to.clone(),
            subject: email.subject.clone(),
        })
        .await
        .context("recording the sent email")?;
    tracing::info!(to = %email.to, subject = %email.subject, "email sent");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::money;

    #[test]
    fn money_formats_minor_units() {
        assert_eq!(money(1299, "EUR"), "12.99 EUR");
        assert_eq!(money(5, "USD"), "0.05 USD");
        assert_eq!(money(-250, "EUR"), "-2.50 EUR");
    }
}
