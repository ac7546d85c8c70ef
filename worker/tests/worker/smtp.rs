//! Emails against a real SMTP server on a loopback port: the order confirmation arrives with
//! the right recipient, subject and lines; a 451 (greylisting) is retried and then accepted; a
//! 550 is dead at once with the server's reason; a job run again after a successful send does not send twice.

use std::{
    net::{IpAddr, TcpListener},
    sync::{Arc, Mutex},
    time::Duration,
};

use apalis_core::task::data::Data;
use mailin_embedded::{Handler, Response, Server, response};
use orderly::{
    jobs::EmailJob,
    queue::{JobControl, JobInfo, JobState},
    testing::eventually,
};
use orderly_worker::jobs::{JobContext, email};
use sqlx::PgPool;

use crate::helpers::{services, shop, start_shop_worker};

/// One message as the server received it.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

#[derive(Default)]
struct State {
    /// Replies to the next RCPT TO commands, in order; then `rcpt_reply`.
    rcpt_replies: Vec<Response>,
    /// Reply to every other RCPT TO (None: 250).
    rcpt_reply: Option<Response>,
    received: Vec<Received>,
    /// When each message ended (its data was accepted), in order.
    arrivals: Vec<std::time::Instant>,
    rcpt_attempts: usize,
}

/// One per connection (mailin clones the handler for each): the message in progress is the
/// connection's own, only the server-wide state is shared.
#[derive(Clone)]
struct Recorder {
    state: Arc<Mutex<State>>,
    current: Received,
}

impl Handler for Recorder {
    fn mail(&mut self, _ip: IpAddr, _domain: &str, from: &str) -> Response {
        self.current = Received {
            from: from.to_owned(),
            ..Received::default()
        };
        response::OK
    }

    fn rcpt(&mut self, to: &str) -> Response {
        let mut state = self.state.lock().unwrap();
        state.rcpt_attempts += 1;
        if !state.rcpt_replies.is_empty() {
            return state.rcpt_replies.remove(0);
        }
        if let Some(reply) = state.rcpt_reply.clone() {
            return reply;
        }
        drop(state);
        self.current.to.push(to.to_owned());
        response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.data.push_str(&String::from_utf8_lossy(buf));
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let message = std::mem::take(&mut self.current);
        let mut state = self.state.lock().unwrap();
        state.received.push(message);
        state.arrivals.push(std::time::Instant::now());
        response::OK
    }
}

/// A real SMTP server (mailin) on 127.0.0.1:<free port>, serving until the test process ends.
pub struct TestSmtp {
    state: Arc<Mutex<State>>,
    pub url: String,
}

