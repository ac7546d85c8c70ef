-- Operator actions on one job or one queue, chosen by ARGV[2].
-- ARGV: base, action, id
--   retry   : dead or cancelled job -> ready, attempts reset
--   promote : scheduled job -> ready now
--   delete  : remove a job in any state but active
--   pause / resume : stop or restart claiming
--   close_breaker : ARGV[3] is a group: close its breaker (its jobs may run again at once)
-- Returns 1 if something changed, 0 otherwise.
local base, action, id = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()
local jk = base .. 'j:' .. (id or '')
if action == 'retry' then
  if redis.call('ZREM', base .. 'dead', id) + redis.call('ZREM', base .. 'cancelled', id) == 0 then
    return 0
  end
  redis.call('HSET', jk, 'attempts', 0)
  redis.call('HDEL', jk, 'finished_at', 'cancel_requested', 'cancel_reason')
  make_ready(base, id, now)
  wake(base, 1)
  return 1
elseif action == 'promote' then
  if redis.call('ZREM', base .. 'scheduled', id) == 0 then return 0 end
  -- Due now: an ordered job whose run_at lies ahead is taken for one waiting for its retry
  -- (breaker_close, the dashboard), which a promoted job is not.
  redis.call('HSET', jk, 'run_at', now)
  make_ready(base, id, now)
  wake(base, 1)
  return 1
elseif action == 'delete' then
  if redis.call('ZSCORE', base .. 'active', id) then return 0 end
  local removed = (unready(base, id, redis.call('HGET', jk, 'group')) and 1 or 0)
    + redis.call('ZREM', base .. 'scheduled', id)
    + redis.call('ZREM', base .. 'completed', id) + redis.call('ZREM', base .. 'dead', id)
    + redis.call('ZREM', base .. 'cancelled', id)
  removed = removed + redis.call('DEL', jk, base .. 'e:' .. id)
  if removed > 0 then return 1 end
  return 0
elseif action == 'close_breaker' then
  if redis.call('EXISTS', base .. 'gb:' .. id) == 0 then return 0 end
  breaker_close(base, id)
  wake(base, 1)
  return 1
elseif action == 'pause' then
  return redis.call('SET', base .. 'paused', '1') and 1 or 0
elseif action == 'resume' then
  local changed = redis.call('DEL', base .. 'paused')
  wake(base, 16)
  return changed
end
return redis.error_reply('unknown action ' .. tostring(action))
