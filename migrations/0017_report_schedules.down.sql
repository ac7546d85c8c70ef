drop index if exists reports_schedule_id_idx;
drop index if exists reports_schedule_tick_key;
alter table reports drop column schedule_tick;
alter table reports drop column schedule_id;
drop table report_schedules;
