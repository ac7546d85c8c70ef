-- Secret rotation: after an admin rotates an endpoint's secret, the previous one keeps signing
-- deliveries (beside the new one, in the same `webhook-signature` header) until it expires, so
-- a receiver can switch secrets without rejecting a delivery in between.
alter table webhook_endpoints
    add column previous_secret            text check (previous_secret like 'whsec_%'),
    add column previous_secret_expires_at timestamptz,
    add constraint webhook_endpoints_previous_secret_expiry_check
        check ((previous_secret is null) = (previous_secret_expires_at is null));
