"""Logging's level switch: the hot path's DEBUG guard follows every configure()."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from relay import logs


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    logs.configure("WARNING", "json")


@pytest.mark.parametrize(
    ("level", "kept"), [("DEBUG", True), ("debug", True), ("INFO", False), ("WARNING", False)]
)
def test_the_debug_guard_agrees_with_what_the_logger_writes(level: str, kept: bool) -> None:
    out = io.StringIO()
    logs.configure(level, "json", stream=out)
    logs.get_logger("relay.dispatch").debug("delivered", subscriber="HR")
    assert logs.debugging() is kept
    assert ('"delivered"' in out.getvalue()) is kept


def test_a_later_configure_moves_the_guard_both_ways() -> None:
    logs.configure("DEBUG", "json", stream=io.StringIO())
    assert logs.debugging()
    logs.configure("INFO", "json", stream=io.StringIO())
    assert not logs.debugging()
    logs.configure("DEBUG", "json", stream=io.StringIO())
    assert logs.debugging()
