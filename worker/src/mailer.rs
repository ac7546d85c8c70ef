//! Outgoing mail: SMTP when `SMTP_URL` is set (async, pooled connections, STARTTLS/TLS and
//! credentials from lettre's URL form), otherwise `.eml` files in `MAIL_DIR`, so a developer
//! machine needs no mail server.
//!
//! SMTP failures are classified for the queue: 5xx replies (unknown recipient, rejected
//! content) are permanent and the job goes dead at once with the server's reason; 4xx replies
//! and connection problems are transient and retried with backoff.

use std::path::PathBuf;

use lettre::{
    AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, MultiPart, SinglePart, header::ContentType},
};
use orderly::{config::MailConfig, queue::JobError};

use crate::smtp::{SmtpPool, classify};
use secrecy::ExposeSecret;

/// A rendered email.
#[derive(Debug, Clone)]
pub struct Email {
    /// The one mailbox the message goes to (a plain address, already checked at registration).
    pub to: String,
    /// The subject line, rendered from the template.
    pub subject: String,
    /// Plain-text body.
    pub text: String,
    /// HTML body.
    pub html: String,
}

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// A real SMTP server over `smtp://`: our pool of `TCP_NODELAY` connections.
    SmtpPool(SmtpPool),
    /// A real SMTP server over `smtps://` (implicit TLS): lettre's transport.
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    /// `.eml` files in a folder.
    Files(AsyncFileTransport<Tokio1Executor>, PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::SmtpPool(pool) => write!(f, "Mailer::{pool:?}"),
            Self::Smtp(_) => f.write_str("Mailer::Smtp"),
            Self::Files(_, dir) => write!(f, "Mailer::Files({})", dir.display()),
        }
    }
}

/// Time limit for connecting to the SMTP server and for each send.
const SMTP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The sender address.
#[derive(Debug, Clone)]
pub struct Sender(pub Mailbox);

impl Mailer {
    /// The transport configured by `MAIL_*` / `SMTP_URL`.
    pub fn from_config(config: &MailConfig) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                // lettre validates every form; `smtp://` then goes through our pool.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is invalid: {e}"))?
                    .timeout(Some(SMTP_TIMEOUT))
                    .build();
                match SmtpPool::from_url(url.expose_secret(), SMTP_TIMEOUT)
                    .map_err(|e| anyhow::anyhow!("SMTP_URL is invalid: {e}"))?
                {
                    Some(pool) => Ok(Self::SmtpPool(pool)),
                    None => Ok(Self::Smtp(transport)),
                }
            }
            None => {
                std::fs::create_dir_all(&config.mail_dir)?;
                Ok(Self::Files(
                    AsyncFileTransport::<Tokio1Executor>::new(&config.mail_dir),
                    config.mail_dir.clone(),
                ))
            }
        }
    }

    /// Builds a multipart (text + HTML) message.
    pub fn build(from: &Mailbox, email: &Email) -> Result<Message, JobError> {
        let to: Mailbox = email
            .to
            .parse()
            .map_err(|e| JobError::permanent(format!("invalid recipient {:?}: {e}", email.to)))?;
        Message::builder()
            .from(from.clone())
            .to(to)
            .subject(&email.subject)
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(email.text.clone()),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(email.html.clone()),
                    ),
            )
            .map_err(|e| JobError::permanent(format!("cannot build message: {e}")))
    }

    /// Sends a message, classifying failures as transient or permanent.
    pub async fn send(&self, message: Message) -> Result<(), JobError> {
        match self {
            Self::SmtpPool(pool) => pool.send(message.envelope(), &message.formatted()).await,
            Self::Smtp(transport) => transport.send(message).await.map(|_| ()).map_err(classify),
            Self::Files(transport, _) => transport
                .send(message)
                .await
                .map(|_| ())
                .map_err(|e| JobError::retry(format!("could not write the mail file: {e}"))),
        }
    }
}
