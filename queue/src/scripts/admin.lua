-- Operator actions on one job, several jobs or one queue, chosen by ARGV[2].
-- ARGV: base, action, id (the *_many actions: ids from ARGV[3] on, a few hundred at most)
--   retry   : dead or cancelled job -> ready, attempts reset
--   promote : scheduled job -> ready now
--   delete  : remove a job in any state but active
--   retry_many / promote_many / delete_many : the same for each id given
--   pause / resume : stop or restart claiming
--   close_breaker : ARGV[3] is a group: close its breaker (its jobs may run again at once)
-- Returns 1 if something changed, 0 otherwise (the *_many actions: how many jobs changed).
local base, action, id = ARGV[1], ARGV[2], ARGV[3]
local now = now_ms()

local function retry(job)
  local jk = base .. 'j:' .. job
  if redis.call('ZREM', base .. 'dead', job) + redis.call('ZREM', base .. 'cancelled', job) == 0 then
    return 0
  end
  redis.call('HSET', jk, 'attempts', 0)
  redis.call('HDEL', jk, 'finished_at', 'cancel_requested', 'cancel_reason')
  make_ready(base, job, now)
  return 1
end

local function promote(job)
  if redis.call('ZREM', base .. 'scheduled', job) == 0 then return 0 end
  redis.call('ZREM', base .. 'retrying', job)
  -- Due now: an ordered job whose run_at lies ahead is taken for one waiting for its retry
  -- (breaker_close, the dashboard), which a promoted job is not.
  redis.call('HSET', base .. 'j:' .. job, 'run_at', now)
  make_ready(base, job, now)
  return 1
end

local function delete(job)
  if redis.call('ZSCORE', base .. 'active', job) then return 0 end
  local jk = base .. 'j:' .. job
  local removed = (unready(base, job, redis.call('HGET', jk, 'group')) and 1 or 0)
    + redis.call('ZREM', base .. 'scheduled', job)
    + redis.call('ZREM', base .. 'completed', job) + redis.call('ZREM', base .. 'dead', job)
    + redis.call('ZREM', base .. 'cancelled', job)
  redis.call('ZREM', base .. 'retrying', job)
  removed = removed + redis.call('DEL', jk, base .. 'e:' .. job)
  if removed > 0 then return 1 end
  return 0
end

local one = {retry = retry, promote = promote, delete = delete}

if one[action] then
  local changed = one[action](id)
  if action ~= 'delete' then wake(base, changed) end
  return changed
end
local each = string.match(action, '^(%a+)_many$')
if each and one[each] then
  local changed = 0
  for i = 3, #ARGV do changed = changed + one[each](ARGV[i]) end
  if each ~= 'delete' then wake(base, changed) end
  return changed
end
if action == 'close_breaker' then
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
