drop function if exists orderly_uuidv7();
