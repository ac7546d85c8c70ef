drop index if exists webhook_deliveries_finished_created_at_idx;
drop index if exists sent_emails_sent_at_idx;
