-- A worker records every attempt on its delivery row moments after the order's statement
-- inserted it. That update can be a heap-only (HOT) update, a new row version on the same page
-- and no new index entries, only when no indexed column changes and the page has room:
-- - the retention index no longer names `status` in its predicate (the attempt that settles a
--   delivery changes the status, which made every such update write all three indexes); the
--   retention delete still skips pending rows by its filter, and they are the newest anyway;
-- - new pages keep a fifth free for the updated versions (existing pages keep their layout).
alter table webhook_deliveries set (fillfactor = 80);
drop index webhook_deliveries_finished_created_at_idx;
create index webhook_deliveries_created_at_idx on webhook_deliveries (created_at);
