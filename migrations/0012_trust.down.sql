drop trigger products_version on products;
drop function bump_version();
alter table products drop column version;
drop table refresh_tokens;
alter table users drop column token_generation;
drop index reports_open_by_user_idx;
delete from reports where kind <> 'sales';
alter table reports drop constraint reports_kind_check;
alter table reports add constraint reports_kind_check check (kind in ('sales'));
