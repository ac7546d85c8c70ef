-- A next step: the order, its lines, the claim with its response and the outbox rows in one
-- autocommit statement.
with new_order as (
  insert into orders (id, user_id, status, total_cents, currency, takes_stock_at_commit)
  values (('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, ('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid, 'placed', 1299, 'EUR', true)
  returning id, user_id, status, total_cents, currency, created_at, updated_at
), new_items as (
  insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents)
  select ('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, * from unnest(array[1]::int[], array[('00000000-0000-0000-0000-' || lpad(:p::int::text, 12, '0'))::uuid]::uuid[],
    array['SKU-' || :p]::text[], array['Product ' || :p]::text[], array[1]::int[], array[1299]::bigint[])
), key_lock as (
  select pg_try_advisory_xact_lock(hashtextextended(('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid::text || ' orders.create ' || :k::text, 0)) as taken
), claimed as (
  insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id, response_status, response_body)
  select ('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid, 'orders.create', :k::text, repeat('ab', 32), now(), now() + make_interval(secs => 86400), ('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, 201, convert_to('{"id":"evt_0195f0a0","type":"order.placed","created_at":"2026-12-03T06:00:00Z","data":{"id":"0195f0a0-0000-7000-8000-000000000000","user_id":"00000000-0000-0000-0001-000000000001","status":"placed","total_cents":1299,"currency":"EUR","items":[{"product_id":"00000000-0000-0000-0000-000000000001","sku":"SKU-1","name":"Product 1","quantity":1,"unit_price_cents":1299,"line_total_cents":1299}],"created_at":"2026-12-03T06:00:00Z","updated_at":"2026-12-03T06:00:00Z"}}', 'UTF8')
  from key_lock where taken
  on conflict (user_id, scope, key) do update set request_hash = excluded.request_hash
  where idempotency_keys.expires_at < now()
  returning 1
), outbox_rows as (
  insert into outbox (id, queue, kind, spec)
  select * from unnest(array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, ('00000000-0000-7000-9000-' || lpad(to_hex(:d::bigint), 12, '0'))::uuid]::uuid[], array['emails', 'webhooks']::text[],
  array['email.order_confirmation', 'webhook.deliver']::text[], array['{"id":"x","queue":"emails","kind":"email","payload":{"kind":"order_confirmation","order_id":"0195f0a0-0000-7000-8000-000000000000"},"attempts":0,"max_attempts":5,"backoff":{"kind":"exponential","base_ms":1000},"priority":0,"request_id":"abcd","unique":{"key":"0195f0a0-0000-7000-8000-000000000000","ttl_ms":900000}}', '{"id":"x","queue":"emails","kind":"email","payload":{"kind":"order_confirmation","order_id":"0195f0a0-0000-7000-8000-000000000000"},"attempts":0,"max_attempts":5,"backoff":{"kind":"exponential","base_ms":1000},"priority":0,"request_id":"abcd","unique":{"key":"0195f0a0-0000-7000-8000-000000000000","ttl_ms":900000}}']::jsonb[])
)
select id, (select taken from key_lock), exists (select 1 from claimed) from new_order;
