"""What a SIGHUP can change in a running instance, and what needs a restart."""

from __future__ import annotations

from typing import Any

from relay.settings import Settings

# Reloaded in place: the subscribers (added, removed, URL, secrets, policies, enabled). Everything
# else is read once at start-up (pools, listeners, the scheduler's clock, the ops server).
RELOADED = frozenset({"subscribers"})


def needs_restart(old: Settings, new: Settings) -> list[str]:
    """The dotted keys that differ between `old` and `new` outside what a reload applies."""
    before, after = old.model_dump(mode="json"), new.model_dump(mode="json")
    changed: list[str] = []
    for section in sorted(set(before) | set(after)):
        if section not in RELOADED:
            _diff(section, before.get(section), after.get(section), changed)
    return changed


def _diff(path: str, a: Any, b: Any, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            _diff(f"{path}.{key}", a.get(key), b.get(key), out)
    elif a != b:
        out.append(path)


def applied(old: Settings, new: Settings) -> Settings:
    """The configuration in force after a reload: the new subscribers, the old everything else."""
    return old.model_copy(update={"subscribers": new.subscribers})
