drop table if exists reports;
