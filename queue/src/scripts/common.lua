-- Shared helpers, prepended to every script by the engine (Lua scripts cannot include files).
-- A job's state is the set its id is in (the hash holds its data, not its state).
-- Key layout of one queue, all under one hash tag so the queue lives in one Redis Cluster slot:
--   <base>j:<id>  job hash          <base>e:<id>  error list (newest last, capped)
--   <base>ready   zset score = priority * 2^40 + sequence  (strict priority, then FIFO)
--   <base>scheduled zset score = due time (ms)   <base>active zset score = lease deadline (ms)
--   <base>completed / <base>dead  zset score = finish time (ms)
--   <base>seq counter   <base>marker wake-up list   <base>paused flag   <base>stats:<minute> hash
--   <base>stats:h:<hour> hash: the hour's rollup of the minutes (kept 8 days)
--   <base>retrying zset score = due time: the scheduled jobs that are retries (an index beside
--                  `scheduled`, possibly holding ids already promoted; see retrying_prune)
--   <base>runtimes:<minute> hash: run times and failures per kind, written by workers (runtimes.rs)
--   <base>u:<key>  uniqueness key: the id of the job that took it, expiring after its window
--                  (not tied to the job: retention trimming the job leaves it in place)
--   <base>cancelled zset score = cancel time (ms)   <base>cancelling set: running jobs asked to stop
--   <base>rate    hash: the rate limit's token bucket (tokens, at), see claim_jobs
--   <base>ev:<id>  event stream of a job enqueued with events on (capped, expires a day after
--                  its last event): started, progress, retrying, failed, completed, cancelling,
--                  cancelled; what a client's live status reads, resumable by stream entry id
--   <base>fence   never written: every script declares it, so a call waits out a resharding
--                 move of the queue's slot instead of running on half its keys (see
--                 QueueEngine::script_keys)
-- Groups (a job may carry a group key, its hash field `group`; see groups in limits.rs). A
-- grouped job waits in its group's set, not in `ready`, and claims rotate between groups:
--   <base>g:<group>   zset of the group's waiting jobs (score as `ready`; FIFO only when ordered)
--   <base>gr:<group>  set of its running job ids (its leases: the per-group concurrency count)
--   <base>gt:<group>  hash: its rate limit's token bucket      <base>gb:<group> hash: its breaker
--   <base>grr   zset: groups that may be claimed from now, score = rotation order (the least
--               recently served first)
--   <base>gwait zset: groups held until a time (a rate token, a breaker's cool-down, an ordered
--               group's retry), score = that time
--   <base>gheld set: groups held until one of their running jobs ends (cap reached, ordered
--               group busy, breaker probe under way)
--   <base>gbacklog zset: waiting jobs per group   <base>gwaiting: their total
--   <base>breakers zset: groups whose breaker is open or probing, score = when it opened
--   <base>gturn  whose turn the next claim starts with: 'ready' (the ready set) or 'groups'
-- A group with waiting jobs is in exactly one of grr, gwait and gheld (or has no waiting jobs and
-- is in none): every place that adds a waiting job admits its group unless held or waiting, and
-- every end of a running job re-admits a held group.
local PRIORITY_SPAN = 1099511627776 -- 2^40 sequence numbers per priority level

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function count_stat(base, now, field, n)
  if n > 0 then
    local key = base .. 'stats:' .. math.floor(now / 60000)
    redis.call('HINCRBY', key, field, n)
    redis.call('EXPIRE', key, 7200)
    -- The hour's rollup, for charts over a day or a week (a week of minutes is too many keys
    -- to read). Its expiry is set when a field first appears in the hour, so this costs one
    -- command more per call, not two.
    local hour = base .. 'stats:h:' .. math.floor(now / 3600000)
    if redis.call('HINCRBY', hour, field, n) == n then redis.call('EXPIRE', hour, 691200) end
  end
end

