-- Shared helpers for every table: `updated_at` maintained by the database, not by each query.
create or replace function set_updated_at() returns trigger as $$
begin
    new.updated_at := now();
    return new;
end;
$$ language plpgsql;
