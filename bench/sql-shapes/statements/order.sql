-- The order and its lines, in one statement (shared/src/orders/repository.rs).
with new_order as (
  insert into orders (id, user_id, status, total_cents, currency, takes_stock_at_commit)
  values (('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, ('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid, 'placed', 1299, 'EUR', true)
  returning id, user_id, status, total_cents, currency, created_at, updated_at
), new_items as (
  insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents)
  select ('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, * from unnest(array[1]::int[], array[('00000000-0000-0000-0000-' || lpad(:p::int::text, 12, '0'))::uuid]::uuid[],
    array['SKU-' || :p]::text[], array['Product ' || :p]::text[], array[1]::int[], array[1299]::bigint[])
)
select id, user_id, status, total_cents, currency, created_at, updated_at from new_order;
