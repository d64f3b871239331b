-- One licence-key rule for SQL and Python (relay/redaction.py says it in words; a test feeds the
-- same corpus to both, on a C-locale and a UTF-8 database). Nothing here depends on the
-- database's locale: case is folded for ASCII letters by translate(), never by lower().

-- NFKD, ß/ẞ to ss, invisible characters (soft hyphen, combining marks, zero-width, BOM) dropped,
-- ASCII letters lower-cased.
CREATE FUNCTION it_relay.fold(t text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT translate(
               regexp_replace(
                   replace(replace(normalize(t, NFKD), chr(223), 'ss'), chr(7838), 'ss'),
                   '[' || chr(173) || chr(768) || '-' || chr(879) || chr(8203) || '-' || chr(8207)
                       || chr(8288) || '-' || chr(8292) || chr(65279) || ']',
                   '', 'g'),
               'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')
$$;

-- A mapping key naming a licence key: either spelling, any suffix, any disguise.
CREATE FUNCTION it_relay.is_licence_key(k text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT regexp_replace(it_relay.fold(k), '[^0-9a-z]+', '', 'g') ~ 'licen[cs]ekey' $$;

-- A string that gives a licence key a value: license_key=..., "licence-key": "...", JSON inside
-- a string. Prose that only mentions a licence key does not.
CREATE FUNCTION it_relay.assigns_licence_key(s text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT it_relay.fold(s) ~ (
        'l[^0-9a-z]{0,3}i[^0-9a-z]{0,3}c[^0-9a-z]{0,3}e[^0-9a-z]{0,3}n[^0-9a-z]{0,3}[cs][^0-9a-z]{0,3}e'
        || '[^0-9a-z]{0,8}k[^0-9a-z]{0,3}e[^0-9a-z]{0,3}y[^"'':=' || chr(10) || ']{0,32}["''\\[:space:]]{0,4}[:=]')
$$;

-- Text that provably holds no licence key by the rules above: ASCII only, no backslash, and not
-- the letters l, i, c, e, n in order (anything but letters and digits between them).
CREATE FUNCTION it_relay.may_mention_licence(t text) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t ~ ('[^' || chr(1) || '-' || chr(127) || ']')
        OR strpos(t, '\') > 0
        OR t ~* 'l[^0-9a-z]*i[^0-9a-z]*c[^0-9a-z]*e[^0-9a-z]*n'
$$;

-- Every licence key's value, and every string assigning one, becomes "[REDACTED]"; callers
-- check the depth first (publish() refuses what is too deep before this recursive walk).
CREATE OR REPLACE FUNCTION it_relay.redact(value jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    IF value IS NULL OR NOT it_relay.may_mention_licence(value::text) THEN
        RETURN value;
    END IF;
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        SELECT coalesce(jsonb_object_agg(
                   key,
                   CASE WHEN NOT it_relay.is_licence_key(key) THEN it_relay.redact(item)
                        -- A string becomes [REDACTED], null stays null (absent), anything else a
                        -- marker of its type, so a non-string key still fails validation.
                        WHEN jsonb_typeof(item) = 'string' THEN to_jsonb('[REDACTED]'::text)
                        WHEN jsonb_typeof(item) = 'null' THEN item
                        ELSE jsonb_build_object('redacted', jsonb_typeof(item)) END), '{}'::jsonb)
          INTO result
          FROM jsonb_each(value) AS e(key, item);
        RETURN result;
    WHEN 'array' THEN
        SELECT coalesce(jsonb_agg(it_relay.redact(item) ORDER BY ord), '[]'::jsonb)
          INTO result
          FROM jsonb_array_elements(value) WITH ORDINALITY AS a(item, ord);
        RETURN result;
    WHEN 'string' THEN
        IF it_relay.assigns_licence_key(value #>> '{}') THEN
            RETURN to_jsonb('[REDACTED]'::text);
        END IF;
        RETURN value;
    ELSE
        RETURN value;
    END CASE;
END;
$$;

-- Containers nested deeper than the relay's limit (relay.codec.MAX_DEPTH = 64; the top-level
-- object is level 1), found without recursion in SQL.
CREATE FUNCTION it_relay.too_deep(value jsonb) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_path_exists(value, 'strict $.**{64 to last} ? (@.type() == "object" || @.type() == "array")')
$$;

CREATE OR REPLACE FUNCTION it_relay.publish(payload jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    clean    jsonb;
    digest   bytea;
    kept     bytea;
    id       uuid;
    channel  text;
BEGIN
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'it_relay.publish: the payload must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF it_relay.too_deep(payload) THEN
        RAISE EXCEPTION 'it_relay.publish: the payload is nested deeper than 64 levels'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    clean := it_relay.redact(payload);
    IF clean ? 'event_id' THEN
        BEGIN
            id := (clean ->> 'event_id')::uuid;
        EXCEPTION WHEN invalid_text_representation THEN
            RAISE EXCEPTION 'it_relay.publish: event_id must be a UUID'
                USING ERRCODE = 'invalid_parameter_value';
        END;
    END IF;
    IF id IS NULL THEN
        id := gen_random_uuid();
    END IF;
    clean := jsonb_set(clean, '{event_id}', to_jsonb(id::text));
    -- jsonb's text form is canonical (key order, whitespace), so equal payloads hash equal.
    digest := sha256(convert_to(clean::text, 'UTF8'));
    INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, published_digest)
    VALUES (id, coalesce(clean ->> 'event_type', ''), clean, 'publish',
            CASE WHEN clean ->> 'organization_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 THEN (clean ->> 'organization_id')::uuid END,
            digest)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT coalesce(e.published_digest, sha256(convert_to(e.payload::text, 'UTF8'))) INTO kept
          FROM it_relay.events e WHERE e.event_id = id;
        IF kept IS DISTINCT FROM digest THEN
            RAISE EXCEPTION 'it_relay.publish: event_id % was already published with a different payload', id
                USING ERRCODE = 'unique_violation',
                      HINT = 'publish a corrected event under a new event_id';
        END IF;
    END IF;
    SELECT s.value INTO channel FROM it_relay.settings s WHERE s.name = 'channel';
    PERFORM pg_notify(coalesce(channel, 'it_events'),
                      jsonb_build_object('event_id', id, 'event_type', clean -> 'event_type')::text);
    RETURN id;
END;
$$;
REVOKE ALL ON FUNCTION it_relay.publish(jsonb) FROM PUBLIC;
