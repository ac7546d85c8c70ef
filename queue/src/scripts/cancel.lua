-- Cancels a job. Waiting, scheduled (delayed or backing off before a retry) and retrying jobs
-- end cancelled at once; a running job is marked and listed in `cancelling`, which every worker
-- holding jobs of the queue reads within a fraction of a second and passes to the handler as a
-- cancellation signal (the job ends cancelled when the handler stops, or when its lease
-- expires if its worker died meanwhile).
-- ARGV: base, id, reason
-- Returns 0 no such job, 1 cancelled, 2 running: signalled, 3 already finished (completed, dead
-- or cancelled; nothing changed).
local base, id, reason = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local jk = base .. 'j:' .. id
if redis.call('EXISTS', jk) == 0 then return 0 end
local f = redis.call('HMGET', jk, 'events', 'group')
local events = f[1]
if unready(base, id, f[2]) or redis.call('ZREM', base .. 'scheduled', id) > 0 then
  redis.call('ZREM', base .. 'retrying', id)
  settle_cancelled(base, id, now, reason, events)
  return 1
end
if redis.call('ZSCORE', base .. 'active', id) then
  if redis.call('HSETNX', jk, 'cancel_requested', now) == 1 then
    redis.call('HSET', jk, 'cancel_reason', reason)
    redis.call('SADD', base .. 'cancelling', id)
    if events == '1' then emit(base, id, 'cancelling', cjson.encode({reason = reason})) end
  end
  return 2
end
return 3
