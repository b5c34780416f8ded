"""Websocket clients of one node in their own process, for ``bench.cluster``.

    python -m bench._clients NODE_URL

Real users' sockets do not share one event loop: the clients of each node run in a
process of their own (as the floor's raw subscribers do), so that three sockets closing
at once are seen by three processes, not queued behind each other in one. Commands,
one a line on standard input; answers, one a line on standard output:

* ``open COUNT COOKIE`` → ``ready``: ``COUNT`` sockets on ``/ws`` with that cookie
  header, each past its hello (registered).
* ``raw COUNT`` → ``ready ID ID ...``: ``COUNT`` sockets on ``/raw-ws`` (no sessionws).
* then, once every socket of the batch has seen its CLOSE: ``closed T`` with ``T`` the
  monotonic time (``time.monotonic()``, one clock for every process of one machine) of
  the last CLOSE.
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp


def answer(line: str) -> None:
    """One answer line on standard output (flushed: the benchmark waits for it)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def commands() -> asyncio.StreamReader:
    """Standard input, where the benchmark writes its commands."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    return reader


async def closed_at(ws: aiohttp.ClientWebSocketResponse) -> float:
    """When ``ws`` saw its CLOSE."""
    async for _ in ws:
        pass
    return time.monotonic()  # CLOSE arrived: the loop ended


async def _report_when_closed(sockets: list[aiohttp.ClientWebSocketResponse]) -> None:
    times = await asyncio.gather(*(closed_at(ws) for ws in sockets))
    answer(f"closed {max(times)!r}")


async def serve(node: str) -> None:
    reader = await commands()
    watchers: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        while line := (await reader.readline()).decode().strip():
            command, count, *rest = line.split(" ", 2)
            if command == "open":
                headers = {"Cookie": rest[0]}
                sockets = await asyncio.gather(
                    *(http.ws_connect(f"{node}/ws", headers=headers) for _ in range(int(count)))
                )
                await asyncio.gather(*(ws.receive_json() for ws in sockets))  # registered: the hello
                answer("ready")
            elif command == "raw":
                sockets = await asyncio.gather(
                    *(http.ws_connect(f"{node}/raw-ws") for _ in range(int(count)))
                )
                tokens = [(await ws.receive_json())["id"] for ws in sockets]
                answer("ready " + " ".join(tokens))
            else:
                raise SystemExit(f"unknown command {command!r}")
            watcher = asyncio.create_task(_report_when_closed(sockets))
            watchers.add(watcher)
            watcher.add_done_callback(watchers.discard)


def main() -> None:
    asyncio.run(serve(sys.argv[1]))


if __name__ == "__main__":
    main()
