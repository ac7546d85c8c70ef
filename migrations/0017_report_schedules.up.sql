-- Report schedules: an admin's recurring report (a cron expression read in a time zone, and the
-- period each run covers). PostgreSQL is the source of truth; each row is mirrored in the queue
-- engine as the schedule `report:<id>`, whose ticks enqueue a `report.scheduled` job that
-- requests the report. Reports go to, and are emailed to, the schedule's owner.
create table report_schedules (
    id         uuid primary key,
    user_id    uuid        not null references users (id) on delete cascade,
    kind       text        not null check (kind in ('sales', 'my_orders')),
    format     text        not null check (format in ('csv')),
    -- Five or six fields (with seconds), checked by the application's cron parser.
    cron       text        not null,
    -- IANA name (`Europe/Berlin`): the cron expression and the period's days are read in it.
    time_zone  text        not null,
    period     text        not null check (period in ('previous_day', 'previous_week', 'previous_month', 'since_last_run')),
    paused     boolean     not null default false,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index report_schedules_user_id_idx on report_schedules (user_id);

create trigger report_schedules_updated_at before update on report_schedules
    for each row execute function set_updated_at();

-- The schedule a report was made by, and the tick (or "run now") that made it. One report per
-- schedule and tick: a retried tick job inserts with `on conflict do nothing` and makes no
-- second report. Null for reports requested over HTTP (nulls never conflict).
alter table reports add column schedule_id uuid references report_schedules (id) on delete set null;
alter table reports add column schedule_tick timestamptz;
create unique index reports_schedule_tick_key on reports (schedule_id, schedule_tick);
-- `GET /reports?schedule_id=`, newest first; also the latest report of a schedule.
create index reports_schedule_id_idx on reports (schedule_id, id desc) where schedule_id is not null;
