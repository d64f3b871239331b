"""A systemd notification socket for tests: what a relay process sends to NOTIFY_SOCKET."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path


class NotifySocket:
    """A datagram socket at `address`; `until(text)` waits for a message holding `text`."""

    def __init__(self, directory: Path) -> None:
        self.address = str(directory / "notify.sock")
        self.messages: list[str] = []
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._server.bind(self.address)
        self._server.setblocking(False)

    async def until(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        while not any(text in m for m in self.messages):
            self.messages.append((await loop.sock_recv(self._server, 4096)).decode())

    def close(self) -> None:
        self._server.close()
