-- Retention: maintenance deletes what is past its retention in bounded batches, oldest first;
-- these indexes let each batch find its rows without scanning the table.
create index sent_emails_sent_at_idx on sent_emails (sent_at);
-- Only finished deliveries are ever deleted (a pending one still has a job).
create index webhook_deliveries_finished_created_at_idx on webhook_deliveries (created_at)
    where status <> 'pending';
