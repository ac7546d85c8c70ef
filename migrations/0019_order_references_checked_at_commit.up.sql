-- An order takes its stock last, right before its COMMIT (shared/src/orders/service.rs), and
-- writes everything else first: the order (referencing its customer), its lines (referencing
-- their products) and its webhook deliveries (referencing their endpoints). Checking such a
-- foreign key locks the referenced row in key-share mode until the commit, and an order waiting
-- for a hot product's row would hold those locks all the while. Many orders share the rows they
-- reference (every order its endpoints; in a flash sale, its product), and PostgreSQL keeps
-- several lockers of one row as a multixact, rebuilt each time one joins: measured under the
-- orders load, that bookkeeping cost more PostgreSQL CPU than it saved. Checked at the commit,
-- each lock is taken for the moment of the commit only, and on the product's row it is taken on
-- the version the transaction has just written and already holds.
--
-- The references are enforced as before: a row naming a missing one fails its transaction.
-- What changes is the rare race with a delete: an endpoint deleted between an order's insert of
-- its delivery and its commit now fails that order's commit (the client retries under its
-- idempotency key, and the retry finds no endpoint), where the delete used to wait.
alter table order_items
    alter constraint order_items_product_id_fkey deferrable initially deferred;
alter table orders
    alter constraint orders_user_id_fkey deferrable initially deferred;
alter table webhook_deliveries
    alter constraint webhook_deliveries_endpoint_id_fkey deferrable initially deferred;
