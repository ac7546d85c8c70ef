-- Marks leased jobs completed, then trims finished jobs beyond the retention limits (bounded).
-- ARGV: base, keep_count, max_age_ms, then pairs (id, lease)
-- Returns one integer per job: 1 completed, 0 refused (lease lost: the job belongs to someone else now).
local base, keep, max_age = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local now = now_ms()
local results, done_args = {}, {}
for i = 4, #ARGV, 2 do
  local id, lease = ARGV[i], ARGV[i + 1]
  local jk = base .. 'j:' .. id
  if redis.call('HGET', jk, 'lease') == lease and redis.call('ZREM', base .. 'active', id) == 1 then
    redis.call('HSET', jk, 'state', 'completed', 'finished_at', now)
    done_args[#done_args + 1] = now
    done_args[#done_args + 1] = id
    results[#results + 1] = 1
  else
    results[#results + 1] = 0
  end
end
if #done_args > 0 then
  redis.call('ZADD', base .. 'completed', unpack(done_args))
  count_stat(base, now, 'completed', #done_args / 2)
end

-- Retention: keep at most `keep` completed jobs, none older than max_age. At most 1000 per call,
-- so a huge backlog of finished jobs is trimmed over several calls instead of one long one.
local completed = base .. 'completed'
local excess = redis.call('ZCARD', completed) - keep
local old = {}
if excess > 0 then old = redis.call('ZRANGE', completed, 0, math.min(excess, 1000) - 1) end
if #old < 1000 then
  local aged = redis.call('ZRANGEBYSCORE', completed, '-inf', now - max_age, 'LIMIT', 0, 1000 - #old)
  local seen = {}
  for _, id in ipairs(old) do seen[id] = true end
  for _, id in ipairs(aged) do if not seen[id] then old[#old + 1] = id end end
end
if #old > 0 then
  redis.call('ZREM', completed, unpack(old))
  drop_job(base, old)
end
return results
