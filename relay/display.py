"""How the relay shows durations and times to people (the CLI, systemd's STATUS). Pure."""

from __future__ import annotations

from datetime import UTC, datetime


def duration(seconds: float) -> str:
    """A human's reading of an age or a wait: 850ms, 42s, 3m12s, 2h05m, 3d04h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def when(moment: datetime | None) -> str:
    """A time with its zone (UTC), to the second; "-" for none."""
    if moment is None:
        return "-"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
