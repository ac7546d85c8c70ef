-- Claims jobs for a worker (see claim_jobs in common.lua).
-- ARGV: base, max_jobs, lease_ms, worker_id, promote_limit, rate_jobs, rate_period_ms, burst, cap,
--       then the same four for each group of the queue
return claim_jobs(ARGV[1], now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]),
  tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]),
  {tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])})
