-- publish()'s helpers, same rules, in PL/pgSQL.
--
-- A SQL function with a SET clause is never inlined and plans its body on every call; publish()
-- called nine of them per event (more per key of a payload that mentions a licence), so a
-- producer's publish cost ~550 µs of server time where its INSERT and NOTIFY cost ~60. PL/pgSQL
-- keeps each statement's plan for the session and evaluates simple expressions directly: the same
-- publish costs about half (docs/benchmarks.md). Each body is the rule its earlier migration
-- states, unchanged; CREATE OR REPLACE keeps owners and EXECUTE privileges as they were.

CREATE OR REPLACE FUNCTION it_relay.fold(t text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN translate(
               regexp_replace(
                   replace(replace(normalize(t, NFKD), chr(223), 'ss'), chr(7838), 'ss'),
                   '[' || chr(173) || chr(768) || '-' || chr(879) || chr(8203) || '-' || chr(8207)
                       || chr(8288) || '-' || chr(8292) || chr(65279) || ']',
                   '', 'g'),
               'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz');
END
$$;

CREATE OR REPLACE FUNCTION it_relay.is_licence_key(k text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN regexp_replace(it_relay.fold(k), '[^0-9a-z]+', '', 'g') ~ 'licen[cs]ekey';
END
$$;

-- As in 0008_redaction_separators.sql.
CREATE OR REPLACE FUNCTION it_relay.assigns_licence_key(s text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN it_relay.fold(s) ~ (
        'l[^0-9a-z]*i[^0-9a-z]*c[^0-9a-z]*e[^0-9a-z]*n[^0-9a-z]*[cs][^0-9a-z]*e'
        || '[^0-9a-z]*k[^0-9a-z]*e[^0-9a-z]*y'
        || '(?:[^0-9a-z"'':=' || chr(10) || ']*[0-9a-z]){0,32}[^0-9a-z"'':=' || chr(10) || ']*'
        || '["''\\[:space:]]{0,4}[:=]');
END
$$;

CREATE OR REPLACE FUNCTION it_relay.may_mention_licence(t text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN t ~ ('[^' || chr(1) || '-' || chr(127) || ']')
        OR strpos(t, '\') > 0
        OR t ~* 'l[^0-9a-z]*i[^0-9a-z]*c[^0-9a-z]*e[^0-9a-z]*n';
END
$$;

CREATE OR REPLACE FUNCTION it_relay.too_deep(value jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_path_exists(value, 'strict $.**{64 to last} ? (@.type() == "object" || @.type() == "array")');
END
$$;

CREATE OR REPLACE FUNCTION it_relay.payload_digest(clean jsonb) RETURNS bytea
LANGUAGE plpgsql STABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN sha256(convert_to(clean::text, 'UTF8'));
END
$$;

-- As in 0010_entity_order.sql: "<field>:<uuid in canonical form>", NULL without one.
CREATE OR REPLACE FUNCTION it_relay.entity_key(payload jsonb) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    f text;
    v text;
BEGIN
    SELECT e.field INTO f FROM it_relay.entity_fields e WHERE e.event_type = payload ->> 'event_type';
    v := payload ->> f;
    IF v IS NULL THEN
        RETURN NULL;
    END IF;
    RETURN f || ':' || CASE WHEN v ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                            THEN v::uuid::text ELSE v END;
END
$$;

-- As in 0011_traceparent.sql.
CREATE OR REPLACE FUNCTION it_relay.traceparent(value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF length(value) = 55
       AND value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       AND substr(value, 4, 32) <> '00000000000000000000000000000000'
       AND substr(value, 37, 16) <> '0000000000000000' THEN
        RETURN value;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION it_relay.entity_lock_class() RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN 1769238117;
END
$$;
