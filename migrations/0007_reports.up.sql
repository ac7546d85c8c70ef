-- Reports requested by users and built by workers. The file lives in object storage under
-- `file_key`; the row says where the build stands.
create table reports (
    id           uuid primary key,
    user_id      uuid        not null references users (id) on delete cascade,
    kind         text        not null check (kind in ('sales')),
    format       text        not null check (format in ('csv')),
    from_date    date        not null,
    to_date      date        not null,
    status       text        not null check (status in ('queued', 'running', 'ready', 'failed')),
    run_at       timestamptz,
    row_count    bigint,
    byte_size    bigint,
    file_key     text,
    error        text,
    completed_at timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    check (from_date <= to_date)
);

create index reports_user_id_idx on reports (user_id, id desc);

create trigger reports_updated_at before update on reports
    for each row execute function set_updated_at();
