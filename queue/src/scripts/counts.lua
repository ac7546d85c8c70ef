-- A consistent snapshot of one queue's sizes: waiting per priority (0..9), scheduled (and of
-- them, the retries), active, completed, dead, cancelled, paused, and the enqueue time of the
-- oldest waiting job. Bounded: 10 range reads, and at most 200 index entries checked.
-- ARGV: base. Returns {now, paused, scheduled, active, completed, dead, oldest_enqueued_ms_or_-1,
--                      waiting_p0, ..., waiting_p9, cancelled, waiting in groups,
--                      groups with an open breaker, retrying} (waiting_p* count ungrouped jobs
--                      only; retrying: scheduled jobs waiting for a retry)
local base = ARGV[1]
local now = now_ms()
local ready = base .. 'ready'
local out = {now, redis.call('EXISTS', base .. 'paused'), redis.call('ZCARD', base .. 'scheduled'),
  redis.call('ZCARD', base .. 'active'), redis.call('ZCARD', base .. 'completed'),
  redis.call('ZCARD', base .. 'dead'), -1}
local oldest = -1
for p = 0, 9 do
  local lo, hi = p * PRIORITY_SPAN, (p + 1) * PRIORITY_SPAN - 1
  out[#out + 1] = redis.call('ZCOUNT', ready, lo, hi)
  -- FIFO inside a band: the first member of each band waited longest in it.
  local first = redis.call('ZRANGEBYSCORE', ready, lo, hi, 'LIMIT', 0, 1)
  if #first > 0 then
    local f = redis.call('HMGET', base .. 'j:' .. first[1], 'enqueued_at', 'created_at')
    local at = tonumber(f[1] or f[2] or '-1')
    if at >= 0 and (oldest < 0 or at < oldest) then oldest = at end
  end
end
out[7] = oldest
out[#out + 1] = redis.call('ZCARD', base .. 'cancelled')
out[#out + 1] = tonumber(redis.call('GET', base .. 'gwaiting') or '0')
out[#out + 1] = redis.call('ZCARD', base .. 'breakers')
-- Retries that fell due were promoted by claims, which leave the index alone: dropped first.
retrying_prune(base, now, 200)
out[#out + 1] = redis.call('ZCARD', base .. 'retrying')
return out