-- Drops from `retrying` (scheduled jobs waiting for a retry, indexed by fail.lua so the
-- dashboard counts them apart from first runs) up to `limit` entries that fell due and whose job
-- is no longer scheduled. Claims promote due jobs without touching the index (the claim path
-- stays as it is); it is cleaned here instead, by the failures that add to it and the counts
-- that read it.
local function retrying_prune(base, now, limit)
  local due = redis.call('ZRANGEBYSCORE', base .. 'retrying', '-inf', now, 'LIMIT', 0, limit)
  local gone = {}
  for _, id in ipairs(due) do
    if not redis.call('ZSCORE', base .. 'scheduled', id) then gone[#gone + 1] = id end
  end
  if #gone > 0 then redis.call('ZREM', base .. 'retrying', unpack(gone)) end
end

-- The group's backlog figures after its waiting set changed (what the dashboard and metrics
-- read without walking every group).
local function group_touch(base, group)
  local waiting = redis.call('ZCARD', base .. 'g:' .. group)
  local before = tonumber(redis.call('ZSCORE', base .. 'gbacklog', group) or '0')
  if waiting > 0 then
    redis.call('ZADD', base .. 'gbacklog', waiting, group)
  else
    redis.call('ZREM', base .. 'gbacklog', group)
  end
  if waiting ~= before then redis.call('INCRBY', base .. 'gwaiting', waiting - before) end
end

-- Puts a group with waiting jobs into the rotation, unless it is held or waits for a time.
local function group_admit(base, group)
  if redis.call('SISMEMBER', base .. 'gheld', group) == 1 then return end
  if redis.call('ZSCORE', base .. 'gwait', group) then return end
  redis.call('ZADD', base .. 'grr', 'NX', redis.call('INCR', base .. 'grseq'), group)
end

-- A running job of `group` ended (completed, failed, released, lease expired): its slot is free,
-- so a group held for want of one goes back into the rotation and a worker is woken for it.
local function group_exit(base, id, group)
  redis.call('SREM', base .. 'gr:' .. group, id)
  if redis.call('SREM', base .. 'gheld', group) == 1 then
    redis.call('ZADD', base .. 'grr', 'NX', redis.call('INCR', base .. 'grseq'), group)
    redis.call('LPUSH', base .. 'marker', '1')
    redis.call('LTRIM', base .. 'marker', 0, 63)
  end
end

-- Closes a group's breaker (a delivery succeeded, or an operator closed it): its waiting jobs
-- may be claimed again at once.
local function breaker_close(base, group)
  local bk = base .. 'gb:' .. group
  local state = redis.call('HGET', bk, 'state')
  if redis.call('DEL', bk) == 0 then return end
  redis.call('ZREM', base .. 'breakers', group)
  -- Only an open breaker's wait is lifted: a wait for a rate token or an ordered group's retry
  -- still holds.
  if state == 'open' and redis.call('ZREM', base .. 'gwait', group) == 1
    and redis.call('EXISTS', base .. 'g:' .. group) == 1 then
    -- The group has one wait, the later of the two: when the breaker opened on an ordered
    -- group's failed head, that wait also held the head's retry, which is put back (else the
    -- head would run at once, before its retry is due).
    local head = redis.call('ZRANGE', base .. 'g:' .. group, 0, 0)[1]
    local f = redis.call('HMGET', base .. 'j:' .. head, 'ordered', 'attempts', 'run_at')
    local retry_due = tonumber(f[3] or '0')
    if f[1] == '1' and tonumber(f[2] or '0') > 0 and retry_due > now_ms() then
      redis.call('ZADD', base .. 'gwait', retry_due, group)
    else
      group_admit(base, group)
    end
  elseif state == 'half' and redis.call('SREM', base .. 'gheld', group) == 1 then
    -- Held because the probe runs alone: without the breaker the group's own cap applies
    -- again, so it goes back into the rotation now rather than when the probe ends.
    group_admit(base, group)
  end
end

-- Counts a failed attempt against its group's breaker (threshold > 0): after `threshold`
-- failures in a row, or when the probe after a cool-down fails, the group waits for a cool-down
-- that doubles with every opening in a row (base_ms, 2 * base_ms, ... up to max_ms).
local function breaker_failure(base, group, now, threshold, base_ms, max_ms, message)
  local bk = base .. 'gb:' .. group
  local failures = redis.call('HINCRBY', bk, 'failures', 1)
  local state = redis.call('HGET', bk, 'state')
  redis.call('HSET', bk, 'last_error', message, 'failed_at', now)
  if state == 'open' or (state ~= 'half' and failures < threshold) then return end
  local opens = redis.call('HINCRBY', bk, 'opens', 1)
  local cooldown = math.min(max_ms, base_ms * 2 ^ math.min(opens - 1, 30))
  local reopen = now + cooldown
  redis.call('HSET', bk, 'state', 'open', 'until', reopen)
  if opens == 1 then
    redis.call('HSET', bk, 'opened_at', now)
    redis.call('ZADD', base .. 'breakers', now, group)
  end
  redis.call('ZREM', base .. 'grr', group)
  redis.call('SREM', base .. 'gheld', group)
  redis.call('ZADD', base .. 'gwait', 'GT', reopen, group)
