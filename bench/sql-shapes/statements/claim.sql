-- The idempotency key claimed without its response, as before this round.
with key_lock as (
  select pg_try_advisory_xact_lock(hashtextextended(('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid::text || ' orders.create ' || :k::text, 0)) as taken
), claimed as (
  insert into idempotency_keys (user_id, scope, key, request_hash, locked_until, expires_at, resource_id)
  select ('00000000-0000-0000-0001-' || lpad(:u::int::text, 12, '0'))::uuid, 'orders.create', :k::text, repeat('ab', 32), now() + make_interval(secs => 60), now() + make_interval(secs => 86400), ('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid
  from key_lock where taken
  on conflict (user_id, scope, key) do update set request_hash = excluded.request_hash
  where idempotency_keys.expires_at < now()
  returning 1
)
select (select taken from key_lock), exists (select 1 from claimed);
