-- Shared helpers, prepended to every script by the engine (Lua scripts cannot include files).
-- Key layout of one queue, all under one hash tag so the queue lives in one Redis Cluster slot:
--   <base>j:<id>  job hash          <base>e:<id>  error list (newest last, capped)
--   <base>ready   zset score = priority * 2^40 + sequence  (strict priority, then FIFO)
--   <base>scheduled zset score = due time (ms)   <base>active zset score = lease deadline (ms)
--   <base>completed / <base>dead  zset score = finish time (ms)
--   <base>seq counter   <base>marker wake-up list   <base>paused flag   <base>stats:<minute> hash
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
  redis.call('HSET', jk, 'state', 'ready', 'enqueued_at', now)
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

local function wake(base, n)
  if n > 0 then
    local markers = {}
    for i = 1, math.min(n, 16) do markers[i] = '1' end
    redis.call('LPUSH', base .. 'marker', unpack(markers))
    redis.call('LTRIM', base .. 'marker', 0, 63)
  end
end
