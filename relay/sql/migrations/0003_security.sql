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

-- publish() itself, with all of the above, is redefined in 0004_redaction.sql.
REVOKE ALL ON FUNCTION it_relay.publish(jsonb) FROM PUBLIC;
