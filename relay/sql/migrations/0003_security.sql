-- Hardening against hostile logins (see docs/database.md):
-- * the channel is the database's, in a table only the relay's roles can write; a session can no
--   longer SET it_relay.channel to send a producer's notifications elsewhere;
-- * notifications carry only {event_id, event_type}: a LISTENer learns nothing, the relay reads
--   the payload from the journal;
-- * publishing an event_id again is a no-op only for the same payload; a different one fails;
-- * EXECUTE on publish() is for the roles an operator grants it to, never PUBLIC.

CREATE TABLE it_relay.settings (
    name   text PRIMARY KEY,
    value  text NOT NULL
);
-- A database that chose its channel with ALTER DATABASE ... SET it_relay.channel keeps it.
INSERT INTO it_relay.settings (name, value)
VALUES ('channel', coalesce(nullif(current_setting('it_relay.channel', true), ''), 'it_events'));

-- What publish() was given, so a second publish of the same event_id can be compared with it
-- even after the router rewrote the stored payload (unknown fields dropped, say).
ALTER TABLE it_relay.events ADD COLUMN published_digest bytea;

ALTER TABLE it_relay.rejected_events DROP CONSTRAINT rejected_events_reason_check;
ALTER TABLE it_relay.rejected_events ADD CONSTRAINT rejected_events_reason_check CHECK (reason IN (
    'not_json', 'not_an_object', 'unknown_event_type', 'schema',
    'too_deep', 'too_large', 'invalid_text', 'untrusted_sender'));

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
