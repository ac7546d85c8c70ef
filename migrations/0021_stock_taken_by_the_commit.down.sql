drop trigger "Order_takes_its_stock" on orders;
drop function take_stock_of_order();
