"""One licence-key rule: Python and SQL agree on every key and string of a shared corpus, on a
UTF-8 and on a C-locale database, and publish() stores none of the corpus's keys."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import codec
from relay.contracts.examples import example
from relay.redaction import REDACTED, assigns_key, is_sensitive_key, redact, scrub_text
from tests.support.postgres import fresh_name, upgraded, with_database

SENSITIVE_KEYS = [
    "license_key",
    "licence_key",  # the British spelling, as this project's own docs write it
    "License-Key",
    "LICENSEKEY",
    "licenseKey",
    "license key",
    "license_keys",
    "licence_key_hash",
    "old_license_key",
    "l-i-c-e-n-s-e-k-e-y",
    "lic\u200bense_key",  # zero-width space
    "lic\u00adense_key",  # soft hyphen
    "li\u0301cense_key",  # combining accent
    "L\u0130CENSE_KEY",  # Turkish dotted capital I
    "\uff4c\uff49\uff43\uff45\uff4e\uff53\uff45\uff3f\uff4b\uff45\uff59",  # fullwidth
    "licen\u017fe_key",  # long s
    "LICENSE_\u212aEY",  # Kelvin sign
    "licen\u00dfe_key"[:0] + "licence\ufeffkey",  # BOM inside
    # Any run of separators, as the rule says (issue 22, finding 10).
    "license" + "_" * 20 + "key",
    "licence_-_. _-_.-_-_key",
    "l____i____c____e____n____s____e________k____e____y",
]
PLAIN_KEYS = ["license", "key", "license_count", "licensed_to", "keys", "software_name", "licen", "icensekey"]
ASSIGNING = [
    "license_key=ABCD-1234",
    "notes: licence-key: 'ABCD'",
    '{"license_key": "ABCD"}',
    '{\\"licenseKey\\":\\"ABCD\\"}',
    "LİCENSE_KEY = ABCD",
    "\uff4c\uff49\uff43\uff45\uff4e\uff53\uff45_key: ABCD",
    "lic\u200bense_key=ABCD",
    "license" + "_" * 20 + "key=ABCD",
    "{'licence_-_. _-_.-_-_key': 'ABCD'}",
    '{"l____i____c____e____n____s____e________k____e____y": "ABCD"}',
    "license" + " " * 9 + "key: ABCD",
    "licensekey" + "-" * 40 + "=ABCD",
    "license_key_hash" + " " * 40 + ": ABCD",
]
PROSE = [
    "Renew the license key for Visio",
    "licence keys are in the vault",
    "no key here",
    "license: MIT",
    "the license key rotation is documented in the operations handbook: see there",
]


@pytest.fixture(params=["utf8", "c_locale"])
async def rule_db(request: pytest.FixtureRequest, pg_server_url: str) -> AsyncIterator[asyncpg.Connection]:
    name = fresh_name()
    locale = "LC_COLLATE 'C' LC_CTYPE 'C'" if request.param == "c_locale" else ""
    admin = await asyncpg.connect(pg_server_url)
    await admin.execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8' {locale}")
    url = await upgraded(with_database(pg_server_url, name))
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_python_and_sql_agree_on_the_corpus(rule_db: asyncpg.Connection) -> None:
    keys = SENSITIVE_KEYS + PLAIN_KEYS
    sql_keys = await rule_db.fetch("SELECT k, it_relay.is_licence_key(k) FROM unnest($1::text[]) k", keys)
    assert {r[0]: r[1] for r in sql_keys} == {k: is_sensitive_key(k) for k in keys}
    assert all(is_sensitive_key(k) for k in SENSITIVE_KEYS)
    assert not any(is_sensitive_key(k) for k in PLAIN_KEYS)
    strings = ASSIGNING + PROSE
    sql_strings = await rule_db.fetch(
        "SELECT s, it_relay.assigns_licence_key(s) FROM unnest($1::text[]) s", strings
    )
    assert {r[0]: r[1] for r in sql_strings} == {s: assigns_key(s) for s in strings}
    assert all(assigns_key(s) for s in ASSIGNING)
    assert not any(assigns_key(s) for s in PROSE)


def _generated_corpus(count: int) -> list[str]:
    """Key names and assignments with separator runs of every length and kind between and after
    the letters, a fixed seed (so both sides see the same strings)."""
    rng = random.Random(22)
    runs = ["", "_", "-", " ", ".", "/", "\u200b", "__", "_-. ", "\t"]
    out = []
    for _ in range(count):
        word = rng.choice(["license", "licence", "LICENSE"]) + rng.choice(["key", "KEY"])
        name = "".join(ch + rng.choice(runs) * rng.choice([0, 1, 2, 9, 25]) for ch in word)
        name += rng.choice(["", "s", "_hash", "_" * 40, " (old)", "x" * 40])
        out += [name, name + rng.choice(["=", ": ", '": "', "' => '"]) + "V", "see the " + name]
    return out


async def test_python_and_sql_agree_on_a_generated_corpus(rule_db: asyncpg.Connection) -> None:
    strings = _generated_corpus(300)
    keys = await rule_db.fetch("SELECT k, it_relay.is_licence_key(k) FROM unnest($1::text[]) k", strings)
    assert {r[0]: r[1] for r in keys} == {k: is_sensitive_key(k) for k in strings}
    assigns = await rule_db.fetch(
        "SELECT s, it_relay.assigns_licence_key(s) FROM unnest($1::text[]) s", strings
    )
    assert {r[0]: r[1] for r in assigns} == {s: assigns_key(s) for s in strings}
    # Every name with at most 32 letters after "key", followed by = or :, assigns a key.
    assert all(assigns_key(s) for s in strings[1::3] if "x" * 40 not in s)


async def test_publish_stores_no_key_of_the_corpus(rule_db: asyncpg.Connection) -> None:
    payload = example("it_license_created") | {k: f"RAWKEY-{i}" for i, k in enumerate(SENSITIVE_KEYS)}
    payload |= {f"note_{i}": s.replace("ABCD", f"RAWVAL-{i}") for i, s in enumerate(ASSIGNING)}
    payload |= {f"prose_{i}": s for i, s in enumerate(PROSE)}
    await rule_db.fetchval("SELECT it_relay.publish($1::jsonb)", codec.dumps(payload).decode())
    stored = json.loads(await rule_db.fetchval("SELECT payload::text FROM it_relay.events"))
    text = json.dumps(stored, ensure_ascii=False)
    assert "RAWKEY" not in text and "RAWVAL" not in text
    assert [stored[f"prose_{i}"] for i in range(len(PROSE))] == PROSE
    # Python redacts the same payload to the same value (the router re-checks what SQL wrote).
    assert redact(stored) == stored
    assert {k: v for k, v in redact(payload).items() if k != "event_id"} == {
        k: v for k, v in stored.items() if k != "event_id"
    }


async def test_publish_refuses_what_is_too_deep_before_walking_it(rule_db: asyncpg.Connection) -> None:
    for depth in (65, 1_000, 10_000):
        deep = "[" * depth + '{"license_key": "RAW"}' + "]" * depth
        text = json.dumps(example("it_ticket_created"))[:-1] + f', "extra": {deep}}}'
        with pytest.raises(asyncpg.InvalidParameterValueError, match="nested deeper than 64 levels"):
            await rule_db.fetchval("SELECT it_relay.publish($1::jsonb)", text)
    shallow = "[" * 62 + '{"license_key": "RAW"}' + "]" * 62
    ok = json.dumps(example("it_ticket_created"))[:-1] + f', "extra": {shallow}}}'
    await rule_db.fetchval("SELECT it_relay.publish($1::jsonb)", ok)
    assert "RAW" not in await rule_db.fetchval("SELECT payload::text FROM it_relay.events")


# Disguises of the key's name a hostile producer might try.
_disguise = st.sampled_from(
    ["", "_", "-", " ", ".", "\u200b", "\u00ad", "\u0301", "\ufeff", "__", "_" * 9, "_-. " * 6, "-" * 40]
)


@st.composite
def disguised_keys(draw: st.DrawFn) -> str:
    word = draw(st.sampled_from(["license", "licence"])) + "key"
    out = []
    for ch in word:
        ch = draw(st.sampled_from([ch, ch.upper(), chr(ord(ch) - 0x61 + 0xFF41)]))
        out.append(ch + draw(_disguise))
    return draw(st.sampled_from(["", "old_", "x"])) + "".join(out) + draw(st.sampled_from(["", "s", "_hash"]))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(key=disguised_keys(), value=st.text(min_size=1, max_size=20))
def test_a_disguised_key_is_always_redacted_and_scrubbed(key: str, value: str) -> None:
    assert is_sensitive_key(key)
    assert redact({key: value, "nested": [{key: value}]}) == {key: REDACTED, "nested": [{key: REDACTED}]}
    secret = "SECRET" + value
    assert redact({"notes": f"{key}={secret}"}) == {"notes": REDACTED}
    scrubbed = scrub_text(f'{{"{key}": "{secret}", broken')
    assert "SECRET" not in scrubbed
