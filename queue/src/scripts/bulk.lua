-- Bulk operator actions, bounded: each call handles at most ARGV[3] jobs and returns how many it
-- handled, so the caller loops until 0 and no single call blocks Redis for long.
-- ARGV: base, action ('retry_dead' | 'purge_completed' | 'purge_dead' | 'purge_cancelled' |
--       'trim_dead'), limit, cutoff (ms; 'trim_dead' removes dead and cancelled jobs that ended
--       before it)
local base, action, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
if action == 'retry_dead' then
  local ids = redis.call('ZRANGE', base .. 'dead', 0, limit - 1)
  for _, id in ipairs(ids) do
    redis.call('HSET', base .. 'j:' .. id, 'attempts', 0)
    redis.call('HDEL', base .. 'j:' .. id, 'finished_at')
    make_ready(base, id, now)
  end
  if #ids > 0 then redis.call('ZREM', base .. 'dead', unpack(ids)) end
  wake(base, #ids)
  return #ids
elseif action == 'purge_completed' or action == 'purge_dead' or action == 'purge_cancelled' then
  local set = base .. string.sub(action, 7)
  local ids = redis.call('ZRANGE', set, 0, limit - 1)
  if #ids > 0 then
    redis.call('ZREM', set, unpack(ids))
    drop_job(base, ids)
  end
  return #ids
elseif action == 'trim_dead' then
  local total = 0
  for _, state in ipairs({'dead', 'cancelled'}) do
    local ids = redis.call('ZRANGEBYSCORE', base .. state, '-inf', '(' .. ARGV[4], 'LIMIT', 0, limit - total)
    if #ids > 0 then
      redis.call('ZREM', base .. state, unpack(ids))
      drop_job(base, ids)
    end
    total = total + #ids
    if total >= limit then break end
  end
  return total
end
return redis.error_reply('unknown action ' .. tostring(action))
