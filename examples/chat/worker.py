"""Send the chat's users a message from outside the web app: a worker process.

    python examples/chat/worker.py --broker redis://127.0.0.1:6379/0 --to alice --to bob "hello"

A bot or a job queue's consumer holds no websockets: it runs a publish-only registry on
the chat's broker and sends to every socket of each user (``send_all(f"user:{name}",
...)``), on whichever node they are. With ``confirm=True`` every node says for how many
sockets it queued the message; the worker prints that report, one JSON line per user and
text::

    {"user": "alice", "text": "hello", "sockets": 2, "nodes": {"3f2a...": 1, "9b1c...": 1}, "complete": true}

``sockets`` counts the sockets logged in as that user when the message arrived;
``complete`` is false when a live node did not answer within ``--timeout`` seconds.
Several texts are sent in order: each socket receives them in that order. The worker
exits with 1 when a report is incomplete.

Over NATS, which does not say how many received a message, a registry learns the live
nodes from their heartbeats: give it ``--listen 2`` (one heartbeat interval) before the
first confirmed send, or its first reports may count no node at all.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import sys

import anyio

from sessionws import SessionRegistry

# The chat app's user names and keys (see app.py): its sockets log in under ``user:<name>``.
USER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def user_key(user: str) -> str:
    return f"user:{user}"


async def send_replies(
    broker: str, users: list[str], texts: list[str], *, timeout: float = 2.0, listen: float = 0.0
) -> list[dict[str, object]]:
    """Send each text to every socket of each user; one report per (user, text)."""
    reports: list[dict[str, object]] = []
    async with SessionRegistry(broker, publish_only=True) as registry:
        await anyio.sleep(listen)  # hear the nodes' heartbeats first (see the docstring)
        for text in texts:
            for user in users:
                payload = json.dumps({"type": "message", "from": "worker", "to": user, "text": text})
                report = await registry.send_all(user_key(user), payload, confirm=True, timeout=timeout)
                reports.append(
                    {
                        "user": user,
                        "text": text,
                        "sockets": report.total,
                        "nodes": dict(report.nodes),
                        "complete": report.complete,
                    }
                )
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description="Send a message to every socket of some chat users.")
    parser.add_argument("--broker", required=True, help="the chat's transport URL, e.g. redis://host:6379/0")
    parser.add_argument("--to", action="append", required=True, metavar="USER", help="repeat for each user")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for every node's answer")
    parser.add_argument("--listen", type=float, default=0.0, help="seconds to learn the nodes first (NATS)")
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    arguments = parser.parse_args()
    for user in arguments.to:
        if not USER_NAME.fullmatch(user):
            parser.error(f"{user!r} is not a user name (1-64 letters, digits, '_', '.' or '-')")
    reports = anyio.run(
        functools.partial(
            send_replies,
            arguments.broker,
            arguments.to,
            arguments.texts,
            timeout=arguments.timeout,
            listen=arguments.listen,
        )
    )
    for report in reports:
        print(json.dumps(report), flush=True)
    if not all(report["complete"] for report in reports):
        sys.exit(1)


if __name__ == "__main__":
    main()
