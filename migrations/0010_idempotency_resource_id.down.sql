-- Back to a resource id set by the operation's transaction: claims without a resource yet
-- have none.
alter table idempotency_keys alter column resource_id drop not null;
