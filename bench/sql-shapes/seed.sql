-- What every shape needs: 64 customers, 100 products with plenty of stock (no order is refused),
-- and one webhook endpoint subscribed to order.placed. Ids are made from numbers so that the
-- scripts can name them from pgbench's random variables.
insert into users (id, email, name, password_hash)
select ('00000000-0000-0000-0001-' || lpad(i::text, 12, '0'))::uuid, 'u' || i || '@example.com', 'U', 'x'
from generate_series(1, 64) i;
insert into products (id, sku, name, price_cents, currency, stock)
select ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid, 'SKU-' || i, 'Product ' || i, 1299, 'EUR', 100000000
from generate_series(1, 100) i;
insert into webhook_endpoints (id, url, events, secret)
values (gen_random_uuid(), 'http://127.0.0.1:9/hooks', array['order.placed'], 'whsec_shapes');
