-- Per-entity ordered delivery (docs/reliability.md, "Ordering").
--
-- Journal order: every event gets `seq` when it is journaled; publish() takes a transaction-scoped
-- lock on the event's entity first, so two writers of one entity take turns until commit and
-- `seq` follows their commit order. An ordered subscriber's deliveries of one entity go out one at
-- a time, in `seq` order (the claim in relay/sql/queries.sql); `held` keeps an entity's later
-- deliveries when its head went dead under on_exhausted = "hold".

-- Which payload field names the entity of each event type: the first *_id field of its contract
-- (relay/ingest.py entity_key(); tests/test_ordering.py holds the two together).
CREATE TABLE it_relay.entity_fields (
    event_type text PRIMARY KEY,
    field      text NOT NULL
);
INSERT INTO it_relay.entity_fields (event_type, field) VALUES
    ('it_account_deactivated', 'account_id'),
    ('it_account_provisioned', 'account_id'),
    ('it_asset_assigned', 'asset_id'),
    ('it_asset_disposed', 'asset_id'),
    ('it_asset_maintenance_required', 'asset_id'),
    ('it_asset_purchased', 'asset_id'),
    ('it_cab_review_required', 'change_id'),
    ('it_change_approved', 'change_id'),
    ('it_change_implemented', 'change_id'),
    ('it_change_rejected', 'change_id'),
    ('it_change_rolled_back', 'change_id'),
    ('it_change_scheduled', 'change_id'),
    ('it_change_submitted', 'change_id'),
    ('it_contract_expiring', 'contract_id'),
    ('it_critical_vulnerability_detected', 'vulnerability_id'),
    ('it_license_compliance_alert', 'license_id'),
    ('it_license_created', 'license_id'),
    ('it_license_expiring', 'license_id'),
    ('it_license_renewed', 'license_id'),
    ('it_patch_deployment_overdue', 'patch_id'),
    ('it_provisioning_completed', 'instance_id'),
    ('it_provisioning_started', 'instance_id'),
    ('it_purchase_request_approved', 'request_id'),
    ('it_purchase_request_received', 'request_id'),
    ('it_purchase_request_submitted', 'request_id'),
    ('it_report_failed', 'report_run_id'),
    ('it_report_generated', 'report_run_id'),
    ('it_security_incident_created', 'incident_id'),
    ('it_sla_breached', 'ticket_id'),
    ('it_ticket_created', 'ticket_id'),
    ('it_ticket_status_changed', 'ticket_id');

-- The entity an event is about, spelled as the router spells it: "<field>:<uuid in canonical form>".
CREATE FUNCTION it_relay.entity_key(payload jsonb) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT f.field || ':' || CASE WHEN v ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                                  THEN v::uuid::text ELSE v END
      FROM it_relay.entity_fields f
     CROSS JOIN LATERAL (SELECT payload ->> f.field AS v) x
     WHERE f.event_type = payload ->> 'event_type' AND x.v IS NOT NULL
$$;
REVOKE ALL ON FUNCTION it_relay.entity_key(jsonb) FROM PUBLIC;

-- The advisory-lock class of entity locks ("itre"); the second key is the entity's hash. The
-- two-key form has its own key space: it never meets the relay's one-key locks.
CREATE FUNCTION it_relay.entity_lock_class() RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT 1769238117 $$;
REVOKE ALL ON FUNCTION it_relay.entity_lock_class() FROM PUBLIC;

-- Journal order. Existing rows are numbered in their journal order.
ALTER TABLE it_relay.events ADD COLUMN seq bigint;
UPDATE it_relay.events e SET seq = n.seq
  FROM (SELECT event_id, row_number() OVER (ORDER BY created_at, event_id) AS seq FROM it_relay.events) n
 WHERE e.event_id = n.event_id;
CREATE SEQUENCE it_relay.events_seq OWNED BY it_relay.events.seq;
SELECT setval('it_relay.events_seq', coalesce((SELECT max(seq) FROM it_relay.events), 0) + 1, false);
ALTER TABLE it_relay.events ALTER COLUMN seq SET DEFAULT nextval('it_relay.events_seq'),
                            ALTER COLUMN seq SET NOT NULL;
UPDATE it_relay.events SET entity_key = it_relay.entity_key(payload) WHERE entity_key IS NULL;
-- An ordered claim asks: is an earlier event of this entity still unrouted?
CREATE INDEX events_pending_entity_idx ON it_relay.events (entity_key, seq)
    WHERE status = 'pending' AND entity_key IS NOT NULL;

-- Each delivery carries its event's entity and place in journal order.
ALTER TABLE it_relay.deliveries ADD COLUMN entity_key text, ADD COLUMN seq bigint,
    -- A dead head under on_exhausted = "hold": the entity's later deliveries are held until
    -- `it-relay release` or a replay of the head.
    ADD COLUMN holds boolean NOT NULL DEFAULT false;
UPDATE it_relay.deliveries d SET entity_key = e.entity_key, seq = e.seq
  FROM it_relay.events e WHERE e.event_id = d.event_id;
ALTER TABLE it_relay.deliveries DROP CONSTRAINT deliveries_status_check,
    ADD CONSTRAINT deliveries_status_check CHECK (status IN ('pending', 'delivered', 'dead', 'held'));
-- An ordered claim asks: is an earlier delivery of this entity to this subscriber unfinished?
CREATE INDEX deliveries_entity_idx ON it_relay.deliveries (subscriber, entity_key, seq)
    WHERE status IN ('pending', 'held') AND entity_key IS NOT NULL;
CREATE INDEX deliveries_holding_idx ON it_relay.deliveries (subscriber, entity_key) WHERE holds;

-- As in 0007_republished_digest.sql, the entity lock and key aside.
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
    IF entity IS NOT NULL THEN
        -- Writers of one entity take turns until commit, so its journal order (seq, assigned by
        -- the INSERT below) is their commit order. Other entities never wait.
        PERFORM pg_advisory_xact_lock(it_relay.entity_lock_class(), hashtext(entity));
    END IF;
    INSERT INTO it_relay.events (event_id, event_type, payload, source, organization_id, published_digest,
                                 entity_key)
    VALUES (id, coalesce(clean ->> 'event_type', ''), clean, 'publish',
            CASE WHEN clean ->> 'organization_id' ~* '^[0-9a-f]{8}-?([0-9a-f]{4}-?){3}[0-9a-f]{12}$'
                 THEN (clean ->> 'organization_id')::uuid END,
            digest, entity)
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
