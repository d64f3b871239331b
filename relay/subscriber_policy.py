"""Which policy a subscriber's deliveries follow, as `status` and `deliveries show` tell it.

Read from the configuration the command loaded (the instances run the same one unless `status`
warns otherwise): the filter, the rate limit, the retry schedule and retryable 4xx statuses — each
with whether it is the subscriber's own or the default — and the static headers' names (never
their values).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from relay import codec
from relay.display import duration
from relay.settings import Settings

Whose = Literal["subscriber", "default"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SubscriberPolicy:
    subscriber: str
    filter: dict[str, Any] | None
    rate_limit_per_s: float | None
    retry_schedule_s: list[float]
    schedule_from: Whose
    retry_on_status: list[int]
    statuses_from: Whose
    headers: list[str]


def policy_of(name: str, settings: Settings) -> SubscriberPolicy | None:
    """`name`'s policy in `settings` (None: not configured here)."""
    conf = settings.subscribers.get(name)
    if conf is None:
        return None
    return SubscriberPolicy(
        subscriber=name,
        filter=conf.filter,
        rate_limit_per_s=conf.rate_limit_per_s,
        retry_schedule_s=conf.retry_schedule(settings.delivery),
        schedule_from="default" if conf.retry_schedule_s is None else "subscriber",
        retry_on_status=sorted(conf.retryable_statuses()),
        statuses_from="default" if conf.retry_on_status is None else "subscriber",
        headers=sorted([*conf.headers, *conf.headers_file, *conf.headers_credential], key=str.lower),
    )


def policies(settings: Settings) -> list[SubscriberPolicy]:
    """Every configured subscriber's policy, by name."""
    return [p for name in sorted(settings.subscribers) if (p := policy_of(name, settings)) is not None]


def policy_text(policy: SubscriberPolicy) -> str:
    """One line: `filter {...}; at most 50/s; retried after 1s, 10s, 1m00s (own); 4xx retried:
    404, 408 (own); headers Authorization`."""
    parts = [
        "filter " + codec.dumps(policy.filter).decode() if policy.filter is not None else "no filter",
        f"at most {policy.rate_limit_per_s:g}/s" if policy.rate_limit_per_s is not None else "no rate limit",
        "retried after "
        + ", ".join(duration(s) for s in policy.retry_schedule_s)
        + (" (own)" if policy.schedule_from == "subscriber" else " (delivery's)"),
        "4xx retried: "
        + (", ".join(map(str, policy.retry_on_status)) or "none")
        + (" (own)" if policy.statuses_from == "subscriber" else " (default)"),
    ]
    if policy.headers:
        parts.append("headers " + ", ".join(policy.headers))
    return "; ".join(parts)
