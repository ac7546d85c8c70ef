alter table idempotency_keys
    alter constraint idempotency_keys_user_id_fkey not deferrable;
