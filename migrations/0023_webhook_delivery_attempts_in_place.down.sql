drop index webhook_deliveries_created_at_idx;
create index webhook_deliveries_finished_created_at_idx on webhook_deliveries (created_at)
    where status <> 'pending';
alter table webhook_deliveries reset (fillfactor);
