-- Gives leased jobs back without running them (graceful shutdown). The attempt is refunded: the
-- job did not fail, the worker left.
-- ARGV: base, then pairs (id, lease). Returns the number released.
local base = ARGV[1]
local now = now_ms()
local released = 0
for i = 2, #ARGV, 2 do
  local id, lease = ARGV[i], ARGV[i + 1]
  local jk = base .. 'j:' .. id
  local f = redis.call('HMGET', jk, 'lease', 'cancel_requested', 'cancel_reason', 'events', 'group')
  if f[1] == lease and redis.call('ZREM', base .. 'active', id) == 1 then
    if f[5] then group_exit(base, id, f[5]) end
    if f[2] then
      -- Asked to stop: it is not put back to run again.
      settle_cancelled(base, id, now, f[3] or 'cancelled', f[4])
    else
      redis.call('HINCRBY', jk, 'attempts', -1)
      redis.call('HDEL', jk, 'worker')
      make_ready(base, id, now)
      released = released + 1
    end
  end
end
wake(base, released)
return released
