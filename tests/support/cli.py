"""`it-relay ARGS` run in this process: the same argument parsing, commands and one-line errors as
the installed command (`relay.cli.main`), without a Python start-up per call (about 0.8 s each).

A command runs in a thread of its own (it runs its own event loop), so a daemon or a sink in the
test's loop keeps running meanwhile. What the command prints is captured by thread: anything
another thread prints goes where it went before. The environment is the test process's without
`IT_RELAY_*`, as for a subprocess, and the logging the command configures is put back after it.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

import structlog

from relay.cli import main

_ONE_AT_A_TIME = threading.Lock()


@dataclass(frozen=True, slots=True)
class Ran:
    """How a command ended, as `subprocess.CompletedProcess` reports it."""

    returncode: int
    stdout: str
    stderr: str


class _ByThread(io.TextIOBase):
    """A standard stream whose writes from one thread are captured, the others' passed on."""

    # What click looks for before it writes to a stream as text.
    encoding = "utf-8"
    errors = "strict"

    def __init__(self, passed_on: TextIO, thread: int) -> None:
        self._passed_on = passed_on
        self._thread = thread
        self.captured = io.StringIO()

    def _target(self) -> TextIO:
        return self.captured if threading.get_ident() == self._thread else self._passed_on

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return False


def invoke(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Ran:
    """Run `it-relay ARGS` here, in this thread (with `env` added to the environment); returns
    its exit status and output."""
    with _ONE_AT_A_TIME:
        me = threading.get_ident()
        saved = sys.stdin, sys.stdout, sys.stderr
        environment = dict(os.environ)
        logging = structlog.get_config()
        out, err = _ByThread(sys.stdout, me), _ByThread(sys.stderr, me)
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
        sys.stdout, sys.stderr = out, err
        for name in [k for k in os.environ if k.startswith("IT_RELAY_")]:
            del os.environ[name]
        os.environ.update(env or {})
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            sys.stdin, sys.stdout, sys.stderr = saved
            os.environ.clear()
            os.environ.update(environment)
            structlog.configure(**logging)
        return Ran(code, out.captured.getvalue(), err.captured.getvalue())


async def run_cli(*args: str, stdin: bytes = b"", env: dict[str, str] | None = None) -> Ran:
    """`invoke` in a worker thread, so the test's event loop (daemons, sinks) keeps running."""
    return await asyncio.to_thread(invoke, *args, stdin=stdin, env=env)
