drop function if exists set_updated_at();
