"""The shipped alert rules, proven with promtool on series shaped like the relay's
(tests/alerts/alerts_test.yml): a subscriber down alerts within 15 minutes whatever its volume,
dead deliveries at once, unrouted events with no instance; a paused subscriber and a blip do not."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian's prometheus package)")
def test_the_alert_rules_are_valid_and_fire_as_documented() -> None:
    assert PROMTOOL is not None
    checked = subprocess.run(
        [PROMTOOL, "check", "rules", str(ROOT / "config" / "prometheus-alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", str(ROOT / "tests" / "alerts" / "alerts_test.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
