-- "Is an earlier event of this entity still unrouted?" — asked by every ordered claim per head,
-- and by a routing before it leases an ordered lane a head — answered by one index and no other.
--
-- The question was `status = 'pending'`, which events_pending_idx (the router's, by created_at)
-- also answers: with statistics taken while few events were pending, a generic plan read that
-- whole index per head. Unrouted is also `routed_at IS NULL` (every writer sets both: publish
-- inserts neither, a routing or rejection sets both, a republish clears both), which no other
-- index's predicate follows from; the constraint keeps the two the same from now on.
UPDATE it_relay.events SET routed_at = created_at WHERE status <> 'pending' AND routed_at IS NULL;
UPDATE it_relay.events SET routed_at = NULL WHERE status = 'pending' AND routed_at IS NOT NULL;
ALTER TABLE it_relay.events
    ADD CONSTRAINT events_unrouted_check CHECK ((status = 'pending') = (routed_at IS NULL));

-- Not a partial index on the unrouted rows: a routing leaves each one a dead entry there until
-- vacuum, while statistics count it empty, so scanning all of it looked as cheap as one probe and
-- a generic plan did that per head. Over every event with an entity, keyed by whether it is still
-- unrouted, a probe (entity, unrouted, seq below) is the only cheap way in.
DROP INDEX it_relay.events_pending_entity_idx;
CREATE INDEX events_unrouted_entity_idx ON it_relay.events (entity_key, (routed_at IS NULL), seq)
    WHERE entity_key IS NOT NULL;
