alter table webhook_deliveries drop column event_id;
