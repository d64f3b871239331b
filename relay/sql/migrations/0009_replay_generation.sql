-- A delivery's replay generation: how many times an operator re-queued it. A broker destination
-- names each message by (event, subscriber, generation) — NATS's Nats-Msg-Id — so the broker drops
-- a retry's duplicate but stores a replay again. A constant default: no table rewrite.
ALTER TABLE it_relay.deliveries ADD COLUMN replays integer NOT NULL DEFAULT 0;
