alter table webhook_endpoints
    drop constraint webhook_endpoints_previous_secret_expiry_check,
    drop column previous_secret_expires_at,
    drop column previous_secret;
