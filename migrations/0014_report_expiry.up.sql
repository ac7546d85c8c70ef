-- Report retention: a ready report's file is deleted REPORT_RETENTION_DAYS after it was built;
-- the row stays, says "expired" and when, and a download answers 410 Gone.
alter table reports drop constraint reports_status_check;
alter table reports add constraint reports_status_check
    check (status in ('queued', 'running', 'ready', 'failed', 'expired'));
alter table reports add column expired_at timestamptz;
-- Maintenance finds the oldest ready reports without scanning the table.
create index reports_ready_completed_at_idx on reports (completed_at) where status = 'ready';
