"""A minimal HTTP sink for benchmarks: answers 200 at once, records when each webhook-id arrived.

Runs in its own process; GET /stats returns {"count": n, "arrivals": {webhook-id: [monotonic, ...]}}.
CLOCK_MONOTONIC is system-wide on Linux, so arrival times compare with the producer's clock.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


def serve(port: int) -> None:
    arrivals: dict[str, list[float]] = {}
    # Kept as it grows: a drain polls /count every 20 ms, and summing every arrival of the run
    # per poll cost the sink (and so the system measured beside it) more the later a run came.
    total = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal total
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.monotonic()
                length = 0
                webhook_id = ""
                lines = head.split(b"\r\n")
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if lines[0].startswith(b"GET /stats"):
                    body = json.dumps({"count": total, "arrivals": arrivals}).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                        + str(len(body)).encode()
                        + b"\r\n\r\n"
                        + body
                    )
                elif lines[0].startswith(b"GET /count"):
                    body = str(total).encode()
                    writer.write(
                        b"HTTP/1.1 200 OK\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                    )
                else:
                    arrivals.setdefault(webhook_id, []).append(now)
                    total += 1
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


if __name__ == "__main__":
    serve(int(sys.argv[1]))
