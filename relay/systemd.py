"""systemd's notify protocol (sd_notify): READY=1, WATCHDOG=1, STATUS=..., STOPPING=1.

A no-op unless $NOTIFY_SOCKET is set (i.e. outside a Type=notify unit). The protocol is one
datagram per message on a Unix socket; an address starting with '@' is in the abstract namespace.
"""

from __future__ import annotations

import contextlib
import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        self._address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        if self._address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def watchdog_interval_s(self) -> float | None:
        """Half of WatchdogSec= (systemd's advice), or None when no watchdog is asked for."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 2_000_000
        except ValueError:
            return None

    def notify(self, *messages: str) -> None:
        if self._sock is None or not self._address:
            return
        target = "\0" + self._address[1:] if self._address.startswith("@") else self._address
        # systemd gone or its socket full: a notification must never break the relay.
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(messages).encode(), target)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
