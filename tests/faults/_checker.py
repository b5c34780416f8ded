"""The invariants a run must keep, read off its history and its clients.

Each check returns :class:`Violation` s, each naming the invariant, the issue-11 bug
it matches (``bug N``) or ``new`` when it matches none, and the entries of the
history that led to it. The checks look at outcomes only (which sockets are open,
which closed with which code, what a report said); the one duration they read is a
call's, against its timeout plus a generous slack.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sessionws import CLOSE_DEFAULT, CLOSE_REVOKED, CLOSE_UNKNOWN_STATE
from tests.cluster._clients import ABNORMAL
from tests.cluster._cluster import HEARTBEAT, SILENCE_WINDOW
from tests.faults._history import Entry, History
from tests.faults._workload import Tracked

__all__ = ("BUGS", "Checker", "Violation")

#: The bugs issue 11 lists, by the tag a violation carries.
BUGS = {
    "bug 1": "the outbox is flushed only on reconnect",
    "bug 2": "a revoke is forgotten when the broker loses its data",
    "bug 3": "every Redis restart looks like a data loss (1012 for everyone)",
    "bug 4": "after a data loss, legitimate commands are dropped as replays",
    "bug 5": "a dead node never produces member_left",
    "bug 6": "a confirmed close is complete while a node holding the key never answered",
    # Found by the campaign, beyond issue 11's list:
    "new 1": "a node that has just started reports complete=True before it knows its peers",
    "new 2": "a NATS flush that timed out kills nats-py's read loop: the node stays connected, deaf",
    "new 3": "a Redis Cluster shard keeps a key subscription its node gave up (after a redirected one)",
}
#: What nats-py 2.16 logs when a PONG meets the cancelled future of a timed-out flush.
NATS_DEAF = "in _process_pong"
_CLOSING_VERBS = {"close": CLOSE_DEFAULT, "revoke": CLOSE_REVOKED, "rotate": CLOSE_DEFAULT}


@dataclass
class Violation:
    invariant: str
    bug: str  # "bug N" or "new"
    message: str
    entries: list[Entry] = field(default_factory=list)

    def render(self) -> str:
        cause = f"{self.bug}: {BUGS[self.bug]}" if self.bug in BUGS else "matches no listed bug"
        lines = [f"[{self.invariant}] ({cause}) {self.message}"]
        lines += [f"    {entry.line()}" for entry in self.entries]
        return "\n".join(lines)


class Checker:
    """The invariants of one run (see the module docstring)."""

    def __init__(
        self, history: History, sockets: Sequence[Tracked], *, call_bound: float, grace: float
    ) -> None:
        self.history = history
        self.sockets = sockets
        self.call_bound = call_bound
        self.grace = grace

    def _registered(self) -> list[Tracked]:
        return [tracked for tracked in self.sockets if tracked.socket.handle]

    def _since(self, tracked: Tracked) -> float:
        return self.history.at(tracked.socket.registered_at) or 0.0

    def _closed(self, tracked: Tracked) -> float | None:
        return self.history.at(tracked.socket.closed_at)

    def _verbs(self, *names: str) -> list[Entry]:
        return [e for e in self.history.entries if e.actor == "workload" and e.what in names]

    # ------------------------------------------------------------------ converging checks
    def stale_sockets(self) -> list[Violation]:
        """No socket registered before a close or revoke of its key is still open."""
        found: list[Violation] = []
        verbs = [verb for verb in self._verbs(*_CLOSING_VERBS) if verb.detail.get("status") == 200]
        for tracked in self._registered():
            if tracked.socket.closed.is_set():
                continue
            for verb in verbs:
                if verb.detail.get("key") not in tracked.keys or self._since(tracked) >= verb.start:
                    continue
                queued = bool(verb.answer.get("queued"))
                if queued and self.history.node_killed_after(verb.target, verb.start):
                    continue  # its outbox died with the node: a documented loss
                bug = "bug 1" if verb.answer.get("queued") else "new"
                found.append(
                    Violation(
                        "closed key still open",
                        bug,
                        f"{tracked.socket!r} registered at {self._since(tracked):.3f} under {verb.what} "
                        f"#{verb.number}'s key is still open",
                        [tracked.connect, verb],
                    )
                )
                break
        return found + self._revoked_left_open()

    def _probed_cut_off(self, tracked: Tracked) -> bool:
        """A registered probe of a revoked id on a node cut off from the broker (it cannot
        know the revocation; its reconcile must close the socket once it is back)."""
        probe, node = tracked.connect, f"node{tracked.node + 1}"
        return tracked.probe_of is not None and self.history.broker_disrupted(
            node, probe.start, probe.end or probe.start
        )

    def _revoked_left_open(self) -> list[Violation]:
        return [
            Violation(
                "revoked registration left open",
                "bug 2" if self.history.data_losses() else "new",
                f"{tracked.socket!r} registered a revoked id while cut off from the broker "
                "and is still open after it reconnected",
                [entry for entry in (tracked.probe_of, tracked.connect) if entry is not None],
            )
            for tracked in self._registered()
            if self._probed_cut_off(tracked)
            and not tracked.socket.closed.is_set()
            and tracked.left_at is None
            and tracked.probe_of is not None
            and not self._revocation_lost(tracked.probe_of, self.history.now())
        ]

    def _revocation_lost(self, revoke: Entry, until: float) -> bool:
        """Whether nothing may know ``revoke`` any more at ``until``: its node died while
        it sat in the outbox, or died and the broker lost its data afterwards."""
        if not self.history.node_killed_after(revoke.target, revoke.start, until):
            return False
        if revoke.answer.get("queued"):
            return True  # the test node's rotate says whether its revoke waits in the outbox
        return any(revoke.start <= (loss.end or 0) <= until for loss in self.history.data_losses())

    @staticmethod
    def outboxes(stats: dict[str, dict[str, Any]]) -> list[Violation]:
        """Every node's outbox is empty."""
        return [
            Violation("outbox not empty", "bug 1", f"{name} holds {node['outbox']} commands: {_brief(node)}")
            for name, node in stats.items()
            if node.get("outbox")
        ]

    # ------------------------------------------------------------------ final checks
    def revoked_registrations(self) -> list[Violation]:
        """No revoked key registers while its revocation lives somewhere in the cluster."""
        found: list[Violation] = []
        for tracked in self._registered():
            revoke = tracked.probe_of
            if revoke is None or revoke.end is None or tracked.connect.start < revoke.end:
                continue
            if tracked.keys[0] != revoke.detail.get("key"):
                raise AssertionError(f"the workload probed {tracked.keys[0]} for #{revoke.number}")
            probe = tracked.connect
            node = f"node{tracked.node + 1}"
            if self._probed_cut_off(tracked):
                continue  # checked by _revoked_left_open
            issuer = revoke.target
            queued = revoke.answer.get("queued")
            if queued and self.history.node_killed_after(issuer, revoke.start, probe.start):
                continue  # its node died while it waited in the outbox: a documented loss
            if queued and node != issuer and self.history.broker_disrupted(issuer, revoke.start, probe.start):
                continue  # the marker waits in the issuer's outbox
            losses = [
                loss for loss in self.history.data_losses() if revoke.start <= (loss.end or 0) <= probe.start
            ]
            bug = "new"
            if losses:
                if self.history.node_killed_after(issuer, revoke.start):
                    continue  # the only node sure to know it died: the revocation is gone
                last = losses[-1].end or 0.0
                if probe.start < last + self.grace or self.history.broker_disrupted(
                    issuer, last, probe.start
                ):
                    continue  # the issuer has not re-asserted it yet
                if self.history.node_disrupted(issuer, last, probe.start):
                    continue
                bug = "bug 2"
            found.append(
                Violation(
                    "revoked key registered",
                    bug,
                    f"{tracked.socket!r} registered the key revoked by #{revoke.number}"
                    + (f" after data loss #{losses[-1].number}" if losses else ""),
                    [revoke, *losses, probe],
                )
            )
        return found

    def unexplained_closes(self) -> list[Violation]:
        """No socket is closed that nobody closed (1012 only after a real data loss)."""
        found: list[Violation] = []
        verbs = self._verbs(*_CLOSING_VERBS)
        for tracked in self._registered():
            closed, code = self._closed(tracked), tracked.socket.code
            if closed is None or (tracked.left_at is not None and tracked.left_at <= closed):
                continue
            since, node = self._since(tracked), f"node{tracked.node + 1}"
            if code == ABNORMAL and any(
                since <= kill.start <= closed for kill in self.history.faults("node-kill", target=node)
            ):
                continue
            if any(
                verb.detail.get("key") in tracked.keys
                and verb.start <= closed
                and _CLOSING_VERBS[verb.what] == code
                for verb in verbs
            ):
                continue
            # A node learns of a restart when it reconnects: a socket it registered while
            # the broker was down is as old as the restart.
            restarts = [
                kill
                for kill in self.history.faults("broker-kill")
                if kill.start <= closed
                and (
                    kill.end is None
                    or kill.end >= since
                    or self.history.node_disrupted(node, kill.start, since)
                    or self.history.broker_disrupted(node, kill.end, since)
                )
            ]
            losses = [kill for kill in restarts if not kill.detail.get("data_kept", True)]
            if code == CLOSE_UNKNOWN_STATE and losses:
                continue
            bug = "bug 3" if code == CLOSE_UNKNOWN_STATE and restarts else "new"
            found.append(
                Violation(
                    "socket closed by nobody",
                    bug,
                    f"{tracked.socket!r} (registered {since:.3f}) closed at {closed:.3f} with {code} "
                    f"{tracked.socket.reason!r}; no verb, node kill or data loss explains it",
                    [tracked.connect, *restarts],
                )
            )
        return found

    def hung_calls(self) -> list[Violation]:
        """No verb call, and no websocket registration, ran past its timeout plus slack
        (unless its node was frozen)."""
        found = []
        for verb in self._verbs("close", "revoke", "rotate", "send", "count", "login", "connect", "probe"):
            took = verb.duration
            if took is None or took <= self.call_bound:
                continue
            if self.history.node_disrupted(verb.target, verb.start, verb.end or verb.start):
                continue
            found.append(Violation("call hung", "new", f"#{verb.number} took {took:.1f} s", [verb]))
        return found

    def false_completes(self) -> list[Violation]:
        """A ``complete=True`` report was true: every node holding the key's sockets answered."""
        found = []
        for verb in self._verbs("close"):
            report = verb.answer
            if not report.get("complete"):
                continue
            for tracked in self._registered():
                closed = self._closed(tracked)
                if verb.detail.get("key") not in tracked.keys or f"node{tracked.node + 1}" == verb.target:
                    continue
                if self._since(tracked) >= verb.start or (closed is not None and closed < verb.start):
                    continue
                if tracked.node_id in (report.get("nodes") or {}):
                    continue
                node = f"node{tracked.node + 1}"
                if any(
                    kill.start <= verb.start
                    for kill in self.history.faults("node-kill", target=node)
                    if kill.start >= self._since(tracked)
                ):
                    continue  # its node was dead, the socket with it
                # Silent longer than its window (three missed beats, then 30 intervals):
                # no longer expected, the documented limit.
                if verb.start - self.history.silent_since(node, verb.start) > SILENCE_WINDOW + 3 * HEARTBEAT:
                    continue
                # A node paused or cut off falls silent: it must stay expected (bug 6).
                window = (verb.start - 1.0, verb.end or verb.start)
                paused = self.history.node_disrupted(node, *window) or self.history.broker_disrupted(
                    node, *window
                )
                fresh = any(
                    kill.end is not None and 0 <= verb.start - kill.end <= 3.0
                    for kill in self.history.faults("node-kill", target=verb.target)
                )
                found.append(
                    Violation(
                        "complete report was not",
                        "bug 6" if paused else "new 1" if fresh else "new",
                        f"#{verb.number} said complete, but {tracked.node_id} holding {tracked.socket!r} "
                        f"did not answer (answers: {sorted(report.get('nodes') or {})})",
                        [tracked.connect, verb],
                    )
                )
                break
        return found

    def logs(self, logs: dict[str, str]) -> list[Violation]:
        """No traceback in any node's log; no command dropped as a replay."""
        found = []
        lost = bool(self.history.data_losses())
        for name, text in logs.items():
            lines = text.splitlines()
            for index, line in enumerate(lines):
                if line.startswith("Traceback"):
                    context = "\n      ".join(lines[max(0, index - 2) : index + 25])
                    bug = "new 2" if NATS_DEAF in context else "new"
                    found.append(Violation("traceback in a node log", bug, f"{name}:\n      {context}"))
            replays = [line for line in lines if "dropped a broker message (replayed)" in line]
            if replays:
                message = f"{name} dropped {len(replays)} commands as replays, first: {replays[0]}"
                found.append(Violation("command dropped as a replay", "bug 4" if lost else "new", message))
        return found

    @staticmethod
    def membership(logs: dict[str, dict[str, Any]]) -> list[Violation]:
        """Every membership change emits its event once: per peer, each node saw
        ``member_joined`` and ``member_left`` alternate, and a peer that is gone (killed,
        restarted under a new id) ended with ``member_left`` on every node that saw it."""
        current = {str(log.get("node")) for log in logs.values()}
        found = []
        for name, log in logs.items():
            last: dict[str, str] = {}
            for event in log.get("events") or []:
                peer, kind = str(event["node"]), str(event["event"])
                if last.get(peer, "member_left") == kind:
                    found.append(
                        Violation(
                            "membership event twice",
                            "bug 5",
                            f"{name} saw {kind} of {peer} twice in a row (or a leave before any join)",
                        )
                    )
                last[peer] = kind
            for peer, kind in last.items():
                if peer not in current and kind != "member_left":
                    found.append(
                        Violation("no member_left", "bug 5", f"{name} never saw {peer} (gone) leave")
                    )
        return found

    def leaks(
        self, stats: dict[str, dict[str, Any]], broker_channels: Iterable[str] | None
    ) -> list[Violation]:
        """After all clients left: no socket, no key subscription on any node or the broker."""
        found = [
            Violation("registry not empty", "new", f"{name}: {_brief(node)}")
            for name, node in stats.items()
            if node.get("sockets") or node.get("subscriptions")
        ]
        left = sorted(broker_channels or [])
        if left:
            # Seen on Redis Cluster only, after a shard told a node its subscription moved.
            bug = "new 3" if self.history.kind == "redis-cluster" else "new"
            found.append(
                Violation("broker subscriptions left", bug, f"{len(left)} key channels: {left[:10]}")
            )
        return found


def _brief(stats: dict[str, Any]) -> str:
    names = ("sockets", "subscriptions", "outbox", "outbox_sent", "broker", "healthy", "dropped_by_reason")
    return ", ".join(f"{name}={stats.get(name)}" for name in names)
