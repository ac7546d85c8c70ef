-- The catalogue. Money is integer minor units plus an ISO 4217 code; stock can never go negative,
-- which is what makes concurrent orders unable to oversell.
create table products (
    id          uuid primary key,
    sku         text        not null,
    name        text        not null,
    description text        not null default '',
    price_cents bigint      not null check (price_cents >= 0),
    currency    text        not null check (currency ~ '^[A-Z]{3}$'),
    stock       integer     not null check (stock >= 0),
    active      boolean     not null default true,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint products_sku_key unique (sku)
);

create trigger products_updated_at before update on products
    for each row execute function set_updated_at();
