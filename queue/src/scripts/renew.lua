-- Extends the leases a worker still holds.
-- ARGV: base, lease_ms, then pairs (id, lease)
-- Returns the ids whose lease was lost (expired and taken back, or deleted).
local base, lease_ms = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local lost, args = {}, {}
for i = 3, #ARGV, 2 do
  local id, lease = ARGV[i], ARGV[i + 1]
  if redis.call('HGET', base .. 'j:' .. id, 'lease') == lease and redis.call('ZSCORE', base .. 'active', id) then
    args[#args + 1] = now + lease_ms
    args[#args + 1] = id
  else
    lost[#lost + 1] = id
  end
end
if #args > 0 then redis.call('ZADD', base .. 'active', 'XX', unpack(args)) end
return lost
