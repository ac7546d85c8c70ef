-- Reports: a customer may export their own orders (`my_orders`); the shop-wide `sales` report
-- stays for admins. The partial index answers "how many reports does this user have queued or
-- running" (the per-user cap) without reading finished ones.
alter table reports drop constraint reports_kind_check;
alter table reports add constraint reports_kind_check check (kind in ('sales', 'my_orders'));
create index reports_open_by_user_idx on reports (user_id) where status in ('queued', 'running');

-- Token revocation. Every access token carries its user's generation; a password or role change
-- increments it, so every earlier token of that user is refused from then on.
alter table users add column token_generation integer not null default 0;

-- Refresh tokens: one row per issued token, only a SHA-256 of its secret stored. Each login
-- starts a family; a refresh rotates the token within its family. Presenting a token that was
-- already rotated means it leaked: the whole family is revoked.
create table refresh_tokens (
    id          uuid primary key,
    family_id   uuid        not null,
    user_id     uuid        not null references users (id) on delete cascade,
    secret_hash bytea       not null,
    expires_at  timestamptz not null,
    rotated_at  timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now()
);

create index refresh_tokens_family_idx on refresh_tokens (family_id);
create index refresh_tokens_user_idx on refresh_tokens (user_id) where revoked_at is null;

create trigger refresh_tokens_updated_at before update on refresh_tokens
    for each row execute function set_updated_at();

-- Products carry a version that every update moves on (stock taken by an order included), so
-- a cached copy can be replaced only by a newer one: a read that fetched the row before an
-- order committed can never put the old stock back into the cache after the order's fresh copy.
alter table products add column version bigint not null default 0;

create function bump_version() returns trigger
language plpgsql as $$
begin
    new.version := old.version + 1;
    return new;
end;
$$;

create trigger products_version before update on products
    for each row execute function bump_version();
