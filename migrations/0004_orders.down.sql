drop table if exists idempotency_keys;
drop table if exists order_items;
drop table if exists orders;
