"""The tests' webhook subscriber: relay.testing.sink's, with waits scaled for slow machines."""

from __future__ import annotations

import os

from relay.testing import sink as _sink

# Every wait in the tests is for a condition, so a generous bound costs nothing when things go well;
# CI machines have run four times slower than a developer's. IT_RELAY_TEST_PATIENCE scales them all.
PATIENCE = float(os.environ.get("IT_RELAY_TEST_PATIENCE", "3"))

Reply = _sink.Reply
Received = _sink.Received


class Sink(_sink.Sink):
    def __init__(self, secret: str | None = None) -> None:
        super().__init__(secret, patience=PATIENCE)
