"""The Docker cluster's TCP proxy between node 3 and the broker, cut over HTTP.

    python -m tests.cluster.proxy_service --control 8474 6379=redis:6379
    python -m tests.cluster.proxy_service --control 8474 4222=nats3:4222 4223=nats1:4222

Each ``PORT=HOST:PORT`` forwards a port of this container to a broker address (a
:class:`TcpProxy`, as in the local suite). The control port answers:

* ``POST /cut``: every proxied connection is dropped, and new ones as soon as they
  connect (to node 3 the broker is gone while nodes 1 and 2 carry on);
* ``POST /restore``: forward again;
* ``GET /health``: ``{"cut": false, "forwards": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from tests.cluster._proxy import TcpProxy

__all__ = ("main",)

logger = logging.getLogger(__name__)


def _forward(text: str) -> tuple[int, str, int]:
    port, _, upstream = text.partition("=")
    host, _, upstream_port = upstream.rpartition(":")
    if not (port.isdigit() and host and upstream_port.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r}: expected PORT=HOST:PORT, e.g. 6379=redis:6379")
    return int(port), host, int(upstream_port)


class _Control(ThreadingHTTPServer):
    def __init__(self, port: int, proxies: Sequence[TcpProxy]) -> None:
        super().__init__(("0.0.0.0", port), _Handler)
        self.proxies = list(proxies)
        self.cut = False

    def state(self) -> dict[str, object]:
        forwards = {proxy.port: f"{proxy.upstream[0]}:{proxy.upstream[1]}" for proxy in self.proxies}
        return {"cut": self.cut, "forwards": forwards}


class _Handler(BaseHTTPRequestHandler):
    server: _Control

    def _answer(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._answer(200, self.server.state())
        else:
            self._answer(404, {"error": "GET /health, POST /cut or POST /restore"})

    def do_POST(self) -> None:
        if self.path == "/cut":
            for proxy in self.server.proxies:
                proxy.cut()
            self.server.cut = True
        elif self.path == "/restore":
            for proxy in self.server.proxies:
                proxy.restore()
            self.server.cut = False
        else:
            self._answer(404, {"error": "POST /cut or POST /restore"})
            return
        logger.info("%s: %s", self.path.lstrip("/"), self.server.state())
        self._answer(200, self.server.state())

    def log_message(self, format: str, *args: object) -> None:
        logger.debug(format, *args)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster.proxy_service", description=__doc__)
    parser.add_argument("--control", type=int, default=8474, help="the control port (default 8474)")
    parser.add_argument("forwards", nargs="+", type=_forward, metavar="PORT=HOST:PORT")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    proxies = [
        TcpProxy(upstream_host, upstream_port, host="0.0.0.0", port=port)
        for port, upstream_host, upstream_port in arguments.forwards
    ]
    for proxy in proxies:
        proxy.start()
    control = _Control(arguments.control, proxies)
    # shutdown() waits for serve_forever() to return: it cannot run in the signal
    # handler (the same thread), so a thread does it; joined below.
    stopper = threading.Thread(target=control.shutdown, name="shutdown")

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    logger.info("forwarding %s; control on port %d", control.state()["forwards"], arguments.control)
    try:
        control.serve_forever()
    finally:
        if stopper.ident is not None:
            stopper.join()
        control.server_close()
        for proxy in proxies:
            proxy.close()


if __name__ == "__main__":
    main()