end

-- Moves a job to the back of its priority band in the ready set, or of its group's waiting set
-- (an ordered group's job keeps its first place: FIFO across retries).
local function make_ready(base, id, now)
  local jk = base .. 'j:' .. id
  local f = redis.call('HMGET', jk, 'priority', 'group', 'gscore')
  local score = tonumber(f[3] or '-1')
  if score < 0 then
    score = tonumber(f[1] or '5') * PRIORITY_SPAN + redis.call('INCR', base .. 'seq')
  end
  if f[2] then
    redis.call('ZADD', base .. 'g:' .. f[2], score, id)
    group_touch(base, f[2])
    group_admit(base, f[2])
  else
    redis.call('ZADD', base .. 'ready', score, id)
  end
  redis.call('HSET', jk, 'enqueued_at', now)
end

-- Takes a waiting job out of the ready set or its group's set; false if it was in neither.
local function unready(base, id, group)
  if group then
    if redis.call('ZREM', base .. 'g:' .. group, id) == 0 then return false end
    group_touch(base, group)
    return true
  end
  return redis.call('ZREM', base .. 'ready', id) == 1
end

-- Deletes a finished job's hash and error list (retention trimming).
local function drop_job(base, ids)
  if #ids == 0 then return end
  local keys = {}
  for _, id in ipairs(ids) do
    keys[#keys + 1] = base .. 'j:' .. id
    keys[#keys + 1] = base .. 'e:' .. id
  end
  redis.call('DEL', unpack(keys))
end

local EVENT_TTL_SECONDS = 86400

-- Appends an event to a job's stream. Only jobs enqueued with events on have one (their hash
-- says `events` = '1'), so the cost falls on the few jobs someone watches, not on every ack.
local function emit(base, id, kind, data)
  local key = base .. 'ev:' .. id
  redis.call('XADD', key, 'MAXLEN', '~', 100, '*', 'type', kind, 'data', data)
  redis.call('EXPIRE', key, EVENT_TTL_SECONDS)
end

-- Ends a job as cancelled: neither retried nor dead. The caller has taken it out of the set it
-- was in.
local function settle_cancelled(base, id, now, reason, events)
  redis.call('HSET', base .. 'j:' .. id, 'finished_at', now, 'cancel_reason', reason)
  redis.call('ZADD', base .. 'cancelled', now, id)
  redis.call('SREM', base .. 'cancelling', id)
  count_stat(base, now, 'cancelled', 1)
  if events == '1' then emit(base, id, 'cancelled', cjson.encode({reason = reason})) end
end

local function wake(base, n)
  if n > 0 then
    local markers = {}
    for i = 1, math.min(n, 16) do markers[i] = '1' end
    redis.call('LPUSH', base .. 'marker', unpack(markers))
    redis.call('LTRIM', base .. 'marker', 0, 63)
  end
end

-- Completes leased jobs given as (id, lease) pairs in argv[from..], then trims finished jobs
-- beyond the retention limits (at most 1000 per call). Returns one 1/0 per pair (0: lease lost).
-- With a concurrency cap (cap > 0) every completion frees a slot, so waiting workers are woken.
local function finish_jobs(base, now, keep, max_age, cap, argv, from)
  local results, done_args = {}, {}
  for i = from, #argv, 2 do
    local id, lease = argv[i], argv[i + 1]
    local jk = base .. 'j:' .. id
    -- The hash is not rewritten: membership of the completed set is the state, its score the
    -- finish time (two calls per job keep acks cheap at tens of thousands per second).
    local f = redis.call('HMGET', jk, 'lease', 'events', 'group')
    if f[1] == lease and redis.call('ZREM', base .. 'active', id) == 1 then
      done_args[#done_args + 1] = now
      done_args[#done_args + 1] = id
      results[#results + 1] = 1
      if f[3] then
        group_exit(base, id, f[3])
        -- A success closes the group's breaker and ends its run of failures.
        if redis.call('EXISTS', base .. 'gb:' .. f[3]) == 1 then breaker_close(base, f[3]) end
      end
      if f[2] == '1' then
        -- The result is stored as JSON text, so it is spliced in as it is.
        local result = redis.call('HGET', jk, 'result') or 'null'
        emit(base, id, 'completed', '{"result":' .. result .. '}')
      end
    else
      results[#results + 1] = 0
    end
  end
  if #done_args > 0 then
    redis.call('ZADD', base .. 'completed', unpack(done_args))
    count_stat(base, now, 'completed', #done_args / 2)
    if cap > 0 then wake(base, #done_args / 2) end
  end

  -- Retention: keep at most `keep` completed jobs, none older than max_age. At most 1000 per
  -- call, so a huge backlog of finished jobs is trimmed over several calls, not one long one.
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
end

-- The token bucket at `key` refilled to now: returns the tokens (fractional) and the ms per token.
local function bucket_level(key, now, jobs, period, burst)
  local interval = period / jobs
  local bucket = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(bucket[1] or burst)
  local at = tonumber(bucket[2] or now)
  return math.min(burst, tokens + math.max(0, now - at) / interval), interval
end

local function bucket_store(key, now, tokens, period)
  redis.call('HSET', key, 'tokens', tokens, 'at', now)
  redis.call('PEXPIRE', key, math.ceil(period * 2 + 60000))
end

-- Takes the next waiting job of `group` if its limits allow, and puts the group back where it
-- belongs: the back of the rotation, held until a running job ends, or waiting for a time.
-- gl: {rate_jobs, rate_period, burst, cap} of every group of the queue (0: no such limit); an
-- ordered group (its head job says so) and a breaker's probe run one job at a time.
-- Returns the job id, or nil (the group is placed and nothing is taken).
local function take_from_group(base, group, now, gl)
  local gq = base .. 'g:' .. group
  local head = redis.call('ZRANGE', gq, 0, 0)
  if #head == 0 then return nil end -- out of the rotation until a job arrives
  local id = head[1]
  local cap = gl[4]
  if redis.call('HGET', base .. 'j:' .. id, 'ordered') == '1' then cap = 1 end
  local bk = base .. 'gb:' .. group
  local breaker = redis.call('HMGET', bk, 'state', 'until')
  local probe = false
  if breaker[1] == 'open' then
    local reopen = tonumber(breaker[2])
    if reopen > now then
      redis.call('ZADD', base .. 'gwait', 'GT', reopen, group)
      return nil
    end
    redis.call('HSET', bk, 'state', 'half')
    probe = true
  elseif breaker[1] == 'half' then
    probe = true
  end
  if probe then cap = 1 end
  local running = redis.call('SCARD', base .. 'gr:' .. group)
  if cap > 0 and running >= cap then
    redis.call('SADD', base .. 'gheld', group)
    return nil
  end
  local tokens, interval
  local tk = base .. 'gt:' .. group
  if gl[1] > 0 then
    tokens, interval = bucket_level(tk, now, gl[1], gl[2], gl[3])
    if tokens < 1 then
      bucket_store(tk, now, tokens, gl[2])
      redis.call('ZADD', base .. 'gwait', 'GT', now + math.ceil((1 - tokens) * interval), group)
      return nil
    end
    tokens = tokens - 1
    bucket_store(tk, now, tokens, gl[2])
  end
  redis.call('ZREM', gq, id)
  redis.call('SADD', base .. 'gr:' .. group, id)
  group_touch(base, group)
  if redis.call('EXISTS', gq) == 0 then
    -- Nothing else waits: the group rejoins the rotation when a job arrives.
  elseif cap > 0 and running + 1 >= cap then
    redis.call('SADD', base .. 'gheld', group)
  elseif tokens and tokens < 1 then
    redis.call('ZADD', base .. 'gwait', 'GT', now + math.ceil((1 - tokens) * interval), group)
  else
    redis.call('ZADD', base .. 'grr', redis.call('INCR', base .. 'grseq'), group)
  end
  return id
end

-- Pops up to n waiting jobs (grouped: whether the queue's group keys exist): the ready set's best first, except that when groups are in the
-- rotation each claim alternates between the ready set and the next group in turn, so a group
-- with a long backlog delays another group's job by one turn, not by its backlog.
-- Returns a ZPOPMIN-shaped list (id, score, id, score, ...).
local function pop_waiting(base, now, n, gl, grouped)
  if n <= 0 then return {} end
  if not grouped or redis.call('EXISTS', base .. 'grr') == 0 then
    return redis.call('ZPOPMIN', base .. 'ready', n)
  end
  local popped = {}
  local turns = n * 4 + 16 -- bounded: a turn may find its group held and take nothing
  local from_ready = redis.call('EXISTS', base .. 'ready') == 1
  -- Whose turn is next carries over from the last claim: were every claim to start with the
  -- groups, claims of one job (a busy worker's) would never reach the ready set while any
  -- group had jobs.
  local ready_turn = redis.call('GET', base .. 'gturn') == 'ready'
  while #popped < n * 2 and turns > 0 do
    turns = turns - 1
    if ready_turn and from_ready then
      local one = redis.call('ZPOPMIN', base .. 'ready', 1)
      if #one == 0 then
        from_ready = false
      else
        popped[#popped + 1] = one[1]
        popped[#popped + 1] = one[2]
      end
    else
      local next_group = redis.call('ZPOPMIN', base .. 'grr', 1)
      if #next_group == 0 then
        if not from_ready then break end
      else
        local id = take_from_group(base, next_group[1], now, gl)
        if id then
          popped[#popped + 1] = id
          popped[#popped + 1] = 0
        end
      end
    end
    ready_turn = not ready_turn
  end
  redis.call('SET', base .. 'gturn', ready_turn and 'ready' or 'groups')
  return popped
end

-- Claims up to max_jobs jobs for a worker: promotes due scheduled jobs and recovers expired
-- leases first (each step bounded), then pops the best-priority, oldest jobs and leases them,
-- within the queue's fleet-wide limits (see limits.rs): at most `cap` running (cap > 0), and one
-- token of the rate limit's bucket per job (rate_jobs per rate_period ms, at most burst tokens
-- saved up; rate_jobs = 0: no limit).
-- Returns { next_wake_ms_or_-1, now, {{id, lease, attempts, kind, payload, priority,
--           max_attempts, request_id, retry, created_at, traceparent}...}, rate_limited (1: jobs
--           wait for the next token, due at next_wake) }
local function claim_jobs(base, now, max_jobs, lease_ms, worker, promote_limit, rate_jobs, rate_period,
                          burst, cap, gl)
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
    local f = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'worker', 'cancel_requested', 'events',
      'group')
    local attempts, max_attempts = tonumber(f[1] or '0'), tonumber(f[2] or '1')
    -- Not the group's fault (its breaker does not count it), but its slot is free again.
    if f[6] then group_exit(base, id, f[6]) end
    local message = 'lease expired: worker ' .. (f[3] or '?') .. ' stopped renewing it (killed or hung)'
    redis.call('RPUSH', base .. 'e:' .. id, cjson.encode({attempt = attempts, at = now, error = message}))
    redis.call('LTRIM', base .. 'e:' .. id, -25, -1)
    redis.call('HSET', jk, 'last_error', message)
    if f[4] then
      -- Asked to stop while it ran: the stop is what was wanted, not another attempt.
      settle_cancelled(base, id, now, 'cancelled while running; ' .. message, f[5])
    elseif attempts >= max_attempts then
      redis.call('HSET', jk, 'finished_at', now)
      redis.call('ZADD', base .. 'dead', now, id)
      died = died + 1
      if f[5] == '1' then emit(base, id, 'failed', cjson.encode({attempt = attempts, error = message})) end
    else
      make_ready(base, id, now)
      if f[5] == '1' then
        emit(base, id, 'retrying', cjson.encode({attempt = attempts, error = message, retry_at = now}))
      end
    end
  end
  count_stat(base, now, 'failed', #expired)
  count_stat(base, now, 'dead', died)

  -- Groups in use at all? One call, so a queue without groups pays nothing more. Groups whose
  -- wait is over (a rate token, a breaker's cool-down, an ordered group's retry) rejoin the
  -- rotation.
  local grouped = redis.call('EXISTS', base .. 'grr', base .. 'gwait') > 0
  local groups_due = {}
  if grouped then
    groups_due = redis.call('ZRANGEBYSCORE', base .. 'gwait', '-inf', now, 'LIMIT', 0, promote_limit)
    if #groups_due > 0 then
      redis.call('ZREM', base .. 'gwait', unpack(groups_due))
      for _, group in ipairs(groups_due) do group_admit(base, group) end
    end
  end

  -- 3. Claim, unless an operator paused the queue, within its limits.
  local jobs = {}
  local token_due = -1
  if max_jobs > 0 and redis.call('EXISTS', base .. 'paused') == 0 then
    local n = max_jobs
    if cap > 0 then
      n = math.max(0, math.min(n, cap - redis.call('ZCARD', base .. 'active')))
    end
    local tokens, interval
    if rate_jobs > 0 and n > 0 then
      tokens, interval = bucket_level(base .. 'rate', now, rate_jobs, rate_period, burst)
      n = math.min(n, math.floor(tokens))
    end
    local popped = pop_waiting(base, now, n, gl, grouped)
    if tokens then
      tokens = tokens - #popped / 2
      bucket_store(base .. 'rate', now, tokens, rate_period)
      if #popped / 2 < max_jobs and tokens < 1
        and (redis.call('EXISTS', base .. 'ready') == 1 or redis.call('EXISTS', base .. 'grr') == 1) then
        -- Held back by the limit: the next token is due when the bucket reaches one.
        token_due = now + math.ceil((1 - tokens) * interval)
      end
    end
    local deadline = now + lease_ms
    local active_args = {}
    for i = 1, #popped, 2 do
      local id = popped[i]
      local jk = base .. 'j:' .. id
      -- Two calls per job: read everything, then write the new lease in one HSET.
      local f = redis.call('HMGET', jk, 'kind', 'payload', 'priority', 'max_attempts', 'request_id', 'retry',
        'created_at', 'attempts', 'lease', 'events', 'trace')
      if f[1] then
        local attempts = tonumber(f[8] or '0') + 1
        local lease = tonumber(f[9] or '0') + 1
        redis.call('HSET', jk, 'attempts', attempts, 'lease', lease, 'worker', worker, 'started_at', now)
        if f[10] == '1' then emit(base, id, 'started', cjson.encode({attempt = attempts})) end
        active_args[#active_args + 1] = deadline
        active_args[#active_args + 1] = id
        jobs[#jobs + 1] = {id, lease, attempts, f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[11] or ''}
      end
    end
    if #active_args > 0 then redis.call('ZADD', base .. 'active', unpack(active_args)) end
    -- Nothing is left to claim: the wake-ups still in the list were pushed for jobs some claim
    -- has taken, and would only wake fetchers to claim nothing. New work pushes its own, and
    -- due jobs, expired leases and waiting groups wake fetchers by their time (next_wake).
    if redis.call('EXISTS', base .. 'ready', base .. 'grr') == 0 then
      redis.call('DEL', base .. 'marker')
    end
  end

  -- When should an idle worker look again? The next due scheduled job or lease deadline.
  local next_wake = -1
  local s = redis.call('ZRANGE', base .. 'scheduled', 0, 0, 'WITHSCORES')
  if #s > 0 then next_wake = tonumber(s[2]) end
  local a = redis.call('ZRANGE', base .. 'active', 0, 0, 'WITHSCORES')
  if #a > 0 and (next_wake < 0 or tonumber(a[2]) < next_wake) then next_wake = tonumber(a[2]) end
  if grouped then
    local w = redis.call('ZRANGE', base .. 'gwait', 0, 0, 'WITHSCORES')
    if #w > 0 and (next_wake < 0 or tonumber(w[2]) < next_wake) then next_wake = tonumber(w[2]) end
  end
  if #due >= promote_limit or #groups_due >= promote_limit or #expired >= 100 then next_wake = now end
  if token_due >= 0 then
    return {token_due, now, jobs, 1}
  end
  return {next_wake, now, jobs, 0}
end
