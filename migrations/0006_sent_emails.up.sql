-- One row per email handed to the mail server, keyed by the job that sent it: a job retried
-- after a successful send finds its row and does not send again.
create table sent_emails (
    job_id     text primary key,
    kind       text        not null,
    recipient  text        not null,
    subject    text        not null,
    sent_at    timestamptz not null default now(),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create trigger sent_emails_updated_at before update on sent_emails
    for each row execute function set_updated_at();
