-- The IT reference schema is migrated by versions too (relay/sql/reference/NNNN_name/), applied
-- once each, in order, under the migration lock; version 1 is the baseline. A database that had
-- the reference schema before versioning has no row here: the baseline (idempotent) is applied
-- over it and recorded.
CREATE TABLE it_relay.reference_version (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
