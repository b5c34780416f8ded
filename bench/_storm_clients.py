"""The client side of ``bench.connect_storm``, in a process of its own.

    python -m bench._storm_clients

Commands, one a line on standard input, each answered with one line:

* ``storm URL COUNT IN_FLIGHT [COOKIE_FILE]`` → ``done SECONDS``: open ``COUNT``
  websockets on ``URL`` with at most ``IN_FLIGHT`` upgrades at a time, each counted once
  its first message (the server's hello) has arrived, and keep them open. With a cookie
  file (one ``Cookie`` header a line), socket ``i`` sends line ``i mod lines``; without
  one, every socket comes without a cookie (a new session each).
* ``release`` → ``released``: close every open socket.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import aiohttp

from bench._loops import run


def _answer(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _cookies(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


async def storm(
    http: aiohttp.ClientSession, url: str, count: int, in_flight: int, cookies: list[str]
) -> tuple[float, list[aiohttp.ClientWebSocketResponse]]:
    gate = asyncio.Semaphore(in_flight)

    async def one(index: int) -> aiohttp.ClientWebSocketResponse:
        headers = {"Cookie": cookies[index % len(cookies)]} if cookies else {}
        async with gate:
            ws = await http.ws_connect(url, headers=headers)
            await ws.receive()  # the hello: the server has registered the socket
            return ws

    started = time.perf_counter()
    sockets = await asyncio.gather(*(one(index) for index in range(count)))
    return time.perf_counter() - started, list(sockets)


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    open_sockets: list[aiohttp.ClientWebSocketResponse] = []
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as http:
        while line := (await reader.readline()).decode().strip():
            words = line.split(" ")
            if words[0] == "storm":
                url, count, in_flight = words[1], int(words[2]), int(words[3])
                cookies = _cookies(words[4]) if len(words) > 4 else []
                seconds, sockets = await storm(http, url, count, in_flight, cookies)
                open_sockets += sockets
                _answer(f"done {seconds!r}")
            elif words[0] == "release":
                await asyncio.gather(*(ws.close() for ws in open_sockets))
                open_sockets.clear()
                _answer("released")
            else:
                raise SystemExit(f"unknown command {line!r}")


def main() -> None:
    run(serve())


if __name__ == "__main__":
    main()
