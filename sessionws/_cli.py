"""The ``sessionws`` admin command: close, revoke and count sockets, list live nodes.

It runs a publish-only :class:`~sessionws.SessionRegistry` (no sockets, no heartbeats)
on the cluster's broker and namespace, so the web app need not be touched::

    sessionws close SESSION_ID --url redis://localhost:6379/0 --confirm
    sessionws revoke user:42 --ttl 86400
    sessionws count user:42 --json
    sessionws nodes

Exit codes: 0 done; 1 a confirmed close or a count is incomplete (a live node did not
answer in time); 2 usage error (bad option, unknown URL scheme, missing extra); 3 the
broker is unreachable; 4 a confirmed close, a revoke with ``--confirm`` or a count heard
no live node in the namespace (a typo in ``--namespace``, or every node down). Keys are
hashed before they reach the broker and are never printed; ``-`` as the key reads it from
stdin (keeps it out of ``ps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio

from sessionws._codes import CLOSE_DEFAULT, CLOSE_REVOKED, validate_close
from sessionws._errors import BrokerUnavailableError
from sessionws._registry import SessionRegistry
from sessionws._reports import CloseReport
from sessionws._urls import transport_from_url
from sessionws._version import __version__
from sessionws.transport import OPEN_TIMEOUT

__all__ = ("EXIT_INCOMPLETE", "EXIT_NO_NODES", "EXIT_OK", "EXIT_UNAVAILABLE", "EXIT_USAGE", "main")

EXIT_OK = 0
EXIT_INCOMPLETE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_NO_NODES = 4

_SIGNATURE_DROPS = ("unsigned", "forged")


class UsageError(Exception):
    """Arguments that parse but make no sense (exit 2)."""


@dataclass
class Outcome:
    """What a command prints (``lines``, or ``data`` with ``--json``) and its exit code."""

    data: dict[str, Any]
    lines: list[str]
    exit_code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("cluster")
    group.add_argument("--url", help="the cluster's broker URL (default: $SESSIONWS_URL)")
    group.add_argument(
        "--namespace", help="the cluster's namespace (default: $SESSIONWS_NAMESPACE or 'sessionws')"
    )
    group.add_argument(
        "--signing-key",
        action="append",
        metavar="KEY",
        help="HMAC signing key, repeatable; the first signs (default: $SESSIONWS_SIGNING_KEYS, "
        "comma-separated)",
    )
    group.add_argument(
        "--name-secret", help="the cluster's name_secret, if set (default: $SESSIONWS_NAME_SECRET)"
    )
    group.add_argument(
        "--heartbeat-interval",
        type=_seconds,
        default=2.0,
        metavar="S",
        help="the cluster's heartbeat_interval; confirmed closes and counts first listen this long "
        "to learn the live nodes (default: 2.0)",
    )
    group.add_argument(
        "--connect-timeout",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="give up reaching the broker after S",
    )
    common.add_argument("--json", action="store_true", help="print one JSON object")
    common.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")

    parser = argparse.ArgumentParser(
        prog="sessionws",
        description="Close, revoke and count session websockets across a cluster.",
        epilog=(
            "Exit codes: 0 ok, 1 incomplete (a live node did not answer), 2 usage, 3 broker unreachable, "
            "4 no live node in the namespace (confirmed close or revoke, count)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"sessionws {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    key_help = "the key (session-ws id, user id, ...); '-' reads it from stdin"

    close = commands.add_parser("close", parents=[common], help="close every socket of a key, every node")
    close.add_argument("key", help=key_help)
    close.add_argument("--code", type=int, default=CLOSE_DEFAULT, help="close code (default: 1000)")
    close.add_argument("--reason", default="", help="close reason (at most 123 bytes)")
    close.add_argument("--exclude", metavar="HANDLE_ID", help="spare this connection")
    close.add_argument("--confirm", action="store_true", help="wait for every live node's answer")
    close.add_argument(
        "--timeout", type=_seconds, default=7.0, metavar="S", help="wait for answers (default: 7)"
    )

    revoke = commands.add_parser(
        "revoke", parents=[common], help="close a key everywhere and refuse it for a while"
    )
    revoke.add_argument("key", help=key_help)
    revoke.add_argument(
        "--ttl", type=_seconds, metavar="S", help="refuse the key this long (default: 14 days)"
    )
    revoke.add_argument("--code", type=int, default=CLOSE_REVOKED, help="close code (default: 4401)")
    revoke.add_argument("--reason", default="session revoked", help="close reason")
    revoke.add_argument("--confirm", action="store_true", help="wait for every live node's answer")
    revoke.add_argument(
        "--timeout", type=_seconds, default=7.0, metavar="S", help="wait for answers (default: 7)"
    )

    count = commands.add_parser("count", parents=[common], help="count the sockets of a key, cluster-wide")
    count.add_argument("key", help=key_help)
    count.add_argument(
        "--timeout", type=_seconds, default=2.0, metavar="S", help="wait for answers (default: 2)"
    )

    nodes = commands.add_parser("nodes", parents=[common], help="list the live nodes (from their heartbeats)")
    nodes.add_argument(
        "--wait", type=_seconds, metavar="S", help="listen this long (default: 1.5 heartbeat intervals)"
    )
    return parser


def redact(url: str) -> str:
    """``url`` without credentials, for messages."""
    return re.sub(r"//[^/@]*@", "//***@", url)


def _read_key(key: str) -> str:
    if key == "-":
        key = sys.stdin.readline().rstrip("\r\n")
    if not key:
        raise UsageError("the key is empty")
    return key


def _signing_keys(args: argparse.Namespace) -> list[str]:
    if args.signing_key is not None:
        return list(args.signing_key)
    return [key.strip() for key in os.environ.get("SESSIONWS_SIGNING_KEYS", "").split(",") if key.strip()]


def _namespace(args: argparse.Namespace) -> str:
    namespace: str = args.namespace or os.environ.get("SESSIONWS_NAMESPACE", "sessionws")
    return namespace


def _make_registry(args: argparse.Namespace) -> SessionRegistry:
    url = args.url or os.environ.get("SESSIONWS_URL", "")
    if not url:
        raise UsageError("no broker URL: pass --url or set SESSIONWS_URL")
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        raise UsageError(
            "memory:// reaches only registries inside one process; give the cluster's broker URL"
        )
    try:
        return SessionRegistry(
            # Every transport bounds its first connection by this option (the
            # transport author's contract, sessionws.transport.OPEN_TIMEOUT).
            transport_from_url(url, **{OPEN_TIMEOUT: args.connect_timeout}),
            namespace=_namespace(args),
            name_secret=args.name_secret or os.environ.get("SESSIONWS_NAME_SECRET") or None,
            signing_keys=_signing_keys(args),
            heartbeat_interval=args.heartbeat_interval,
            publish_only=True,
        )
    except (ValueError, TypeError, ImportError) as error:
        raise UsageError(str(error)) from error


async def _listen_for_members(registry: SessionRegistry, interval: float) -> None:
    # The registry learns the membership from heartbeats only (a publish-only registry
    # sends no hello): after one interval, every node that beats has been heard. Nodes
    # that hear commands are also waited for through the broker's receiver count.
    await anyio.sleep(interval * 1.1 + 0.05)


def _close_outcome(command: str, report: CloseReport, timeout: float) -> Outcome:
    if not report.confirmed:
        return Outcome(
            {
                "command": command,
                "confirmed": False,
                "complete": None,
                "total": None,
                "nodes": {},
                "missing": [],
            },
            [f"{command} sent: every node holding the key acts on it (add --confirm to wait for answers)"],
        )
    nodes = dict(sorted(report.nodes.items()))
    data = {
        "command": command,
        "confirmed": True,
        "complete": report.complete,
        "total": report.total,
        "nodes": nodes,
        "missing": sorted(report.missing),
    }
    lines = [f"closed {report.total} socket(s); {len(nodes)} node(s) answered"]
    lines += [f"  {node}: {closed}" for node, closed in nodes.items()]
    if report.complete:
        return Outcome(data, [*lines, "every live node answered"])
    return Outcome(data, [*lines, _incomplete(report.missing, timeout)], EXIT_INCOMPLETE)


def _no_live_node(args: argparse.Namespace, data: dict[str, Any]) -> Outcome:
    """No node was heard from: a cron job must not read that as success."""
    namespace = _namespace(args)
    done = (
        "nothing was counted"
        if args.command == "count"
        else f"the {args.command} was sent but nobody confirmed it"
    )
    message = (
        f"no node is live in namespace {namespace!r} (no heartbeat heard in "
        f"{args.heartbeat_interval * 1.1 + 0.05:g} s): {done}; check --url, --namespace, "
        "--name-secret and --heartbeat-interval against the cluster's"
    )
    return Outcome({**data, "namespace": namespace, "error": "no live node"}, [], EXIT_NO_NODES, [message])


def _incomplete(missing: frozenset[str], timeout: float) -> str:
    names = f" (no answer from: {', '.join(sorted(missing))})" if missing else ""
    return f"INCOMPLETE: not every live node answered within {timeout:g} s{names}"


async def _execute(registry: SessionRegistry, args: argparse.Namespace, key: str) -> Outcome:
    if args.command == "nodes":
        await anyio.sleep(args.wait or 1.5 * args.heartbeat_interval)
        nodes = sorted(registry.live_nodes())
        return Outcome({"command": "nodes", "nodes": nodes}, nodes)
    if args.command == "count" or args.confirm:
        await _listen_for_members(registry, args.heartbeat_interval)
        if args.command == "count" and not registry.live_nodes():
            return _no_live_node(args, {"command": "count", "total": None, "complete": False, "members": []})
    if args.command == "count":
        members = registry.live_nodes()
        total, complete = await registry.count(key, timeout=args.timeout)
        if not registry.healthy:
            raise BrokerUnavailableError("the broker connection dropped while counting")
        data = {"command": "count", "total": total, "complete": complete, "members": sorted(members)}
        if complete:
            return Outcome(data, [str(total)])
        # stdout stays the bare number, for scripts; the verdict goes to stderr.
        return Outcome(data, [str(total)], EXIT_INCOMPLETE, [_incomplete(frozenset(), args.timeout)])
    if args.command == "close":
        report = await registry.close_all(
            key,
            code=args.code,
            reason=args.reason,
            exclude=args.exclude or None,
            confirm=args.confirm,
            timeout=args.timeout,
            strict=True,
        )
    else:
        report = await registry.revoke(
            key,
            ttl=args.ttl,
            code=args.code,
            reason=args.reason,
            confirm=args.confirm,
            timeout=args.timeout,
            strict=True,
        )
    if args.confirm and not report.nodes and not registry.live_nodes():
        # Sent all the same (a node whose heartbeat was missed still acts on it, and a
        # revoke's marker holds for nodes that start later), but nobody confirmed it.
        return _no_live_node(
            args, {**_close_outcome(args.command, report, args.timeout).data, "complete": False}
        )
    return _close_outcome(args.command, report, args.timeout)


def _hints(registry: SessionRegistry, args: argparse.Namespace, outcome: Outcome) -> list[str]:
    """What may explain an incomplete or empty answer (a mismatched setting, usually)."""
    hints: list[str] = []
    if outcome.exit_code == EXIT_INCOMPLETE and not _signing_keys(args):
        hints.append("if the cluster signs its commands, pass its --signing-key (nodes drop unsigned ones)")
    dropped = registry.stats()["dropped_by_reason"]
    signature_drops = sum(dropped.get(reason, 0) for reason in _SIGNATURE_DROPS)
    if signature_drops:
        hints.append(
            f"{signature_drops} broker message(s) failed the signature check: use the "
            "cluster's --signing-key (or SESSIONWS_SIGNING_KEYS)"
        )
    if args.command == "nodes" and not registry.live_nodes():
        hints.append(
            "no node of this namespace was heard from: check --url, --namespace, "
            "--name-secret and --heartbeat-interval"
        )
    return hints


async def _run(registry: SessionRegistry, args: argparse.Namespace, key: str) -> Outcome:
    # A generous overall deadline for reaching the broker; the transports' own bound
    # (passed in _make_registry) usually ends it first with a more precise message.
    with anyio.CancelScope(deadline=anyio.current_time() + args.connect_timeout + 2.0) as connecting:
        async with registry:
            connecting.deadline = math.inf
            if not registry.healthy:
                raise BrokerUnavailableError(f"no working connection within {args.connect_timeout:g} s")
            outcome = await _execute(registry, args, key)
            outcome.warnings += _hints(registry, args, outcome)
            return outcome
    raise BrokerUnavailableError(f"no connection within {args.connect_timeout:g} s")


def _configure_logging(verbosity: int) -> None:
    level = logging.ERROR if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s: %(message)s")


def _error(message: str) -> None:
    # Messages may quote the URL (the core's do): never its credentials.
    print(f"sessionws: error: {redact(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    _configure_logging(args.verbose)
    url = args.url or os.environ.get("SESSIONWS_URL", "")
    try:
        key = "" if args.command == "nodes" else _read_key(args.key)
        if args.command in ("close", "revoke"):
            validate_close(args.code, args.reason)
        registry = _make_registry(args)
    except (UsageError, ValueError, TypeError) as error:
        _error(str(error))
        return EXIT_USAGE
    try:
        outcome = anyio.run(_run, registry, args, key, backend="asyncio")
    except BrokerUnavailableError as error:
        _error(f"the broker at {redact(url)} is unreachable: {error}")
        return EXIT_UNAVAILABLE
    except BaseExceptionGroup as group:
        unavailable, rest = group.split(BrokerUnavailableError)
        if unavailable is None or rest is not None:
            raise
        _error(f"the broker at {redact(url)} is unreachable: {unavailable.exceptions[0]}")
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        return 130
    for warning in outcome.warnings:
        print(f"sessionws: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps(outcome.data, sort_keys=True))
    else:
        for line in outcome.lines:
            print(line)
    return outcome.exit_code
