-- An idempotency key's resource id is now assigned when the key is claimed, and the operation
-- creates its resource with that id (an order's primary key): the key is linked by the
-- resource's own insert instead of an extra UPDATE inside every order's transaction, and two
-- attempts under one key can never both create a resource. Claims left from before (no
-- resource yet) get a fresh id, which no resource has: they read as unfinished attempts.
update idempotency_keys set resource_id = gen_random_uuid() where resource_id is null;
alter table idempotency_keys alter column resource_id set not null;
