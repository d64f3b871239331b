-- Rejections an operator set aside as junk (`it-relay rejections dismiss ID`): kept until their
-- retention like any other, left out of `rejections list` unless --all.
ALTER TABLE it_relay.rejected_events
    ADD COLUMN dismissed_at timestamptz,
    ADD COLUMN dismissed_by text;
