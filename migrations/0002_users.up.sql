-- Accounts. Emails are stored lowercased; uniqueness is case-insensitive anyway.
create table users (
    id            uuid primary key,
    email         text        not null,
    name          text        not null,
    password_hash text        not null,
    role          text        not null default 'customer' check (role in ('customer', 'admin')),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

create unique index users_email_key on users (lower(email));

create trigger users_updated_at before update on users
    for each row execute function set_updated_at();
