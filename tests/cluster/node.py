"""One app node of the cluster suite, the Docker cluster and the cluster benchmark.

    python -m tests.cluster.node --port 8001 --transport redis://127.0.0.1:6379/0 --name node1

Every flag has an environment variable, which is how the Docker cluster configures the
nodes (flags win over the environment):

=====================  =============================  ================================================
flag                   environment                    meaning
=====================  =============================  ================================================
``--transport``        ``SESSIONWS_BROKER_URL``       broker URL (``redis://``, ``nats://a,b,c``)
``--name``             ``SESSIONWS_NODE_NAME``        readable node name (default: the host name)
``--host``             ``SESSIONWS_HOST``             address to listen on (default 127.0.0.1)
``--port``             ``SESSIONWS_PORT``             port to listen on (default 8000)
``--framework``        ``SESSIONWS_FRAMEWORK``        ``aiohttp`` (default)
``--namespace``        ``SESSIONWS_NAMESPACE``        registry namespace (default ``cluster``)
``--heartbeat``        ``SESSIONWS_HEARTBEAT``        membership heartbeat, seconds (default 0.2)
``--linger``           ``SESSIONWS_LINGER``           channel linger after the last socket (0.2)
``--reconnect-delay``  ``SESSIONWS_RECONNECT``        longest wait between broker reconnects (0.2)
``--command-timeout``  ``SESSIONWS_COMMAND_TIMEOUT``  bound on each broker command (transport's)
``--loop``             ``SESSIONWS_LOOP``             ``auto`` (uvloop if installed), ``asyncio``, ``uvloop``
``--bench-trace``                                     a close's steps timed (``_bench_hooks.py``)
``--no-access-log``                                   no log line per HTTP request
``--record-events``                                   membership events at ``GET /events``
=====================  =============================  ================================================

A NATS URL may list several servers; the node attaches to the first and fails over to
the others (``dont_randomize``), so a test can attach nodes to different servers.

The app (aiohttp with aiohttp-session's ``SimpleCookieStorage``: readable cookies, fine
for tests) has the endpoints a real app would have around sessionws, plus a few that
let the tests and the benchmark look inside. All answers are JSON:

* ``GET /health``: ``healthy``, ``node`` (registry node id), ``live_nodes``; 503 when unhealthy.
* ``POST /login?user=U``: a new session with a new session-ws id and user ``U``.
* ``GET /ws`` (``data``: a JSON object, the socket's data): the websocket, registered
  under ``[session id, "user:U"]``. Its first message is ``{"handle": ..., "node": ...}``
  so the client can name itself to ``/logout-others`` and the socket verbs below; it
  answers ``ping`` with ``pong``.
* ``POST /logout`` (``?revoke=1`` revokes instead of closing): closes the session's
  sockets everywhere after the response is sent, and starts a new session.
* ``POST /logout-others?handle=H``: closes every socket of the user except ``H``.
* ``POST /close?key=K`` (``confirm``, ``strict``, ``timeout``, ``code``, ``exclude``):
  the ``CloseReport`` as JSON (503 when ``strict`` and the broker is unreachable).
* ``POST /revoke?key=K`` (``ttl``), ``GET /count?key=K``, ``GET /stats``.
* ``POST /rotate`` (aiohttp only): revoke the session's id everywhere and give it a new
  one (``rotate_session_ws_id``); answers ``{"session": new id}``.
* ``POST /send?key=K&data=D`` (``confirm``, ``timeout``, ``exclude``): ``send_ws``; the
  ``SendReport`` as JSON (with ``"sent": true``).
* ``POST /join?handle=H&key=K``, ``POST /leave?handle=H&key=K``, ``POST /data?handle=H&data=J``
  (``J`` a JSON object; none removes the data), on the node that holds socket ``H`` (404
  elsewhere): ``add_keys_ws``, ``remove_keys_ws``, ``set_data_ws`` on that socket; a
  revoked key gets 403 with the ``KeyRevokedError`` message.
* ``GET /members?key=K`` (``limit``, ``timeout``): ``members_ws``, the sockets of ``K``
  cluster-wide (``handle``, ``node``, ``keys``, ``data``, sorted by handle) with
  ``complete``, ``missing`` and ``truncated``; without ``key``, the caller's session's
  sockets (``members_session_ws``).
* ``POST /send-to?handle=H&data=D`` (``timeout``) and ``POST /close-handle?handle=H``
  (``code``, ``reason``, ``timeout``): ``send_to_ws`` and ``close_handle_ws``, the
  ``Delivered`` as JSON (``found``, ``node``, ``complete``, ``queued``); 400 for a string
  that is no handle id.
* ``POST /broadcast?data=D`` (``exclude``): ``broadcast_ws``, the ``SendReport`` as JSON.
* ``GET /events`` (aiohttp, with ``--record-events``): the registry's ``member_joined``
  and ``member_left`` events in order.
* For the benchmark (aiohttp only): ``GET /raw-ws`` and ``POST /raw-close?id=`` (websockets
  without sessionws, for the floor; ``id=all`` closes all of them at once), and
  ``POST /bench/register?n=&concurrency=`` (register throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import faulthandler
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Sequence
from typing import Any

from tests.cluster import _bench_hooks
from tests.cluster._app_common import FRAMEWORKS, MembershipLog, NodeConfig, exit_with_parent, make_registry

__all__ = ("LOOPS", "build_app", "main", "parse_config", "use_uvloop")

LOOPS = ("auto", "asyncio", "uvloop")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value else default


def parse_config(argv: Sequence[str] | None = None) -> NodeConfig:
    """Flags, with defaults from the environment (the Docker cluster's interface)."""
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.node", description=__doc__.split("\n")[0])
    parser.add_argument("--transport", default=_env("SESSIONWS_BROKER_URL"), help="broker URL")
    parser.add_argument("--name", default=_env("SESSIONWS_NODE_NAME", socket.gethostname()))
    parser.add_argument("--host", default=_env("SESSIONWS_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(_env("SESSIONWS_PORT", "8000") or 8000))
    parser.add_argument("--framework", choices=FRAMEWORKS, default=_env("SESSIONWS_FRAMEWORK", "aiohttp"))
    parser.add_argument("--namespace", default=_env("SESSIONWS_NAMESPACE", "cluster"))
    parser.add_argument("--heartbeat", type=float, default=float(_env("SESSIONWS_HEARTBEAT", "0.2") or 0.2))
    parser.add_argument("--linger", type=float, default=float(_env("SESSIONWS_LINGER", "0.2") or 0.2))
    parser.add_argument(
        "--reconnect-delay", type=float, default=float(_env("SESSIONWS_RECONNECT", "0.2") or 0.2)
    )
    parser.add_argument("--loop", choices=LOOPS, default=_env("SESSIONWS_LOOP", "auto"))
    parser.add_argument("--bench-trace", action="store_true", help="serve GET /bench/trace (aiohttp)")
    parser.add_argument(
        "--no-access-log", action="store_true", help="no log line per HTTP request (the benchmarks' nodes)"
    )
    parser.add_argument(
        "--record-events", action="store_true", help="keep membership events for GET /events (aiohttp)"
    )
    parser.add_argument(
        "--command-timeout", type=float, default=float(_env("SESSIONWS_COMMAND_TIMEOUT", "0") or 0) or None
    )
    arguments = parser.parse_args(argv)
    if not arguments.transport:
        parser.error("give the broker URL with --transport or SESSIONWS_BROKER_URL")
    return NodeConfig(
        transport=arguments.transport,
        name=arguments.name,
        host=arguments.host,
        port=arguments.port,
        framework=arguments.framework,
        namespace=arguments.namespace,
        heartbeat=arguments.heartbeat,
        linger=arguments.linger,
        reconnect_delay=arguments.reconnect_delay,
        command_timeout=arguments.command_timeout,
        record_events=arguments.record_events,
        loop=arguments.loop,
        bench_trace=arguments.bench_trace,
        access_log=not arguments.no_access_log,
    )


def use_uvloop(loop: str) -> bool:
    """Whether the node runs on uvloop: asked for, or ``auto`` and installed."""
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise SystemExit("--loop uvloop: uvloop is not installed (pip install 'sessionws[speed]')")
    return loop == "uvloop" or (loop == "auto" and importlib.util.find_spec("uvloop") is not None)


def build_app(config: NodeConfig) -> Any:
    """The node's app for ``config.framework`` (the registry runs with the app)."""
    if config.framework == "starlette":
        from tests.cluster._starlette_app import build_starlette_app

        return build_starlette_app(config, make_registry(config))
    from tests.cluster._aiohttp_app import build_aiohttp_app

    events = MembershipLog() if config.record_events else None
    return build_aiohttp_app(config, make_registry(config, events), events)


def main(argv: Sequence[str] | None = None) -> None:
    config = parse_config(argv)
    # `kill -USR1 <pid>` prints every thread's stack to the log: the tests do it to a
    # node that does not stop when asked, before they SIGKILL it.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    exit_with_parent()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s {config.name} %(levelname)s %(name)s: %(message)s"
    )
    if config.bench_trace:
        _bench_hooks.install()
    app = build_app(config)
    if config.framework == "aiohttp":
        _bench_hooks.bench_routes(app, traced=config.bench_trace)
    if config.framework == "starlette":
        import uvicorn

        loop = "uvloop" if use_uvloop(config.loop) else "asyncio"
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", lifespan="on", loop=loop)
    else:
        from aiohttp import web

        event_loop: asyncio.AbstractEventLoop
        if use_uvloop(config.loop):
            import uvloop

            event_loop = uvloop.new_event_loop()
        else:
            event_loop = asyncio.new_event_loop()
        logging.getLogger(__name__).info("event loop: %s", type(event_loop).__module__)
        web.run_app(
            app,
            host=config.host,
            port=config.port,
            print=None,
            shutdown_timeout=5.0,
            loop=event_loop,
            access_log=logging.getLogger("aiohttp.access") if config.access_log else None,
        )


if __name__ == "__main__":
    main()
