-- Writes a running job's progress or result, if the caller still holds its lease.
-- ARGV: base, id, lease, field ('progress' | 'result'), value (JSON text, bounded by the caller)
-- Progress also goes to the job's event stream when it has one.
-- Returns 1 written, 0 lease lost (the job is someone else's, or finished).
local base, id, lease, field, value = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local jk = base .. 'j:' .. id
local f = redis.call('HMGET', jk, 'lease', 'events')
if f[1] ~= lease or not redis.call('ZSCORE', base .. 'active', id) then return 0 end
redis.call('HSET', jk, field, value)
if field == 'progress' and f[2] == '1' then emit(base, id, 'progress', value) end
return 1
