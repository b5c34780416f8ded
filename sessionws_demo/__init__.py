"""The sessionws demo: one page, websockets tied to the session, closed on demand.

Run it with ``scripts/demo`` (or ``python -m sessionws_demo --help``)::

    python -m sessionws_demo --transport memory:// --port 8080 --host 127.0.0.1

``--port 0`` picks a free port; the URL is printed either way. Two processes given
the same broker URL and ``--secret`` form a cluster, whatever their ``--framework``
(both write one session cookie, ``sessionws_demo``, in Starlette's format; cookies are
per host, not per port, so one browser has one session on both).

The page (``static/``) is framework-neutral: every server version (aiohttp and
Starlette) serves the same files and these endpoints, all JSON over HTTP plus one
websocket:

=====================  ===========================================================
``GET /``              the page; ensures the session has a session-ws id first
``GET /static/<file>`` ``demo.js`` and ``demo.css`` (no external assets)
``GET /api/state``     ``{"session": "<first 8 chars>" | null, "user": str | null,
                       "node": str, "transport": str, "revoked": bool,
                       "count": int, "complete": bool}``
``POST /api/reset``    close every socket of the session (1000, after the response
                       is written) and give it a new id → the state
``POST /api/login``    body ``{"user": "<1-32 of A-Z a-z 0-9 _ . ->"}``: log in,
                       rotate the id (the old one is revoked; its sockets close with
                       1000 after the response, and reconnect) → the state; 400 with
                       ``{"error": ...}`` for a bad name
``POST /api/logout``   log out and revoke the session's id: its sockets close with
                       4401 on every node and new ones are refused (403) until the
                       next login or reset → ``{"closed": <sockets closed here>}``
``POST /api/broadcast`` send a note to every socket of the session → ``{"sent": true}``
``GET /metrics``       Prometheus metrics of the node's registry (where
                       prometheus-client is installed: the ``demo`` extra has it)
``GET /ws``            the websocket. Server → client, JSON text:
                       ``{"type": "hello", "node", "session", "user"}`` once,
                       ``{"type": "count", "count": int, "complete": bool}`` whenever
                       the session's cluster-wide socket count changes (and on
                       request), ``{"type": "note", "text": str}``. Client → server:
                       the text ``count`` asks for a count; anything else is ignored.
=====================  ===========================================================

Close codes the page acts on: 4401 means "revoked: do not reconnect until logged in";
anything else means "reconnect" (with a backoff).
"""

from __future__ import annotations

from ._options import FRAMEWORKS, STATIC_DIR, DemoOptions

__all__ = ("FRAMEWORKS", "STATIC_DIR", "DemoOptions")