impl TestSmtp {
    pub fn start(rcpt_replies: Vec<Response>, rcpt_reply: Option<Response>) -> Self {
        let state = Arc::new(Mutex::new(State {
            rcpt_replies,
            rcpt_reply,
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("smtp://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let mut server = Server::new(Recorder {
            state: state.clone(),
            current: Received::default(),
        });
        // One thread per connection: mailin's default of 4 would let the pooled, idle
        // connections of one worker process hold every thread while another process's send
        // waits unserved (seen with three workers); a real server serves them all.
        server
            .with_name("test-smtp")
            .with_num_threads(64)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Self { state, url }
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// When each message arrived, in order.
    pub fn arrivals(&self) -> Vec<std::time::Instant> {
        self.state.lock().unwrap().arrivals.clone()
    }

    pub fn rcpt_attempts(&self) -> usize {
        self.state.lock().unwrap().rcpt_attempts
    }
}

fn smtp_overrides(smtp: &TestSmtp) -> Vec<(&'static str, String)> {
    vec![
        ("SMTP_URL", smtp.url.clone()),
        ("EMAIL_RETRY_BASE_MS", "100".into()),
        ("MAIL_FROM", "Orderly <orders@shop.example>".into()),
    ]
}

/// Undoes header folding and quoted-printable soft line breaks, enough to search the message.
pub fn unfold(data: &str) -> String {
    data.replace("\r\n ", " ")
        .replace("\r\n\t", " ")
        .replace("=\r\n", "")
        .replace("=3D", "=")
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn the_order_confirmation_reaches_the_smtp_server(pool: PgPool) {
    let smtp = TestSmtp::start(vec![], None);
    let s = services(pool, &smtp_overrides(&smtp));
    let fixture = shop(&s, 10).await;
    let order = fixture.order(&s, 3).await;
    let worker = start_shop_worker(&s, &["emails"]);
    // The welcome email and the confirmation.
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 2
        })
        .await
    );
    worker.stop().await.unwrap();
    let received = smtp.received();
    let confirmation = received
        .iter()
        .find(|m| unfold(&m.data).contains(&format!("Subject: Your order {}", order.id)))
        .expect("confirmation received");
    assert_eq!(
        confirmation.to,
        std::slice::from_ref(&fixture.customer.email)
    );
    assert!(confirmation.from.contains("orders@shop.example"));
    let body = unfold(&confirmation.data);
    assert!(body.contains("38.97 EUR"), "total in the body: {body}");
    assert!(
        body.contains("3 x Blue mug"),
        "line in the text part: {body}"
    );
    assert!(body.contains("text/html"), "has an HTML part");
}

/// Greylisting: the server answers the recipient with 451 ("try again later") once.
#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_451_is_retried_and_then_delivered(pool: PgPool) {
    let greylisted = Response::custom(451, "4.7.1 Greylisted, please try again later".into());
    let smtp = TestSmtp::start(vec![greylisted], None);
    let s = services(pool, &smtp_overrides(&smtp));
    let fixture = shop(&s, 10).await;
    // Only the welcome email is in flight: it gets the 451, then 250.
    let worker = start_shop_worker(&s, &["emails"]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            smtp.received().len() == 1
        })
        .await
    );
    worker.stop().await.unwrap();
    assert_eq!(smtp.rcpt_attempts(), 2);
    assert_eq!(
        smtp.received()[0].to,
        std::slice::from_ref(&fixture.customer.email)
    );
    let sent = s
        .sent_emails
        .for_recipient(&fixture.customer.email)
        .await
        .unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].kind, "email.welcome");
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_550_is_dead_on_the_first_attempt_with_the_reason(pool: PgPool) {
    let smtp = TestSmtp::start(vec![], Some(response::NO_MAILBOX));
    let s = services(pool, &smtp_overrides(&smtp));
    let fixture = shop(&s, 10).await;
    let worker = start_shop_worker(&s, &["emails"]);
    assert!(
        eventually(Duration::from_secs(20), || async {
            s.queue.counts("emails").await.unwrap().dead == 1
        })
        .await
    );
    worker.stop().await.unwrap();
    assert!(smtp.received().is_empty());
    let dead = s.queue.list("emails", JobState::Dead, 0, 10).await.unwrap();
    assert_eq!(dead.jobs[0].attempts, 1, "no retry of a permanent failure");
    let reason = dead.jobs[0].last_error.clone().unwrap_or_default();
    assert!(reason.contains("550"), "server's reason kept: {reason}");
    assert!(
        s.sent_emails
            .for_recipient(&fixture.customer.email)
            .await
            .unwrap()
            .is_empty()
    );
}

#[sqlx::test(migrator = "orderly::db::MIGRATOR")]
async fn a_job_run_again_after_a_successful_send_does_not_send_twice(pool: PgPool) {
    let smtp = TestSmtp::start(vec![], None);
    let s = services(pool, &smtp_overrides(&smtp));
    let fixture = shop(&s, 10).await;
    let context = JobContext::new(s.services.clone()).await.unwrap();
    let info = JobInfo {
        id: "job-sent-once".into(),
        queue: "emails".into(),
        kind: "email.welcome".into(),
        attempt: 1,
        max_attempts: 3,
        request_id: None,
        control: JobControl::detached(),
    };
    let job = EmailJob::Welcome {
        user_id: fixture.customer.id,
    };
    // The same job twice, as at-least-once delivery may do after a lost ack.
    email::handle(
        job.clone(),
        Data::new(context.clone()),
        Data::new(info.clone()),
    )
    .await
    .unwrap();
    email::handle(job, Data::new(context), Data::new(info))
        .await
        .unwrap();
    assert_eq!(smtp.received().len(), 1);
}
