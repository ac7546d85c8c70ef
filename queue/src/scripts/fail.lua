-- Records a failed attempt of a leased job: retry after a delay, dead, or cancelled.
-- ARGV: base, id, lease, error_json, error_text, retry_delay_ms (-1 = dead, -2 = cancelled: the
--       handler stopped because it was asked to), then the queue's group breaker: failures in a
--       row that open it (0: no breaker), first cool-down ms, longest cool-down ms
-- A grouped job's failure counts against its group's breaker; a job of an ordered group that
-- will retry keeps its place at the head of its group, and the group waits for the retry (later
-- jobs of the group never overtake it).
-- A job asked to stop while it ran ends cancelled whatever the handler returned: retrying or
-- burying what an operator or its owner cancelled would undo the cancel.
-- Returns 1 if recorded, 0 if the lease was lost (the failure is then ignored).
local base, id, lease = ARGV[1], ARGV[2], ARGV[3]
local delay = tonumber(ARGV[6])
local now = now_ms()
local jk = base .. 'j:' .. id
local f = redis.call('HMGET', jk, 'lease', 'cancel_requested', 'events', 'cancel_reason', 'group', 'ordered')
if f[1] ~= lease or redis.call('ZREM', base .. 'active', id) == 0 then
  return 0
end
local group = f[5]
if group then group_exit(base, id, group) end
if f[2] or delay == -2 then
  settle_cancelled(base, id, now, f[4] or ARGV[5], f[3])
  return 1
end
redis.call('RPUSH', base .. 'e:' .. id, ARGV[4])
redis.call('LTRIM', base .. 'e:' .. id, -25, -1)
redis.call('HSET', jk, 'last_error', ARGV[5])
count_stat(base, now, 'failed', 1)
local threshold = tonumber(ARGV[7] or '0')
if group and threshold > 0 then
  breaker_failure(base, group, now, threshold, tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[5])
end
if delay < 0 then
  redis.call('HSET', jk, 'finished_at', now)
  redis.call('ZADD', base .. 'dead', now, id)
  count_stat(base, now, 'dead', 1)
  if f[3] == '1' then emit(base, id, 'failed', ARGV[4]) end
  return 1
end
-- now_ms() rounds the failure's moment down, so now + delay could come up to a millisecond
-- before the backoff has fully passed; one millisecond more makes it never early.
local due = now
if group and f[6] == '1' then
  -- Ordered: back to the head of its group (its first place), the group waiting until the retry
  -- is due.
  due = now + delay + 1
  redis.call('HSET', jk, 'run_at', due)
  make_ready(base, id, now)
  redis.call('ZREM', base .. 'grr', group)
  redis.call('SREM', base .. 'gheld', group)
  redis.call('ZADD', base .. 'gwait', 'GT', due, group)
elseif delay == 0 then
  make_ready(base, id, now)
else
  due = now + delay + 1
  redis.call('HSET', jk, 'run_at', due)
  redis.call('ZADD', base .. 'scheduled', due, id)
  -- Indexed as a retry (the dashboard counts retries apart from first runs); each retry cleans
  -- a few entries of retries already promoted, so the index stays about as large as it is true.
  redis.call('ZADD', base .. 'retrying', due, id)
  retrying_prune(base, now, 4)
end
count_stat(base, now, 'retried', 1)
wake(base, 1)
if f[3] == '1' then
  local entry = cjson.decode(ARGV[4])
  entry.retry_at = due
  emit(base, id, 'retrying', cjson.encode(entry))
end
return 1
