-- it-relay's own schema: the event journal, deliveries, rejections, and the producer API.
-- Applied by `it-relay db upgrade` inside one transaction, under an advisory lock.

CREATE SCHEMA IF NOT EXISTS it_relay;

CREATE TABLE IF NOT EXISTS it_relay.schema_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

-- The journal is the truth; NOTIFY is only a wake-up. payload is always redacted.
CREATE TABLE it_relay.events (
    event_id        uuid PRIMARY KEY,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    source          text NOT NULL CHECK (source IN ('publish', 'notify')),
    organization_id uuid,
    -- "<entity id field>:<value>", set when routed; first attempts go out in journal order.
    entity_key      text,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'routed', 'rejected')),
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    routed_at       timestamptz
);
CREATE INDEX events_pending_idx ON it_relay.events (created_at) WHERE status = 'pending';
CREATE INDEX events_routed_at_idx ON it_relay.events (routed_at) WHERE status <> 'pending';

-- One row per (event, subscriber). attempts counts HTTP attempts (the x-it-delivery-attempt
-- header); failed_rounds counts durable retries and indexes delivery.retry_schedule_s.
CREATE TABLE it_relay.deliveries (
    event_id          uuid NOT NULL REFERENCES it_relay.events (event_id) ON DELETE CASCADE,
    subscriber        text NOT NULL,
    event_type        text NOT NULL,
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          integer NOT NULL DEFAULT 0,
    failed_rounds     integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    lease_owner       text,
    lease_expires_at  timestamptz,
    last_status       integer,
    last_error        text,
    created_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    delivered_at      timestamptz,
    PRIMARY KEY (event_id, subscriber)
);
CREATE INDEX deliveries_due_idx ON it_relay.deliveries (subscriber, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_finished_idx ON it_relay.deliveries (status, updated_at) WHERE status <> 'pending';

-- Events that failed validation, and notifications that were not even JSON objects.
CREATE TABLE it_relay.rejected_events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id     uuid,
    event_type   text,
    reason       text NOT NULL CHECK (reason IN ('not_json', 'not_an_object', 'unknown_event_type', 'schema')),
    errors       text[] NOT NULL,
    payload      jsonb,
    -- Scrubbed text, for a notification that was not valid JSON.
    raw_text     text,
    source       text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX rejected_events_received_idx ON it_relay.rejected_events (received_at);
CREATE UNIQUE INDEX rejected_events_event_idx ON it_relay.rejected_events (event_id) WHERE event_id IS NOT NULL;

-- license_key (any casing or separator, any depth) becomes "[REDACTED]".
CREATE OR REPLACE FUNCTION it_relay.redact(value jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    -- Fast path: most payloads never mention a licence.
    IF value IS NULL OR position('licen' IN lower(value::text)) = 0 THEN
        RETURN value;
    END IF;
    CASE jsonb_typeof(value)
    WHEN 'object' THEN
        SELECT coalesce(jsonb_object_agg(
                   key,
                   CASE WHEN regexp_replace(lower(key), '[^0-9a-z]', '', 'g') = 'licensekey'
                        THEN to_jsonb('[REDACTED]'::text)
                        ELSE it_relay.redact(item) END), '{}'::jsonb)
          INTO result
          FROM jsonb_each(value) AS e(key, item);
        RETURN result;
    WHEN 'array' THEN
        SELECT coalesce(jsonb_agg(it_relay.redact(item) ORDER BY ord), '[]'::jsonb)
          INTO result
          FROM jsonb_array_elements(value) WITH ORDINALITY AS a(item, ord);
        RETURN result;
    ELSE
        RETURN value;
    END CASE;
END;
$$;

-- The producer API: journal the event in the caller's transaction, then NOTIFY (delivered on
-- commit). Redacts before anything is written or sent. SECURITY DEFINER: a producer needs only
-- EXECUTE on this function, never INSERT on the journal. The channel is it_events unless the
-- database sets it_relay.channel (ALTER DATABASE ... SET it_relay.channel = '...').
CREATE OR REPLACE FUNCTION it_relay.publish(payload jsonb) RETURNS uuid
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    clean    jsonb;
    id       uuid;
    note     text;
    channel  text := coalesce(nullif(current_setting('it_relay.channel', true), ''), 'it_events');
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
    INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id)
    VALUES (id, coalesce(clean ->> 'event_type', ''), clean, 'publish',
            CASE WHEN clean ->> 'organization_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 THEN (clean ->> 'organization_id')::uuid END)
    -- Publishing the same event_id twice is idempotent.
    ON CONFLICT (event_id) DO NOTHING;
    note := clean::text;
    IF octet_length(note) >= 8000 THEN
        note := jsonb_build_object('event_id', id, 'event_type', clean -> 'event_type')::text;
    END IF;
    PERFORM pg_notify(channel, note);
    RETURN id;
END;
$$;
