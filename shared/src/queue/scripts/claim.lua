-- Claims up to ARGV[2] jobs for a worker: promotes due scheduled jobs and recovers expired leases
-- first (each step bounded), then pops the best-priority, oldest jobs and leases them.
-- ARGV: base, max_jobs, lease_ms, worker_id, promote_limit
-- Returns { next_wake_ms_or_-1, now, {id, lease, attempts, kind, payload, priority, max_attempts,
--           request_id, retry, created_at}... }
local base, max_jobs, lease_ms, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local promote_limit = tonumber(ARGV[5])
local now = now_ms()

-- 1. Scheduled jobs (delays, retry backoff) that are due join the ready set.
local due = redis.call('ZRANGEBYSCORE', base .. 'scheduled', '-inf', now, 'LIMIT', 0, promote_limit)
for _, id in ipairs(due) do make_ready(base, id, now) end
if #due > 0 then redis.call('ZREM', base .. 'scheduled', unpack(due)) end

-- 2. Leases past their deadline: the worker died or hung. The attempt was counted when it was
--    claimed; the job goes back to ready, or dies if that was its last attempt.
local expired = redis.call('ZRANGEBYSCORE', base .. 'active', '-inf', now, 'LIMIT', 0, 100)
local died = 0
for _, id in ipairs(expired) do
  local jk = base .. 'j:' .. id
  redis.call('ZREM', base .. 'active', id)
  local f = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'worker')
  local attempts, max_attempts = tonumber(f[1] or '0'), tonumber(f[2] or '1')
  local message = 'lease expired: worker ' .. (f[3] or '?') .. ' stopped renewing it (killed or hung)'
  redis.call('RPUSH', base .. 'e:' .. id, cjson.encode({attempt = attempts, at = now, error = message}))
  redis.call('LTRIM', base .. 'e:' .. id, -25, -1)
  redis.call('HSET', jk, 'last_error', message)
  if attempts >= max_attempts then
    redis.call('HSET', jk, 'state', 'dead', 'finished_at', now)
    redis.call('ZADD', base .. 'dead', now, id)
    died = died + 1
  else
    make_ready(base, id, now)
  end
end
count_stat(base, now, 'failed', #expired)
count_stat(base, now, 'dead', died)

-- 3. Claim, unless an operator paused the queue.
local jobs = {}
if max_jobs > 0 and redis.call('EXISTS', base .. 'paused') == 0 then
  local popped = redis.call('ZPOPMIN', base .. 'ready', max_jobs)
  local deadline = now + lease_ms
  local active_args = {}
  for i = 1, #popped, 2 do
    local id = popped[i]
    local jk = base .. 'j:' .. id
    if redis.call('EXISTS', jk) == 1 then
      local attempts = redis.call('HINCRBY', jk, 'attempts', 1)
      local lease = redis.call('HINCRBY', jk, 'lease', 1)
      redis.call('HSET', jk, 'state', 'active', 'worker', worker, 'started_at', now)
      local f = redis.call('HMGET', jk, 'kind', 'payload', 'priority', 'max_attempts', 'request_id', 'retry', 'created_at')
      active_args[#active_args + 1] = deadline
      active_args[#active_args + 1] = id
      jobs[#jobs + 1] = {id, lease, attempts, f[1], f[2], f[3], f[4], f[5], f[6], f[7]}
    end
  end
  if #active_args > 0 then redis.call('ZADD', base .. 'active', unpack(active_args)) end
end

-- When should an idle worker look again? The next due scheduled job or lease deadline.
local next_wake = -1
local s = redis.call('ZRANGE', base .. 'scheduled', 0, 0, 'WITHSCORES')
if #s > 0 then next_wake = tonumber(s[2]) end
local a = redis.call('ZRANGE', base .. 'active', 0, 0, 'WITHSCORES')
if #a > 0 and (next_wake < 0 or tonumber(a[2]) < next_wake) then next_wake = tonumber(a[2]) end
if #due >= promote_limit or #expired >= 100 then next_wake = now end
return {next_wake, now, jobs}
