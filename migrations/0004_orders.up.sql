-- Orders and their lines. Each line keeps the price, name and sku at the time of the order,
-- so later catalogue edits never rewrite history.
create table orders (
    id          uuid primary key,
    user_id     uuid        not null references users (id),
    status      text        not null check (status in ('placed', 'paid', 'shipped', 'delivered', 'cancelled')),
    total_cents bigint      not null check (total_cents >= 0),
    currency    text        not null check (currency ~ '^[A-Z]{3}$'),
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create index orders_user_id_idx on orders (user_id, id desc);
create index orders_created_at_idx on orders (created_at);

create trigger orders_updated_at before update on orders
    for each row execute function set_updated_at();

create table order_items (
    order_id         uuid        not null references orders (id) on delete cascade,
    product_id       uuid        not null references products (id),
    line_no          integer     not null,
    sku              text        not null,
    name             text        not null,
    quantity         integer     not null check (quantity > 0),
    unit_price_cents bigint      not null check (unit_price_cents >= 0),
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    primary key (order_id, product_id)
);

create trigger order_items_updated_at before update on order_items
    for each row execute function set_updated_at();

-- Idempotency keys (IETF httpapi-idempotency-key-header, Stripe's behaviour): one row per
-- (user, scope, key). `resource_id` is set inside the transaction that creates the resource, so a
-- crash between commit and storing the response can still be answered from the resource itself.
create table idempotency_keys (
    user_id         uuid        not null references users (id) on delete cascade,
    scope           text        not null,
    key             text        not null,
    request_hash    text        not null,
    resource_id     uuid,
    response_status smallint,
    response_body   bytea,
    locked_until    timestamptz not null,
    expires_at      timestamptz not null,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    primary key (user_id, scope, key)
);

create index idempotency_keys_expires_at_idx on idempotency_keys (expires_at);

create trigger idempotency_keys_updated_at before update on idempotency_keys
    for each row execute function set_updated_at();
