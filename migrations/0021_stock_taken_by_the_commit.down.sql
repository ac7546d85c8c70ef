drop trigger "Order_takes_its_stock" on orders;
drop function take_stock_of_order();
alter table orders drop column takes_stock_at_commit;
