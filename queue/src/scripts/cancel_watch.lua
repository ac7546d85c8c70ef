-- The running jobs of a queue asked to stop (see cancel.lua). Members whose job is no longer
-- running (it finished before it saw the signal) are dropped, so the set stays as small as the
-- number of jobs being stopped.
-- ARGV: base. Returns the ids.
local base = ARGV[1]
local ids = redis.call('SMEMBERS', base .. 'cancelling')
local running = {}
for _, id in ipairs(ids) do
  if redis.call('ZSCORE', base .. 'active', id) then
    running[#running + 1] = id
  else
    redis.call('SREM', base .. 'cancelling', id)
  end
end
return running
