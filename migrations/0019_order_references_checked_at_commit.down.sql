alter table webhook_deliveries
    alter constraint webhook_deliveries_endpoint_id_fkey not deferrable;
alter table orders
    alter constraint orders_user_id_fkey not deferrable;
alter table order_items
    alter constraint order_items_product_id_fkey not deferrable;
