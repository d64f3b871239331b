-- What operators see: every running instance, and every operator action on record.

-- Each relay instance records itself every poll interval (housekeeping): `it-relay status` lists the
-- live ones and warns when they run another configuration than the one the command read.
CREATE TABLE it_relay.instances (
    owner        text PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    version      text NOT NULL,
    -- A digest of the configuration that changes what is delivered (subscribers, policies), no secrets.
    config       text NOT NULL,
    subscribers  text[] NOT NULL,
    scheduler_leader boolean NOT NULL DEFAULT false,
    started_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Every operator action: pause, resume, replay, backfill, republish, release, dismiss. Written in
-- the action's own transaction, synchronously (it exists nowhere else).
CREATE TABLE it_relay.audit (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    action      text NOT NULL CHECK (action IN ('pause', 'resume', 'replay', 'backfill', 'republish',
                                                'release', 'dismiss')),
    db_role     text NOT NULL DEFAULT session_user,
    os_user     text,
    host        text,
    arguments   jsonb NOT NULL DEFAULT '{}',
    count       integer,
    -- The events it touched (a bounded sample for bulk actions), for `deliveries show`.
    event_ids   uuid[] NOT NULL DEFAULT '{}',
    subscriber  text,
    reason      text
);
CREATE INDEX audit_at_idx ON it_relay.audit (at);
CREATE INDEX audit_events_idx ON it_relay.audit USING gin (event_ids);
