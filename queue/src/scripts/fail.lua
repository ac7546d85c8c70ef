-- Records a failed attempt of a leased job: retry after a delay, or dead.
-- ARGV: base, id, lease, error_json, error_text, retry_delay_ms (-1 = dead)
-- Returns 1 if recorded, 0 if the lease was lost (the failure is then ignored).
local base, id, lease = ARGV[1], ARGV[2], ARGV[3]
local delay = tonumber(ARGV[6])
local now = now_ms()
local jk = base .. 'j:' .. id
if redis.call('HGET', jk, 'lease') ~= lease or redis.call('ZREM', base .. 'active', id) == 0 then
  return 0
end
redis.call('RPUSH', base .. 'e:' .. id, ARGV[4])
redis.call('LTRIM', base .. 'e:' .. id, -25, -1)
redis.call('HSET', jk, 'last_error', ARGV[5])
count_stat(base, now, 'failed', 1)
if delay < 0 then
  redis.call('HSET', jk, 'finished_at', now)
  redis.call('ZADD', base .. 'dead', now, id)
  count_stat(base, now, 'dead', 1)
elseif delay == 0 then
  make_ready(base, id, now)
  count_stat(base, now, 'retried', 1)
  wake(base, 1)
else
  -- now_ms() rounds the failure's moment down, so now + delay could come up to a millisecond
  -- before the backoff has fully passed; one millisecond more makes it never early.
  local due = now + delay + 1
  redis.call('HSET', jk, 'run_at', due)
  redis.call('ZADD', base .. 'scheduled', due, id)
  count_stat(base, now, 'retried', 1)
  wake(base, 1)
end
return 1
