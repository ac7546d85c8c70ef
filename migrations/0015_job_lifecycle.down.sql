alter table uploads drop column cancelled_at;
alter table uploads drop column job_id;
update uploads set status = 'failed', error = coalesce(error, 'cancelled') where status = 'cancelled';
alter table uploads drop constraint uploads_status_check;
alter table uploads add constraint uploads_status_check
    check (status in ('queued', 'processing', 'completed', 'failed'));

alter table reports drop column cancelled_at;
alter table reports drop column job_id;
update reports set status = 'failed', error = coalesce(error, 'cancelled') where status = 'cancelled';
alter table reports drop constraint reports_status_check;
alter table reports add constraint reports_status_check
    check (status in ('queued', 'running', 'ready', 'failed', 'expired'));
