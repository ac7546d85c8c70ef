-- Every shape's random choices: product, customer, idempotency key (also the order id) and
-- the second job's id.
\set p random(1, 100)
\set u random(1, 64)
\set k random(1, 140737488355327)
\set d random(1, 140737488355327)
