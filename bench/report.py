"""The relay bench's table, its targets as ratios of one run, and its chart."""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

RELAY = "it-relay (pyreqwest)"  # the label of the relay with its default sender


def _f(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def table(ceilings: dict[str, float | None], runs: list[dict[str, Any]], header: str) -> str:
    post = ceilings.get("post_per_s[aiohttp]") or float("nan")
    lines = [header, "", "| ceiling | per second |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" if v else f"| {k} | n/a |" for k, v in ceilings.items()]
    lines += [
        "",
        "| system | scenario | deliveries/s | of bare aiohttp POST | CPU µs / delivery: system + PostgreSQL "
        "(sink) | cores busy | transactions / delivery | WAL B / delivery | HOT updates | p50 / p95 / p99 ms "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lat = r.get("latency_ms")
        latency = f"{lat['p50']:.1f} / {lat['p95']:.1f} / {lat['p99']:.1f}" if lat else "—"
        if r.get("rate_target") and (first := r.get("first_second_latency_ms")):
            latency += f" (first event {first.get('first_event', float('nan')):.0f}, first second max {first['max']:.0f})"
        scenario = r["scenario"] + (f" @{r['rate_target']:.0f}/s" if r.get("rate_target") else "")
        own = r["cpu_s_per_1k_deliveries"] * 1000
        pg = r.get("pg_cpu_us_per_delivery")
        cpu = f"{own:.0f} + {_f(pg, '.0f')} = {_f(own + pg if pg is not None else None, '.0f')}"
        hot = r.get("hot_update_share")
        lines.append(
            f"| {r['system']} | {scenario} | {r['deliveries_per_s']:,.0f} | "
            f"{r['deliveries_per_s'] / post:.0%} | {cpu} ({_f(r.get('sink_cpu_us_per_delivery'), '.0f')}) | "
            f"{_f(_cores_busy(r), '.2f')} | "
            f"{_f(r.get('transactions_per_delivery'), '.2f')} | {_f(r.get('wal_bytes_per_delivery'), ',.0f')} | "
            f"{'—' if hot is None else f'{hot:.0%}'} | {latency} | {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def _total_cpu(run: dict[str, Any] | None) -> float | None:
    if not run or run.get("pg_cpu_us_per_delivery") is None:
        return None
    return float(run["cpu_s_per_1k_deliveries"] * 1000 + run["pg_cpu_us_per_delivery"])


def _machine_cpu(run: dict[str, Any] | None) -> float | None:
    """CPU per delivery of everything the delivery needs on this machine: system, PostgreSQL, sink."""
    total = _total_cpu(run)
    if run is None or total is None:
        return None
    return total + float(run.get("sink_cpu_us_per_delivery") or 0.0)


def _cores_busy(run: dict[str, Any]) -> float | None:
    """How many of the machine's cores the run kept busy (rate x CPU per delivery)."""
    per = _machine_cpu(run)
    return None if per is None else run["deliveries_per_s"] * per / 1e6


def _cpu_bound(run: dict[str, Any] | None, cores: int) -> float | None:
    """The rate every core busy would carry at the run's CPU per delivery (system, PostgreSQL, sink)."""
    per = _machine_cpu(run)
    return cores * 1e6 / per if per else None


def _paired(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> list[float]:
    """Round-by-round ratios of two repeated runs: the rounds ran back to back, so each pair saw
    the same hour of a shared machine, which the medians of each system do not."""
    if not a or not b:
        return []
    return [x / y for x, y in zip(a.get(key) or [], b.get(key) or [], strict=False) if x is not None and y]


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _get(run: dict[str, Any] | None, *keys: str) -> float | None:
    value: Any = run
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if value is not None else None


def targets(
    ceilings: dict[str, float | None],
    runs: list[dict[str, Any]],
    depths: list[int],
    relay: str = RELAY,
    cores: int | None = None,
) -> dict[str, Any]:
    """Issue 29's targets as ratios of this run (None when a run is missing), and for the drains
    the bound this machine puts on each at the run's CPU per delivery."""
    cores = cores or os.cpu_count() or 1
    by = {(r["system"], r["scenario"]): r for r in runs}
    shallow, deep = (min(depths), max(depths)) if depths else (0, 0)

    def drain(system: str, depth: int) -> dict[str, Any] | None:
        return by.get((system, f"drain {depth:,}"))

    relay_lat, naive_lat = by.get((relay, "latency")), by.get(("naive", "latency"))
    floor_lat = by.get(("floor", "latency"))
    relay_burst, pgq_burst = by.get((relay, "throughput")), by.get(("pgqueuer", "throughput"))
    post = ceilings.get("post_per_s[aiohttp]")
    out: dict[str, Any] = {
        "shallow_depth": shallow,
        "deep_depth": deep,
        "shallow_drain_vs_pgqueuer": _ratio(
            _get(drain(relay, shallow), "deliveries_per_s"),
            _get(drain("pgqueuer", shallow), "deliveries_per_s"),
        ),
        "shallow_drain_vs_aiohttp_post_ceiling": _ratio(
            _get(drain(relay, shallow), "deliveries_per_s"), post
        ),
        "deep_drain_vs_pgqueuer": _ratio(
            _get(drain(relay, deep), "deliveries_per_s"), _get(drain("pgqueuer", deep), "deliveries_per_s")
        ),
        "cpu_with_postgres_vs_pgqueuer": _ratio(
            _total_cpu(drain(relay, shallow)), _total_cpu(drain("pgqueuer", shallow))
        ),
        # Like for like: PgQueuer's producers fanned each event out into jobs before its drain
        # began; here the relay's routing too is done before the clock starts (--routed).
        "routed_cpu_with_postgres_vs_pgqueuer": _ratio(
            _total_cpu(by.get((relay, f"drain {shallow:,}, routed before"))),
            _total_cpu(drain("pgqueuer", shallow)),
        ),
        "p99_vs_naive": _ratio(_get(relay_lat, "latency_ms", "p99"), _get(naive_lat, "latency_ms", "p99")),
        "p50_vs_naive": _ratio(_get(relay_lat, "latency_ms", "p50"), _get(naive_lat, "latency_ms", "p50")),
        "burst_vs_pgqueuer": _ratio(
            _get(relay_burst, "deliveries_per_s"), _get(pgq_burst, "deliveries_per_s")
        ),
        "burst_lag_p50_ms": _get(relay_burst, "latency_ms", "p50"),
        # Whether each system delivered the burst as fast as its producers committed it.
        "burst_kept_pace": {
            r["system"]: r["kept_pace"] for r in runs if r["scenario"] == "throughput" and "kept_pace" in r
        },
        "burst_commits_per_s": _get(relay_burst, "commits_per_s"),
        "burst_own_cpu_us": _ratio(_get(relay_burst, "cpu_s_per_1k_deliveries"), 1e-3),
        "subscribers": relay_burst["deliveries_per_s"] / relay_burst["events_per_s"] if relay_burst else None,
        # How late the relay's event loop ran what was due, per burst (its own /metrics).
        "burst_loop_lag": {
            r["scenario"]: r["loop_lag"]
            for r in runs
            if r["system"] == relay and r["scenario"].startswith("throughput") and "loop_lag" in r
        },
        "burst_at_nice": next(
            (
                {"scenario": r["scenario"], "p50": r["latency_ms"]["p50"], "kept_pace": r.get("kept_pace")}
                for r in runs
                if r["system"] == relay and r["scenario"].startswith("throughput, relay at nice")
            ),
            None,
        ),
        "drain_peak_rss_mb": max(
            (r["peak_rss_mb"] for r in runs if r["system"] == relay and r["scenario"].startswith("drain")),
            default=None,
        ),
        "rss_depth": max(
            (r["depth"] for r in runs if r["system"] == relay and r["scenario"].startswith("drain")),
            default=None,
        ),
        "cores": cores,
        # Per process count and depth: each depth's drain against one process's at that depth.
        "scaling_vs_one_process": {
            f"{r['system']} drain at {r['depth']:,}": _ratio(
                r["deliveries_per_s"], _get(drain(relay, r["depth"]), "deliveries_per_s")
            )
            for r in runs
            if r["scenario"].startswith("drain") and r["system"].startswith(relay + " x")
        },
    }
    out["rounds"] = {
        "shallow_drain_vs_pgqueuer": _paired(
            drain(relay, shallow), drain("pgqueuer", shallow), "repeats_deliveries_per_s"
        ),
        "deep_drain_vs_pgqueuer": _paired(
            drain(relay, deep), drain("pgqueuer", deep), "repeats_deliveries_per_s"
        ),
        "cpu_with_postgres_vs_pgqueuer": _paired(
            drain(relay, shallow), drain("pgqueuer", shallow), "repeats_cpu_us_per_delivery"
        ),
    }
    shallow_pgq = _get(drain("pgqueuer", shallow), "deliveries_per_s")
    deep_pgq = _get(drain("pgqueuer", deep), "deliveries_per_s")
    shallow_bound = _cpu_bound(drain(relay, shallow), cores)
    out["bounds"] = {
        "shallow_drain_vs_pgqueuer": _ratio(shallow_bound, shallow_pgq),
        "shallow_drain_vs_aiohttp_post_ceiling": _ratio(shallow_bound, post),
        "deep_drain_vs_pgqueuer": _ratio(_cpu_bound(drain(relay, deep), cores), deep_pgq),
        # A relay that validates an event in the client between reading it and recording its
        # deliveries pays at least the floor peer's two round trips: its latency over the naive's.
        "p99_vs_naive": _ratio(_get(floor_lat, "latency_ms", "p99"), _get(naive_lat, "latency_ms", "p99")),
        "p50_vs_naive": _ratio(_get(floor_lat, "latency_ms", "p50"), _get(naive_lat, "latency_ms", "p50")),
    }
    out["latency_vs_floor"] = {
        q: _ratio(_get(relay_lat, "latency_ms", q), _get(floor_lat, "latency_ms", q)) for q in ("p50", "p99")
    }
    # No relay posts faster than a bare POST loop of the fastest client: what 5x PgQueuer asks of it.
    out["deep_goal_vs_pyreqwest_post_ceiling"] = _ratio(
        5.0 * deep_pgq if deep_pgq else None, ceilings.get("post_per_s[pyreqwest]")
    )
    return out


TARGETS = (
    ("shallow_drain_vs_pgqueuer", ">=", 1.3, "drain at {shallow_depth:,} / PgQueuer's"),
    (
        "shallow_drain_vs_aiohttp_post_ceiling",
        ">=",
        0.7,
        "drain at {shallow_depth:,} / bare aiohttp POST ceiling",
    ),
    ("deep_drain_vs_pgqueuer", ">=", 5.0, "drain at {deep_depth:,} / PgQueuer's"),
    (
        "cpu_with_postgres_vs_pgqueuer",
        "<=",
        1.0,
        "CPU per delivery with PostgreSQL's / PgQueuer's (at {shallow_depth:,})",
    ),
    (
        "routed_cpu_with_postgres_vs_pgqueuer",
        "<=",
        1.0,
        "the same, deliveries routed before the relay starts (as PgQueuer's jobs) / PgQueuer's",
    ),
    ("p99_vs_naive", "<=", 2.0, "p99 at the paced rate / naive relay's"),
    ("p50_vs_naive", "<=", 1.5, "p50 at the paced rate / naive relay's"),
    ("burst_vs_pgqueuer", ">=", 1.0, "burst / PgQueuer's"),
    ("burst_lag_p50_ms", "<=", 20.0, "lag during the burst, p50 ms"),
    ("drain_peak_rss_mb", "<=", 150.0, "peak RSS in a drain of {rss_depth:,}, MB"),
)


def _bound(key: str, found: dict[str, Any]) -> str:
    """What the machine allows for a drain target at this run's CPU per delivery."""
    value = (found.get("bounds") or {}).get(key)
    if key == "burst_lag_p50_ms":
        return _burst_bound(found)
    if value is None:
        return "—"
    text = f"{value:.2f}x with {found['cores']} cores busy at this CPU per delivery"
    beyond = found.get("deep_goal_vs_pyreqwest_post_ceiling")
    if key == "deep_drain_vs_pgqueuer" and beyond is not None:
        text += f"; the goal is {beyond:.2f}x the bare pyreqwest POST ceiling"
    if key.startswith(("p50", "p99")):
        text = f"{value:.2f}x: the durable floor (reads the event, records its leases, POSTs with aiohttp)"
    return text


def _burst_bound(found: dict[str, Any]) -> str:
    """Why the lag grew, if it did: the relay delivering less than its producers committed."""
    paces = found.get("burst_kept_pace") or {}
    relay = next((v for k, v in paces.items() if k.startswith("it-relay")), None)
    rate, own, fan = found.get("burst_commits_per_s"), found.get("burst_own_cpu_us"), found.get("subscribers")
    if relay is None or not (rate and own and fan):
        return "—"
    others = ", ".join(f"{k} {v:.0%}" for k, v in paces.items() if not k.startswith("it-relay"))
    need = rate * fan * own / 1e6
    text = (
        f"delivered {relay:.0%} of the burst while it was committed ({others}): the producers, on the "
        f"same {found['cores']} cores, committed {rate:,.0f} events/s, {need:.2f} cores of the relay's "
        f"own at its {own:.0f} µs per delivery; at < 100% the lag grows for as long as the burst lasts"
    )
    lags = found.get("burst_loop_lag") or {}

    def late(scenario: str) -> str:
        lag = lags.get(scenario)
        if not lag:
            return ""
        return (
            f" (its event loop ran what was due {lag['mean_ms']:.1f} ms late on average, "
            f"{lag['over_10ms_share']:.0%} of the time over 10 ms)"
        )

    text += late("throughput")
    if nice := found.get("burst_at_nice"):
        text += (
            f"; {nice['scenario'][len('throughput, ') :]} (first for a core; its PostgreSQL backends "
            f"not): lag p50 {nice['p50']:.0f} ms, delivered {nice['kept_pace'] or 0:.0%} while "
            f"committed{late(nice['scenario'])}"
        )
    return text


def report(found: dict[str, Any]) -> str:
    lines = ["| target | this run | goal | met | bound on this machine |", "|---|---|---|---|---|"]
    for key, op, goal, text in TARGETS:
        value = found.get(key)
        try:
            label = text.format(**found)
        except (KeyError, TypeError, ValueError):
            label = text.replace("{", "").replace("}", "").replace(":,", "")
        if value is None:
            lines.append(f"| {label} | n/a | {op} {goal:g} | — | — |")
            continue
        met = value >= goal if op == ">=" else value <= goal
        shown = (
            f"{value:.0f}"
            if key.endswith(("_mb", "_ms")) and value >= 10
            else (f"{value:.1f}" if key.endswith(("_mb", "_ms")) else f"{value:.2f}x")
        )
        if rounds := (found.get("rounds") or {}).get(key):
            shown += (
                f" (round by round {', '.join(f'{r:.2f}x' for r in rounds)}; "
                f"median {statistics.median(rounds):.2f}x)"
            )
        lines.append(
            f"| {label} | {shown} | {op} {goal:g} | {'yes' if met else 'no'} | {_bound(key, found)} |"
        )
    for q, value in (found.get("latency_vs_floor") or {}).items():
        if value is not None:
            lines.append(f"| {q} at the paced rate / the durable floor's | {value:.2f}x | — | — | — |")
    for system, value in (found.get("scaling_vs_one_process") or {}).items():
        if value is not None:
            lines.append(f"| {system} / one process | {value:.2f}x | — | — | — |")
    return "\n".join(lines)


def chart(ceilings: dict[str, float | None], runs: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [
        (f"{r['system']}\n{r['scenario']}", r["deliveries_per_s"]) for r in runs if r["scenario"] != "latency"
    ]
    bars += [(f"ceiling\nPOST {k[11:-1]}", v) for k, v in ceilings.items() if k.startswith("post") and v]
    fig, ax = plt.subplots(figsize=(11, 4.8))
    colors = [
        "#2b6cb0" if "it-relay" in b[0] else "#718096" if "ceiling" in b[0] else "#dd6b20" for b in bars
    ]
    ax.bar([b[0] for b in bars], [b[1] for b in bars], color=colors)
    ax.set_ylabel("deliveries (POSTs) per second")
    ax.set_title("it-relay, peers and ceilings — same machine, same run")
    for i, (_, v) in enumerate(bars):
        ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    plt.xticks(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
