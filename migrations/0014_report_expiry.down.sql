drop index if exists reports_ready_completed_at_idx;
-- An expired report has no file: the closest earlier status is a failed build.
update reports set status = 'failed', error = 'expired' where status = 'expired';
alter table reports drop column expired_at;
alter table reports drop constraint reports_status_check;
alter table reports add constraint reports_status_check
    check (status in ('queued', 'running', 'ready', 'failed'));
