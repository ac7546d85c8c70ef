-- The idempotency key claimed with its response (shared/src/idempotency/repository.rs).
with key_lock as (
  select pg_try_advisory_xact_lock(hashtextextended(('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid::text || ' orders.create ' || :k::text, 0)) as taken
), claimed as (
  insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id, response_status, response_body)
  select ('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid, 'orders.create', :k::text, repeat('ab', 32), now(), now() + make_interval(secs => 86400), ('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, 201, convert_to('{"id":"evt_0195f0a0","type":"order.placed","created_at":"2026-12-03T06:00:00Z","data":{"id":"0195f0a0-0000-7000-8000-000000000000","user_id":"00000000-0000-0000-0001-000000000001","status":"placed","total_cents":1299,"currency":"EUR","items":[{"product_id":"00000000-0000-0000-0000-000000000001","sku":"SKU-1","name":"Product 1","quantity":1,"unit_price_cents":1299,"line_total_cents":1299}],"created_at":"2026-12-03T06:00:00Z","updated_at":"2026-12-03T06:00:00Z"}}', 'UTF8')
  from key_lock where taken
  on conflict (user_id, scope, key) do update set request_hash = excluded.request_hash
  where idempotency_keys.expires_at < now()
  returning 1
)
select (select taken from key_lock), exists (select 1 from claimed);
