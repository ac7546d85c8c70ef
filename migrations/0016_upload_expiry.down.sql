drop index if exists uploads_expiry_candidates_idx;
-- Rows whose original was deleted forget it: reading one answers "missing from storage" (404).
alter table uploads drop column expired_at;
