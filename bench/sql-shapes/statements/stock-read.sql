-- The ordered product read again for the cache.
select id, sku, name, description, price_cents, currency, stock, active, created_at, updated_at, version
from products where id = any(array[('00000000-0000-0000-0000-' || lpad(:p::int::text, 12, '0'))::uuid]::uuid[]);
