-- publish()'s idempotency follows the payload that is journaled now. An operator's republish of
-- a rejected event (`it-relay rejections republish --file`) replaces its payload; the producer's
-- retry must then be compared with the corrected payload, not with the one it replaced. One
-- definition of an event's digest serves publish() and the republish query (relay/sql/queries.sql).

-- The digest of a journal payload as publish() stores it (redacted, event_id set): jsonb's text
-- form is canonical (key order, whitespace), so equal payloads hash equal. STABLE: convert_to is.
CREATE FUNCTION it_relay.payload_digest(clean jsonb) RETURNS bytea
LANGUAGE sql STABLE PARALLEL SAFE STRICT
SET search_path = pg_catalog, pg_temp
AS $$ SELECT sha256(convert_to(clean::text, 'UTF8')) $$;

-- As in 0004_redaction.sql, the digest aside.
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
    digest := it_relay.payload_digest(clean);
    INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, published_digest)
    VALUES (id, coalesce(clean ->> 'event_type', ''), clean, 'publish',
            CASE WHEN clean ->> 'organization_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 THEN (clean ->> 'organization_id')::uuid END,
            digest)
    ON CONFLICT (event_id) DO NOTHING;
    IF NOT FOUND THEN
        SELECT coalesce(e.published_digest, it_relay.payload_digest(e.payload)) INTO kept
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
