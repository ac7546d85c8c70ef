-- Marks leased jobs completed and trims finished jobs (see finish_jobs in common.lua).
-- ARGV: base, keep_count, max_age_ms, cap (the queue's concurrency cap, 0: none), then pairs
--       (id, lease)
-- Returns one integer per job: 1 completed, 0 refused (lease lost: the job is someone else's now).
return finish_jobs(ARGV[1], now_ms(), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV, 5)
