-- Now: the pushed outbox rows deleted.
delete from outbox using (select set_config('synchronous_commit', 'off', true)) as async_commit
where id = any(array[('00000000-0000-7000-8000-' || lpad(to_hex(:k::bigint), 12, '0'))::uuid, ('00000000-0000-7000-9000-' || lpad(to_hex(:d::bigint), 12, '0'))::uuid]::uuid[]);
