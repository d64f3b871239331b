-- An ordered subscriber's deliveries without an entity are claimed as unordered ones: found by
-- their own index, so the claim never walks the entities' queues to find them.
CREATE INDEX deliveries_due_no_entity_idx ON it_relay.deliveries (subscriber, next_attempt_at)
    WHERE status = 'pending' AND entity_key IS NULL;
