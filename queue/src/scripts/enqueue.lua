-- Adds jobs unless a job with the same id exists (idempotent enqueue by caller-given id), or the
-- job has a uniqueness key that another job holds.
-- ARGV: base, values per job (11; 13 when a job of the batch has a group; 14 when one carries a
--       trace context), then per job: id, kind, payload, priority, max_attempts, run_at_ms
--       (0 = now), request_id, retry (policy text), unique key ('' = none), unique window (ms),
--       events ('1': keep an event stream of the job's life, see common.lua; '' = none), with 13
--       or more: group key ('' = none), ordered ('1': FIFO in its group, one running at a time),
--       and with 14: traceparent ('' = none). A batch without groups or traces passes 11, so the
--       common case sends no empty arguments.
-- Returns one integer per job: 1 added, 0 already present (by id or by key).
local base = ARGV[1]
local now = now_ms()
local results = {}
local added, ready_count = 0, 0
local ready_args, scheduled_args = {}, {}
local width = tonumber(ARGV[2])
local n = (#ARGV - 2) / width
local groups = {}
local seq = 0
if n > 0 then seq = redis.call('INCRBY', base .. 'seq', n) - n end
for i = 0, n - 1 do
  local o = 3 + i * width
  local id = ARGV[o]
  local jk = base .. 'j:' .. id
  local ukey = ARGV[o + 8]
  -- The id first, so a job refused for its id never takes a key. A key is taken with its
  -- expiry in one call: it holds for its window whatever happens to the job (retention may trim
  -- the job long before). A duplicate key later in the same batch finds it taken.
  if redis.call('EXISTS', jk) == 1
    or (ukey ~= '' and not redis.call('SET', base .. 'u:' .. ukey, id, 'NX', 'PX', ARGV[o + 9])) then
    results[#results + 1] = 0
  else
    local priority = tonumber(ARGV[o + 3])
    local run_at = tonumber(ARGV[o + 5])
    local group = ''
    if width >= 13 then group = ARGV[o + 11] end
    if run_at > now then
      scheduled_args[#scheduled_args + 1] = run_at
      scheduled_args[#scheduled_args + 1] = id
    elseif group ~= '' then
      -- An ordered group is FIFO whatever the priority: its score is the sequence alone.
      local score = priority * PRIORITY_SPAN + seq + i + 1
      if ARGV[o + 12] == '1' then score = seq + i + 1 end
      redis.call('ZADD', base .. 'g:' .. group, score, id)
      groups[group] = true
    else
      ready_args[#ready_args + 1] = priority * PRIORITY_SPAN + seq + i + 1
      ready_args[#ready_args + 1] = id
      ready_count = ready_count + 1
    end
    -- Only what is needed: attempts and lease start absent (0), the state is the set the id is
    -- in, and the enqueue time doubles as the ready time until the job is re-queued. A unique
    -- job also keeps its key (for the dashboard). Written out twice rather than through a
    -- helper taking `...`: this is the hottest line of the engine.
    if ukey == '' then
      redis.call('HSET', jk, 'kind', ARGV[o + 1], 'payload', ARGV[o + 2], 'priority', priority,
        'max_attempts', ARGV[o + 4], 'created_at', now, 'run_at', run_at,
        'request_id', ARGV[o + 6], 'retry', ARGV[o + 7])
    else
      redis.call('HSET', jk, 'kind', ARGV[o + 1], 'payload', ARGV[o + 2], 'priority', priority,
        'max_attempts', ARGV[o + 4], 'created_at', now, 'run_at', run_at,
        'request_id', ARGV[o + 6], 'retry', ARGV[o + 7], 'unique', ukey)
    end
    if group ~= '' then
      if ARGV[o + 12] == '1' then
        -- Its place in the group for good: a retry or a restart puts it back there.
        redis.call('HSET', jk, 'group', group, 'ordered', '1', 'gscore', seq + i + 1)
      else
        redis.call('HSET', jk, 'group', group)
      end
    end
    if width == 14 and ARGV[o + 13] ~= '' then redis.call('HSET', jk, 'trace', ARGV[o + 13]) end
    if ARGV[o + 10] == '1' then
      redis.call('HSET', jk, 'events', '1')
      emit(base, id, 'queued', cjson.encode({run_at = run_at}))
    end
    added = added + 1
    results[#results + 1] = 1
  end
end
if #ready_args > 0 then redis.call('ZADD', base .. 'ready', unpack(ready_args)) end
if #scheduled_args > 0 then redis.call('ZADD', base .. 'scheduled', unpack(scheduled_args)) end
for group in pairs(groups) do
  group_touch(base, group)
  group_admit(base, group)
end
count_stat(base, now, 'enqueued', added)
if added > 0 then wake(base, added) end
return results
