-- The transactional outbox: jobs staged in the same transaction as the change that causes them.
-- After commit the api pushes them to Redis and sets `dispatched_at`; a relay in every worker
-- re-pushes rows left undispatched (the api died, Redis was down), using `id` as the job id so a
-- second push never makes a second job.
create table outbox (
    id            uuid primary key,
    queue         text        not null,
    kind          text        not null,
    -- The whole job spec (payload, priority, retry policy, run_at, request id) as the engine takes it.
    spec          jsonb       not null,
    dispatched_at timestamptz,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);

-- The relay's scan: only undispatched rows, oldest first.
create index outbox_pending_idx on outbox (created_at) where dispatched_at is null;
-- Pruning of dispatched rows.
create index outbox_dispatched_at_idx on outbox (dispatched_at) where dispatched_at is not null;

create trigger outbox_updated_at before update on outbox
    for each row execute function set_updated_at();
