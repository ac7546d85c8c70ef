-- Commits; the stock trigger (migration 0021) runs here.
COMMIT;
