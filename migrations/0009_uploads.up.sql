-- Files admins upload (product imports, product images). The bytes live in object storage
-- under `storage_key`; the row says what the file is for and where its processing stands, so the
-- worker job carries only the id and `GET /api/v1/uploads/{id}` reads progress from here.
create table uploads (
    id           uuid primary key,
    user_id      uuid        not null references users (id) on delete cascade,
    purpose      text        not null check (purpose in ('product_import', 'product_image')),
    -- The product an image belongs to; imports name their products by sku inside the file.
    product_id   uuid        references products (id),
    filename     text        not null,
    -- What the client declared; never trusted (images are identified from their bytes).
    content_type text,
    storage_key  text        not null,
    byte_size    bigint      not null check (byte_size >= 0),
    status       text        not null check (status in ('queued', 'processing', 'completed', 'failed')),
    -- The processing attempt that owns the counters below: a batch committed by an attempt that
    -- has been superseded (a worker that lost its lease) is rolled back instead of counted twice.
    run_id       uuid,
    rows_total   bigint      check (rows_total >= 0),
    rows_ok      bigint      not null default 0 check (rows_ok >= 0),
    rows_failed  bigint      not null default 0 check (rows_failed >= 0),
    -- Percent of the file processed.
    progress     smallint    not null default 0 check (progress between 0 and 100),
    error        text,
    -- What processing produced (thumbnail key and detected format, import summary).
    result       jsonb,
    completed_at timestamptz,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    check ((purpose = 'product_image') = (product_id is not null))
);

create index uploads_user_id_idx on uploads (user_id, id desc);
create index uploads_product_id_idx on uploads (product_id) where product_id is not null;

create trigger uploads_updated_at before update on uploads
    for each row execute function set_updated_at();

-- Rows of an import that were not applied, with the reason. Capped per upload by the service
-- (the counters on `uploads` keep the full totals), so a file of garbage cannot flood the table.
create table upload_errors (
    id         bigint generated always as identity primary key,
    upload_id  uuid        not null references uploads (id) on delete cascade,
    -- Line in the file (the header is line 1).
    line       bigint      not null check (line >= 1),
    -- The column at fault; null when the row as a whole is wrong (wrong number of fields).
    field      text,
    message    text        not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index upload_errors_upload_id_idx on upload_errors (upload_id, id);

create trigger upload_errors_updated_at before update on upload_errors
    for each row execute function set_updated_at();
