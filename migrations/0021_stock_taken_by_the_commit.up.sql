-- An order's stock is taken by its own COMMIT. Taking it locks the product's row until the
-- transaction ends, and every other order for that product queues on that lock: in a flash sale
-- the time it is held bounds the orders per second. Taken by a statement the api sends, the
-- lock is held for that statement's answer to reach the api, the api to be scheduled on a busy
-- core, and the COMMIT to come back; taken by a trigger deferred to the commit, it is held for
-- the updates and the rest of the commit (the WAL flush) only, inside PostgreSQL.
--
-- The rule is the one the api checked before (shared/src/products/service.rs): each of the
-- order's lines takes its quantity while the product is active, has that much stock, and still
-- reads as the line was priced (SKU, name, unit price, and the order's currency). If one does
-- not, the commit fails and the transaction rolls back, with a code saying why:
--   ORD01  the product changed after the order was priced (or was withdrawn): price it again;
--   ORD02  not enough stock.
--
-- The trigger is on the order's row, not on its lines, and takes the lines in product id order,
-- so two orders lock the products they share in the same order (no deadlock). Deferred triggers
-- fire in the order their rows were written, and for one row in name order: the order's row is
-- the transaction's first write and this trigger's name sorts before the foreign keys'
-- ("RI_ConstraintTrigger_..."), so the stock is taken before any of the order's references is
-- checked. An order waiting for a hot product's row therefore holds no key-share lock on the
-- rows every order shares (its customer's, the webhook endpoint's); if it did, PostgreSQL would
-- keep their lockers as a multixact, rebuilt each time an order joins (migration 0019 says what
-- that cost). The lines' own key checks then find the products' rows already held.
--
-- Only orders that say so take their stock this way (`takes_stock_at_commit`, which the api sets
-- from this migration on): while a deploy rolls out, the previous api's instances, which take the
-- stock with an UPDATE of their own, keep running against this schema, and their orders must not
-- take it twice. Rows written without the flag (theirs, or a backfill of past orders) take none.
alter table orders add column takes_stock_at_commit boolean not null default false;

create function take_stock_of_order() returns trigger
language plpgsql as $$
declare
    line record;
begin
    for line in
        select product_id, sku, name, quantity, unit_price_cents
        from order_items where order_id = new.id
        order by product_id, line_no
    loop
        update products p set stock = p.stock - line.quantity
        where p.id = line.product_id and p.active and p.stock >= line.quantity
          and p.sku = line.sku and p.name = line.name
          and p.price_cents = line.unit_price_cents and p.currency = new.currency;
        if not found then
            if exists (
                select 1 from products p
                where p.id = line.product_id and p.active
                  and p.sku = line.sku and p.name = line.name
                  and p.price_cents = line.unit_price_cents and p.currency = new.currency
            ) then
                raise exception 'not enough stock of product %', line.product_id
                    using errcode = 'ORD02';
            end if;
            raise exception 'product % changed after the order was priced', line.product_id
                using errcode = 'ORD01';
        end if;
    end loop;
    return null;
end
$$;

create constraint trigger "Order_takes_its_stock" after insert on orders
    deferrable initially deferred
    for each row when (new.takes_stock_at_commit) execute function take_stock_of_order();
