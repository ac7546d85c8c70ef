-- The order as the api sends it (shared/src/orders/service.rs, queue/src/writes.rs): one
-- autocommit statement with the order, its lines, its webhook deliveries, the key's claim with its
-- response, and the outbox rows (the email's, and the fan-out job carrying the deliveries). Every
-- write is set-based (its values arrays, one element per row), so a statement carrying several
-- orders has this same text with longer arrays.
with w0 as (
  insert into orders (id, user_id, status, total_cents, currency, takes_stock_at_commit, created_at, updated_at)
  select o.id, o.user_id, 'placed', o.total_cents, o.currency, true, o.placed_at, o.placed_at
  from unnest(array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[], array[('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid]::uuid[], array[1299]::bigint[], array['EUR']::text[], array[now()]::timestamptz[]) as o(id, user_id, total_cents, currency, placed_at)
  returning id
), w1 as (
  insert into order_items (order_id, line_no, product_id, sku, name, quantity, unit_price_cents)
  select * from unnest(array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[], array[1]::int[], array[('00000000-0000-0000-0000-' || lpad(:p::int::text, 12, '0'))::uuid]::uuid[], array['SKU-' || :p]::text[], array['Product ' || :p]::text[], array[1]::int[], array[1299]::bigint[])
), w2 as (
  insert into webhook_deliveries (id, endpoint_id, event_type, payload, event_id)
  select orderly_uuidv7(), subscribed.id, event.kind, event.payload, event.id
  from unnest(array['order.placed']::text[], array['{"id":"evt_0195f0a0","type":"order.placed","created_at":"2026-12-03T06:00:00Z","data":{"id":"0195f0a0-0000-7000-8000-000000000000","user_id":"00000000-0000-0000-0001-000000000001","status":"placed","total_cents":1299,"currency":"EUR","items":[{"product_id":"00000000-0000-0000-0000-000000000001","sku":"SKU-1","name":"Product 1","quantity":1,"unit_price_cents":1299,"line_total_cents":1299}],"created_at":"2026-12-03T06:00:00Z","updated_at":"2026-12-03T06:00:00Z"}}']::text[], array[('00000000-0000-7000-a000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[]) as event(kind, payload, id)
  cross join lateral (select id from webhook_endpoints where enabled and events @> array[event.kind]::text[] order by id) as subscribed
  returning id, endpoint_id, event_id
), w3 as (
  insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id, response_status, response_body)
  select c.user_id, c.scope, case when pg_try_advisory_xact_lock(hashtextextended(c.user_id::text || ' ' || c.scope || ' ' || c.key, 0)) then c.key end,
         c.request_hash, now(), now() + make_interval(secs => c.ttl_secs), c.resource_id, c.response_status, c.response_body
  from unnest(array[('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid]::uuid[], array['orders.create']::text[], array[:k::text]::text[], array[repeat('ab', 32)]::text[], array[86400]::float8[], array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[], array[201]::int2[], array[convert_to('{"id":"evt_0195f0a0","type":"order.placed","created_at":"2026-12-03T06:00:00Z","data":{"id":"0195f0a0-0000-7000-8000-000000000000","user_id":"00000000-0000-0000-0001-000000000001","status":"placed","total_cents":1299,"currency":"EUR","items":[{"product_id":"00000000-0000-0000-0000-000000000001","sku":"SKU-1","name":"Product 1","quantity":1,"unit_price_cents":1299,"line_total_cents":1299}],"created_at":"2026-12-03T06:00:00Z","updated_at":"2026-12-03T06:00:00Z"}}', 'UTF8')]::bytea[])
       as c(user_id, scope, key, request_hash, ttl_secs, resource_id, response_status, response_body)
), outbox_rows as (
  insert into outbox (id, queue, kind, spec)
  select * from unnest(array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[], array['emails']::text[], array['email.order_confirmation']::text[], array['{"id":"x","queue":"emails","kind":"email.order_confirmation","payload":{"type":"order_confirmation","order_id":"0195f0a0-0000-7000-8000-000000000000"},"priority":1,"retry":{"max_attempts":8,"backoff":{"kind":"exponential","base_ms":1000,"max_ms":300000}},"request_id":"abcd"}']::jsonb[])
  union all
  select job.id, job.queue, job.kind, jsonb_set(job.spec, '{payload,rows}', (select jsonb_agg(to_jsonb(r) - 'event_id') from w2 as r where r.event_id = job.key))
  from unnest(array[('00000000-0000-7000-9000-' || lpad(to_hex(:d::bigint), 12, '0'))::uuid]::uuid[], array['webhooks']::text[], array['webhook.fan_out']::text[], array['{"id":"y","queue":"webhooks","kind":"webhook.fan_out","payload":{"rows":[]},"priority":1,"retry":{"max_attempts":10,"backoff":{"kind":"exponential","base_ms":1000,"max_ms":60000}},"request_id":"abcd"}']::jsonb[], array[('00000000-0000-7000-a000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid]::uuid[]) as job(id, queue, kind, spec, key)
  where exists (select 1 from w2 as r where r.event_id = job.key)
  returning id, spec
)
select id, spec from outbox_rows where (select count(*) from w0) >= 0 and id = any(array[('00000000-0000-7000-9000-' || lpad(to_hex(:d::bigint), 12, '0'))::uuid]::uuid[]);
