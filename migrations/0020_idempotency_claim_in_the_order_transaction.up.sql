-- An order now claims its idempotency key inside its own transaction, as the first statement
-- (shared/src/idempotency/mod.rs), and the claim's row references the customer. Checked when the
-- row is written, that reference would lock the customer's row in key-share mode for the whole
-- order, including its wait for a hot product's row; a customer's concurrent orders would then
-- share that row as a multixact, the bookkeeping migration 0019 removed for the order's other
-- references. Checked at the commit, as `orders.user_id` already is, the lock is taken for the
-- moment of the commit only. The reference is enforced as before.
alter table idempotency_keys
    alter constraint idempotency_keys_user_id_fkey deferrable initially deferred;
