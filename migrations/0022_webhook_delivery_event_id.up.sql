-- The event a delivery is one of: an event's deliveries to its endpoints share it. The statement
-- that places several orders at once writes all their events' deliveries with one insert, and
-- tells each order's deliveries apart by it (queue/src/writes.rs). Deliveries written before
-- this migration have none.
alter table webhook_deliveries add column event_id uuid;
