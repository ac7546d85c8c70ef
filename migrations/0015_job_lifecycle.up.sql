-- Job lifecycle in the domain rows: a report or an upload can be cancelled (its job is cancelled
-- in the queue, or signalled while it runs), and each row remembers the job that builds or
-- processes it, so a cancel request and a client's live event stream find that job.
alter table reports drop constraint reports_status_check;
alter table reports add constraint reports_status_check
    check (status in ('queued', 'running', 'ready', 'failed', 'expired', 'cancelled'));
-- The queue job building the report (the outbox id it was staged with); null for rows older
-- than this migration.
alter table reports add column job_id uuid;
alter table reports add column cancelled_at timestamptz;

alter table uploads drop constraint uploads_status_check;
alter table uploads add constraint uploads_status_check
    check (status in ('queued', 'processing', 'completed', 'failed', 'cancelled'));
alter table uploads add column job_id uuid;
alter table uploads add column cancelled_at timestamptz;
