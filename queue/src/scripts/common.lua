-- Shared helpers, prepended to every script by the engine (Lua scripts cannot include files).
-- A job's state is the set its id is in (the hash holds its data, not its state).
-- Key layout of one queue, all under one hash tag so the queue lives in one Redis Cluster slot:
--   <base>j:<id>  job hash          <base>e:<id>  error list (newest last, capped)
--   <base>ready   zset score = priority * 2^40 + sequence  (strict priority, then FIFO)
--   <base>scheduled zset score = due time (ms)   <base>active zset score = lease deadline (ms)
--   <base>completed / <base>dead  zset score = finish time (ms)
--   <base>seq counter   <base>marker wake-up list   <base>paused flag   <base>stats:<minute> hash
--   <base>u:<key>  uniqueness key: the id of the job that took it, expiring after its window
--                  (not tied to the job: retention trimming the job leaves it in place)
--   <base>cancelled zset score = cancel time (ms)   <base>cancelling set: running jobs asked to stop
--   <base>rate    hash: the rate limit's token bucket (tokens, at), see claim_jobs
--   <base>ev:<id>  event stream of a job enqueued with events on (capped, expires a day after
--                  its last event): started, progress, retrying, failed, completed, cancelling,
--                  cancelled; what a client's live status reads, resumable by stream entry id
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
  end
end

-- Moves a job to the back of its priority band in the ready set.
local function make_ready(base, id, now)
  local jk = base .. 'j:' .. id
  local priority = tonumber(redis.call('HGET', jk, 'priority') or '5')
  local seq = redis.call('INCR', base .. 'seq')
  redis.call('ZADD', base .. 'ready', priority * PRIORITY_SPAN + seq, id)
  redis.call('HSET', jk, 'enqueued_at', now)
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
    local f = redis.call('HMGET', jk, 'lease', 'events')
    if f[1] == lease and redis.call('ZREM', base .. 'active', id) == 1 then
      done_args[#done_args + 1] = now
      done_args[#done_args + 1] = id
      results[#results + 1] = 1
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

-- Claims up to max_jobs jobs for a worker: promotes due scheduled jobs and recovers expired
-- leases first (each step bounded), then pops the best-priority, oldest jobs and leases them,
-- within the queue's fleet-wide limits (see limits.rs): at most `cap` running (cap > 0), and one
-- token of the rate limit's bucket per job (rate_jobs per rate_period ms, at most burst tokens
-- saved up; rate_jobs = 0: no limit).
-- Returns { next_wake_ms_or_-1, now, {{id, lease, attempts, kind, payload, priority,
--           max_attempts, request_id, retry, created_at}...}, rate_limited (1: jobs wait for the
--           next token, due at next_wake) }
local function claim_jobs(base, now, max_jobs, lease_ms, worker, promote_limit, rate_jobs, rate_period,
                          burst, cap)
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
    local f = redis.call('HMGET', jk, 'attempts', 'max_attempts', 'worker', 'cancel_requested', 'events')
    local attempts, max_attempts = tonumber(f[1] or '0'), tonumber(f[2] or '1')
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
      interval = rate_period / rate_jobs
      local bucket = redis.call('HMGET', base .. 'rate', 'tokens', 'at')
      tokens = tonumber(bucket[1] or burst)
      local at = tonumber(bucket[2] or now)
      tokens = math.min(burst, tokens + math.max(0, now - at) / interval)
      n = math.min(n, math.floor(tokens))
    end
    local popped = {}
    if n > 0 then popped = redis.call('ZPOPMIN', base .. 'ready', n) end
    if tokens then
      tokens = tokens - #popped / 2
      redis.call('HSET', base .. 'rate', 'tokens', tokens, 'at', now)
      redis.call('PEXPIRE', base .. 'rate', math.ceil(rate_period * 2 + 60000))
      if #popped / 2 < max_jobs and tokens < 1 and redis.call('ZCARD', base .. 'ready') > 0 then
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
        'created_at', 'attempts', 'lease', 'events')
      if f[1] then
        local attempts = tonumber(f[8] or '0') + 1
        local lease = tonumber(f[9] or '0') + 1
        redis.call('HSET', jk, 'attempts', attempts, 'lease', lease, 'worker', worker, 'started_at', now)
        if f[10] == '1' then emit(base, id, 'started', cjson.encode({attempt = attempts})) end
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
  if token_due >= 0 then
    return {token_due, now, jobs, 1}
  end
  return {next_wake, now, jobs, 0}
end
