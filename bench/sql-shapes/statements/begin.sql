-- Opens the order's transaction.
BEGIN;
