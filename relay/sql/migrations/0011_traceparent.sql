-- Tracing (docs/operations.md, "Tracing"): the producer's trace context, kept by the journal.
--
-- A producer passes its W3C trace context with `SET LOCAL it_relay.traceparent = '00-...'` in the
-- transaction that publishes (triggers included); publish() keeps it in events.traceparent when it
-- is a valid traceparent, and ignores anything else: tracing never fails a producer's write. The
-- relay continues that trace when it routes and delivers the event. A legacy notification's
-- `traceparent` field is checked the same way in Python (relay/ingest.py traceparent()).

ALTER TABLE it_relay.events ADD COLUMN traceparent text;

-- `value` when it is a traceparent of version 00 exactly as W3C Trace Context writes it (lowercase
-- hex, a trace id and a span id not all zero, no further fields); else NULL. The length is checked
-- before the pattern, so a huge setting costs nothing.
CREATE FUNCTION it_relay.traceparent(value text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT value
     WHERE length(value) = 55
       AND value ~ '^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$'
       AND substr(value, 4, 32) <> '00000000000000000000000000000000'
       AND substr(value, 37, 16) <> '0000000000000000'
$$;
REVOKE ALL ON FUNCTION it_relay.traceparent(text) FROM PUBLIC;

-- As in 0010_entity_order.sql, the traceparent aside.
CREATE OR REPLACE FUNCTION it_relay.publish(payload jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    clean    jsonb;
    digest   bytea;
    kept     bytea;
    entity   text;
    id       uuid;
    channel  text;
    trace    text;
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
    entity := it_relay.entity_key(clean);
    trace := it_relay.traceparent(current_setting('it_relay.traceparent', true));
    IF entity IS NOT NULL THEN
        -- Writers of one entity take turns until commit, so its journal order (seq, assigned by
        -- the INSERT below) is their commit order. Other entities never wait.
        PERFORM pg_advisory_xact_lock(it_relay.entity_lock_class(), hashtext(entity));
    END IF;
    INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, published_digest,
                                 entity_key, traceparent)
    VALUES (id, coalesce(clean ->> 'event_type', ''), clean, 'publish',
            CASE WHEN clean ->> 'organization_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 THEN (clean ->> 'organization_id')::uuid END,
            digest, entity, trace)
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
