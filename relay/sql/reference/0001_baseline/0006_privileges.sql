-- EXECUTE on a SECURITY DEFINER function runs its body as the owner, so PostgreSQL's default grant
-- to PUBLIC would let any login look up another organisation's names or licences. Every such
-- function here (trigger functions and their helpers included; triggers fire without EXECUTE)
-- is for the roles an operator grants it to, by name (docs/database.md), and nobody else.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE p.prosecdef AND n.nspname IN ('public', 'it_relay')
           AND p.proowner = current_user::regrole
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END;
$$;
