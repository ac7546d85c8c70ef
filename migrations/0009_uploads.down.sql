drop table if exists upload_errors;
drop table if exists uploads;
