-- Completes finished jobs and claims their replacements in one call: a busy worker needs one
-- round trip per batch instead of two, and Redis runs one script instead of two.
-- ARGV: base, keep_count, max_age_ms, max_jobs, lease_ms, worker_id, promote_limit, rate_jobs,
--       rate_period_ms, burst, cap, the same four for each group, then pairs (id, lease)
-- Returns { ack results, claim result (as claim.lua) }
local base, now = ARGV[1], now_ms()
local cap = tonumber(ARGV[11])
local acked = finish_jobs(base, now, tonumber(ARGV[2]), tonumber(ARGV[3]), cap, ARGV, 16)
return {acked, claim_jobs(base, now, tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[7]),
  tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10]), cap,
  {tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14]), tonumber(ARGV[15])})}
