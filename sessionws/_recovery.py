"""After the broker was away: find what was missed, and close what must be closed.

A reconnect reads the markers of every key this node holds (the reconcile): a close
or revoke it did not hear as a message it finds as a marker. An outage longer than
the markers live, or a broker that lost its data (a new epoch), leaves nothing to
read: then every local socket is closed with 1012, and after a data loss the
revocations this node knows are written again. Newly subscribed keys have their
markers applied here too, and read once more after the transport's interest grace.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import anyio

from sessionws._codes import CLOSE_UNKNOWN_STATE
from sessionws._errors import TransportError
from sessionws._handles import Handle, KeyState
from sessionws._markers import KeyMarkers
from sessionws._membership import Presence
from sessionws._node import Node
from sessionws._outbound import Outbound, Outgoing

__all__ = ("Recovery",)

logger = logging.getLogger(__name__)


class Recovery:
    """The broker's losses and returns, as the transport reports them."""

    def __init__(self, node: Node, outbound: Outbound, presence: Presence, interest_grace: float) -> None:
        self._node = node
        self._table = table = node.table
        self._delivery = node.delivery
        self._outbound = outbound
        self._presence = presence
        self._replay = node.replay
        self._revocations = node.revocations
        self.interest_grace = interest_grace
        self.recovering = False
        self._recover_again = False
        self._reassert_pending = False
        #: The broker's epoch this node last reconciled with.
        self._identity: str | None = None
        table.apply_markers = self.apply_markers
        table.after_subscribe = self.after_subscribe

    async def learn_broker(self) -> None:
        """At start: the broker's epoch and sequence, then say hello."""
        node = self._node
        identity = node.transport.identity
        sequence = await node.transport.current_sequence()
        if self._identity is None:
            self._replay.reset(sequence, identity)
        self._identity = identity
        node.note_sequence(sequence)
        node.broker_back()
        self._presence.unsettle()
        await self._presence.greet()

    def connection_lost(self) -> None:
        node = self._node
        if not node.connected:
            return
        node.broker_lost()
        node.stats["broker_losses"] += 1
        logger.warning("lost the broker connection; serving locally and queueing remote commands")
        node.emit("broker_lost")

    def connection_restored(self) -> None:
        tasks = self._node.tasks
        if tasks is None:
            return
        if self.recovering:
            self._recover_again = True  # the running recovery starts over when it ends
            return
        self.recovering = True
        tasks.start_soon(self._recover)

    async def _recover(self) -> None:
        """After a reconnect: find what was missed, close what must be closed, flush the outbox.

        A broker can say "connected" and still refuse commands for a while (a Redis
        Cluster electing, JetStream choosing a leader): while the transport stays
        connected, the recovery is retried with a backoff instead of waiting for a
        reconnect that will not come.
        """
        delay = 0.05
        try:
            while True:
                self._recover_again = False
                try:
                    await self._recover_once()
                except TransportError:
                    if not self._node.transport.connected:
                        logger.info("the broker dropped again while reconciling")
                        return  # the next connection_restored starts over
                    logger.info("the broker refused the reconcile; retrying in %.2fs", delay)
                    await anyio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if not self._recover_again:
                    return
        except Exception:
            logger.exception("reconciling after a reconnect failed; closing local sockets with 1012")
            self.close_unknown_state(self._table.all_handles())
        finally:
            self.recovering = False

    async def _recover_once(self) -> None:
        node = self._node
        identity = node.transport.identity
        lost_at = node.lost_at
        outage = time.monotonic() - lost_at if lost_at is not None else 0.0
        sequence = await node.transport.current_sequence()
        # A new epoch says the broker lost the namespace's data. (A broker that kept its
        # epoch but lost the tail of its writes — JetStream between syncs, Redis without
        # appendfsync always — would reuse sequences: see the limits in the guarantees.)
        if sequence < node.known_sequence:
            logger.warning(
                "the broker's sequence went back from %d to %d: it lost recent writes",
                node.known_sequence,
                sequence,
            )
        if self._identity is not None and identity != self._identity:
            # Close first: nothing below may depend on the broker answering.
            logger.warning("the broker lost its data; closing local sockets with 1012")
            self.close_unknown_state(self._table.all_handles())
            # The membership stays: the other nodes did not go anywhere, and clearing it
            # would make confirmed commands complete without them until they beat again.
            node.known_sequence = sequence
            if self._replay.epoch != identity:
                # Every command of the new epoch is new to this node: commands that
                # faster nodes numbered before this moment may still be on their way.
                # (A command of the new epoch may already have started the guard afresh.)
                self._replay.reset(0, identity)
            self._identity = identity
            self._reassert_pending = True
        elif outage > node.options.marker_ttl:
            logger.warning("the outage outlived the markers; closing local sockets with 1012")
            self.close_unknown_state(self._table.all_handles())
        else:
            await self._reconcile()
        if self._reassert_pending:
            # Kept apart from the branch above: a retry after a failed write (the broker
            # refused it) finds the same epoch, and must still write the revocations.
            await self._reassert_revocations()
            self._reassert_pending = False
        self._identity = identity
        node.note_sequence(await node.transport.current_sequence())
        if lost_at is not None:
            self._presence.membership.shift(time.monotonic() - lost_at)
        node.broker_back()
        node.stats["reconciles"] += 1
        node.emit("broker_restored", outage=outage)
        self._outbound.wake()
        # While it was away this node heard no heartbeat: questions wait until the answers
        # to its hello (which name the nodes that fell silent meanwhile) are in.
        self._presence.unsettle()
        await self._presence.greet()

    async def _reassert_revocations(self) -> None:
        """After a data loss, write again the revocations this node knows and the
        broker forgot (each with the time it has left), so that a revoked key stays
        refused on every node — as long as one live node remembers it."""
        known = self._revocations.all_in_force()
        if not known:
            return
        markers = await self._node.read_markers([key_hash for key_hash, _ in known])
        written = 0
        for key_hash, (expires, code, reason) in known:
            if markers[key_hash].revoke is None and expires > time.monotonic():
                outgoing = Outgoing("revoke", key_hash, code, reason, ttl=expires - time.monotonic())
                await self._outbound.send(outgoing)
                written += 1
        logger.warning("re-asserted %d revocations the broker had lost", written)
        self._node.emit("revocations_reasserted", count=written)

    async def _reconcile(self) -> None:
        states = [state for state in self._table.by_key.values() if state.handles]
        closed = await self.check_markers(states)
        logger.info("reconciled %d keys after a reconnect; %d sockets closed", len(states), closed)
        self._node.emit("reconciled", keys=len(states), closed=closed)

    def apply_markers(self, state: KeyState, markers: KeyMarkers) -> None:
        """Remember what a key's markers say (its closes, its revocation)."""
        note_sequence = self._node.note_sequence
        for close in (markers.close, markers.partial):
            if close is not None:
                state.note_close(close)
                note_sequence(close.sequence)
        if markers.revoke is not None:
            revoke = markers.revoke
            note_sequence(revoke.sequence)
            self._revocations.remember_marker(state.hash, revoke.expires, revoke.code, revoke.reason)

    async def check_markers(self, states: list[KeyState]) -> int:
        """Read the markers of ``states``; close what a missed close or revoke should have."""
        markers = await self._node.read_markers([state.hash for state in states])
        closed = 0
        for state in states:
            found = markers.get(state.hash)
            if found is None:
                continue
            self.apply_markers(state, found)
            for handle in list(state.handles):
                if handle.pending:
                    continue  # its registration checks the markers itself
                if found.revoke is not None:
                    closed += self._delivery.close(handle, found.revoke.code, found.revoke.reason)
                elif (close := state.close_for(handle)) is not None:
                    closed += self._delivery.close(handle, close.code, close.reason)
        return closed

    def after_subscribe(self, states: list[KeyState]) -> None:
        """Where interest spreads asynchronously (a NATS cluster), read the markers once
        more after the grace period: a close published on another server before our
        subscription reached it is found then."""
        if self.interest_grace > 0 and self._node.tasks is not None:
            self._node.tasks.start_soon(self._recheck, states)

    async def _recheck(self, states: list[KeyState]) -> None:
        await anyio.sleep(self.interest_grace)
        by_key = self._table.by_key
        live = [state for state in states if state.handles and by_key.get(state.key) is state]
        if not live or not self._node.connected:
            return  # a reconnect reconciles every key anyway
        try:
            closed = await self.check_markers(live)
        except TransportError:
            return
        if closed:
            logger.info("the second marker read closed %d sockets", closed)

    def close_unknown_state(self, handles: Iterable[Handle]) -> None:
        stats = self._node.stats
        for handle in list(handles):
            if self._delivery.close(handle, CLOSE_UNKNOWN_STATE, "reconnect to re-authorise"):
                stats["closed_unknown_state"] += 1
        for state in self._table.by_key.values():
            state.forget_closes()
