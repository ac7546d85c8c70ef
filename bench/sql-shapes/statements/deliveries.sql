-- One webhook delivery per subscribed endpoint (shared/src/webhooks/repository.rs).
insert into webhook_deliveries (id, endpoint_id, event_type, payload)
select orderly_uuidv7(), subscribed.id, 'order.placed', '{"id":"evt_0195f0a0","type":"order.placed","created_at":"2026-12-03T06:00:00Z","data":{"id":"0195f0a0-0000-7000-8000-000000000000","user_id":"00000000-0000-0000-0001-000000000001","status":"placed","total_cents":1299,"currency":"EUR","items":[{"product_id":"00000000-0000-0000-0000-000000000001","sku":"SKU-1","name":"Product 1","quantity":1,"unit_price_cents":1299,"line_total_cents":1299}],"created_at":"2026-12-03T06:00:00Z","updated_at":"2026-12-03T06:00:00Z"}}'
from (select id from webhook_endpoints where enabled and events @> array['order.placed']::text[] order by id) as subscribed
returning id, endpoint_id;
