-- Upload retention: an upload's original file is deleted UPLOAD_RETENTION_DAYS after its
-- processing finished (completed, failed or cancelled), and `expired_at` says when. The row
-- keeps its outcome: a completed import stays `completed` with its counters and row errors, a
-- failed one `failed` with its error; what expired is the original file, not the result, so
-- there is no `expired` status (and the status check of 0015 stays as it is). An image's
-- thumbnail is not an original: products show it, and it is kept.
alter table uploads add column expired_at timestamptz;
-- Maintenance finds the uploads that finished longest ago and still have their original without
-- scanning the table. When one finished: `completed_at` for completed ones, `cancelled_at` for
-- cancelled ones, and for failed ones their last change (nothing changes a finished row after).
create index uploads_expiry_candidates_idx
    on uploads ((coalesce(completed_at, cancelled_at, updated_at)))
    where expired_at is null and status in ('completed', 'failed', 'cancelled');
