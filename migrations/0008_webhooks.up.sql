-- Outgoing webhooks (Standard Webhooks): endpoints registered by admins, and one delivery row
-- per event per subscribed endpoint, retried by the `webhooks` queue.

-- An endpoint receives the events it subscribed to, signed with its secret. The secret is kept
-- as given to the admin (`whsec_...`) because signing needs the key itself; it is never shown
-- again after creation. Encrypting it at rest (a key held outside the database) is a later step.
create table webhook_endpoints (
    id              uuid primary key,
    url             text        not null check (url ~ '^https?://'),
    events          text[]      not null check (
                        cardinality(events) > 0
                        and events <@ array['order.placed', 'order.cancelled', 'order.status_changed', 'report.ready']::text[]
                    ),
    secret          text        not null check (secret like 'whsec_%'),
    enabled         boolean     not null default true,
    -- Why and when deliveries stopped (the receiver answered 410 Gone).
    disabled_reason text,
    disabled_at     timestamptz,
    created_by      uuid        references users (id) on delete set null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now()
);

-- The subscriber's lookup inside every order transaction: enabled endpoints for one event type.
create index webhook_endpoints_events_idx on webhook_endpoints using gin (events) where enabled;

create trigger webhook_endpoints_updated_at before update on webhook_endpoints
    for each row execute function set_updated_at();

-- One event for one endpoint. `id` is also the `webhook-id` header, so a receiver can drop
-- duplicates; `payload` is the exact body, fixed when the event happened, so every retry sends
-- the same bytes. The `last_*` columns describe the latest attempt.
create table webhook_deliveries (
    id               uuid primary key,
    endpoint_id      uuid        not null references webhook_endpoints (id) on delete cascade,
    event_type       text        not null,
    payload          text        not null,
    status           text        not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
    attempts         integer     not null default 0 check (attempts >= 0),
    last_status_code smallint,
    last_error       text,
    last_latency_ms  integer,
    last_attempt_at  timestamptz,
    next_retry_at    timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

create index webhook_deliveries_endpoint_id_idx on webhook_deliveries (endpoint_id, id desc);

create trigger webhook_deliveries_updated_at before update on webhook_deliveries
    for each row execute function set_updated_at();
