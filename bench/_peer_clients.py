"""The websocket clients of one node index, for ``bench.peers``: one implementation for
every server measured (sessionws over Redis and NATS, Socket.IO), in a process of its own.

    python -m bench._peer_clients

Commands, one a line on standard input; answers, one a line on standard output:

* ``open sessionws URL COUNT COOKIE`` → ``ready``: ``COUNT`` sockets on ``URL/ws`` with
  that cookie header, each past its hello (registered).
* ``open socketio URL COUNT SESSION`` → ``ready``: ``COUNT`` Socket.IO sockets (engine.io
  4 over a websocket, ``URL/socket.io/?EIO=4&transport=websocket&session=SESSION``), each
  past the open and connect packets and the server's ``hello`` event (joined its room).
* ``raw URL COUNT`` → ``ready ID ID ...``: ``COUNT`` sockets on ``URL/raw-ws`` (no sessionws).
* then, once every socket of the batch has been *told* to go: ``closed T``, ``T`` the
  monotonic time (``time.monotonic()``, one clock for every process of one machine, Node's
  ``process.hrtime`` too) at which the last of them was told. A sessionws or raw socket is
  told by its CLOSE frame; a Socket.IO socket by its disconnect packet (``41``) or its
  CLOSE frame, whichever comes first (``disconnectSockets(true)`` sends the packet, then
  closes the connection).

The clients run on uvloop when it is installed (the same loop for every server measured).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from bench._clients import answer, closed_at, commands
from bench._loops import run

#: engine.io 4 packets (text): open, ping, pong, message+connect, message+disconnect.
EIO_OPEN, EIO_PING, EIO_PONG = "0", "2", "3"
SIO_CONNECT, SIO_DISCONNECT, SIO_EVENT = "40", "41", "42"


async def _socketio_told_at(ws: aiohttp.ClientWebSocketResponse) -> float:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        if message.data == EIO_PING:
            await ws.send_str(EIO_PONG)
        elif message.data.startswith(SIO_DISCONNECT):
            told = time.monotonic()
            await ws.close()
            return told
    return time.monotonic()


async def _socketio_open(
    http: aiohttp.ClientSession, url: str, session: str
) -> aiohttp.ClientWebSocketResponse:
    ws = await http.ws_connect(f"{url}/socket.io/?EIO=4&transport=websocket&session={session}")
    if not (await ws.receive_str()).startswith(EIO_OPEN):
        raise RuntimeError("Socket.IO did not open the engine.io session")
    await ws.send_str(SIO_CONNECT)
    while True:  # the namespace's connect answer, then the hello sent after join()
        data = await ws.receive_str()
        if data == EIO_PING:
            await ws.send_str(EIO_PONG)
        elif data.startswith(SIO_EVENT):
            return ws
        elif not data.startswith(SIO_CONNECT):
            raise RuntimeError(f"Socket.IO answered {data!r} to a connect")


async def _report_when_told(watchers: list[asyncio.Task[float]]) -> None:
    times = await asyncio.gather(*watchers)
    answer(f"closed {max(times)!r}")


async def serve() -> None:
    reader = await commands()
    reporters: set[asyncio.Task[None]] = set()
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:
        while line := (await reader.readline()).decode().strip():
            words = line.split(" ")
            if words[0] == "open" and words[1] == "sessionws":
                url, count, cookie = words[2], int(words[3]), " ".join(words[4:])
                sockets = await asyncio.gather(
                    *(http.ws_connect(f"{url}/ws", headers={"Cookie": cookie}) for _ in range(count))
                )
                await asyncio.gather(*(ws.receive_json() for ws in sockets))  # registered: the hello
                watchers = [asyncio.ensure_future(closed_at(ws)) for ws in sockets]
                answer("ready")
            elif words[0] == "open" and words[1] == "socketio":
                url, count, session = words[2], int(words[3]), words[4]
                sockets = await asyncio.gather(*(_socketio_open(http, url, session) for _ in range(count)))
                watchers = [asyncio.ensure_future(_socketio_told_at(ws)) for ws in sockets]
                answer("ready")
            elif words[0] == "raw":
                url, count = words[1], int(words[2])
                sockets = await asyncio.gather(*(http.ws_connect(f"{url}/raw-ws") for _ in range(count)))
                tokens = [(await ws.receive_json())["id"] for ws in sockets]
                watchers = [asyncio.ensure_future(closed_at(ws)) for ws in sockets]
                answer("ready " + " ".join(tokens))
            else:
                raise SystemExit(f"unknown command {line!r}")
            reporter = asyncio.create_task(_report_when_told(watchers))
            reporters.add(reporter)
            reporter.add_done_callback(reporters.discard)


def main() -> None:
    run(serve())


if __name__ == "__main__":
    main()
