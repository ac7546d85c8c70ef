-- Adds jobs unless a job with the same id exists (idempotent enqueue by caller-given id).
-- ARGV: base, then 7 values per job: id, kind, payload, priority, max_attempts, run_at_ms (0 = now),
--       request_id, retry (policy text)  -> 8 values per job
-- Returns one integer per job: 1 added, 0 already present.
local base = ARGV[1]
local now = now_ms()
local results = {}
local added, ready_count = 0, 0
local ready_args, scheduled_args = {}, {}
local n = (#ARGV - 1) / 8
local seq = 0
if n > 0 then seq = redis.call('INCRBY', base .. 'seq', n) - n end
for i = 0, n - 1 do
  local o = 2 + i * 8
  local id = ARGV[o]
  local jk = base .. 'j:' .. id
  if redis.call('EXISTS', jk) == 1 then
    results[#results + 1] = 0
  else
    local priority = tonumber(ARGV[o + 3])
    local run_at = tonumber(ARGV[o + 5])
    if run_at > now then
      scheduled_args[#scheduled_args + 1] = run_at
      scheduled_args[#scheduled_args + 1] = id
    else
      ready_args[#ready_args + 1] = priority * PRIORITY_SPAN + seq + i + 1
      ready_args[#ready_args + 1] = id
      ready_count = ready_count + 1
    end
    -- Only what is needed: attempts and lease start absent (0), the state is the set the id is
    -- in, and the enqueue time doubles as the ready time until the job is re-queued.
    redis.call('HSET', jk, 'kind', ARGV[o + 1], 'payload', ARGV[o + 2], 'priority', priority,
      'max_attempts', ARGV[o + 4], 'created_at', now, 'run_at', run_at, 'request_id', ARGV[o + 6],
      'retry', ARGV[o + 7])
    added = added + 1
    results[#results + 1] = 1
  end
end
if #ready_args > 0 then redis.call('ZADD', base .. 'ready', unpack(ready_args)) end
if #scheduled_args > 0 then redis.call('ZADD', base .. 'scheduled', unpack(scheduled_args)) end
count_stat(base, now, 'enqueued', added)
if added > 0 then wake(base, added) end
return results
