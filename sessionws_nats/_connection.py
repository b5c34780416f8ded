"""One NATS connection's lifetime, for :class:`~sessionws_nats.NatsTransport`.

Connect (or adopt a client), prepare it (the dispatch check, the confirmations
inbox, the bucket, the wanted channels), supervise it (nats-py's callbacks and a
poll of the client), and shut it down. The transport's module docstring says what
``connected`` means and when the handler hears of a loss or a restore.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc
import nats.errors
from nats.aio.client import Client

from sessionws.transport import TransportError, TransportHandler
from sessionws_nats._channels import ChannelSubscriptions
from sessionws_nats._confirm import Confirmations
from sessionws_nats._dispatch import sink_delivers_repeatedly
from sessionws_nats._errors import UnsupportedNatsServerError, broker_errors
from sessionws_nats._markers import MarkerStore
from sessionws_nats._options import CALLBACKS, chain_callbacks

__all__ = ("NatsConnection",)

logger = logging.getLogger("sessionws.nats")


class NatsConnection:
    """The connection under a :class:`~sessionws_nats.NatsTransport`, and its state.

    ``ready`` is what the transport reports as ``connected``; ``store`` and
    ``confirmations`` are new for every :meth:`run`. ``on_prepared`` is called with
    the client each time it is ready, before ``ready`` is set.
    """

    def __init__(
        self,
        client: Client | None,
        *,
        servers: Sequence[str],
        connect_options: Mapping[str, Any],
        bucket: str,
        replicas: int,
        request_timeout: float,
        open_timeout: float,
        poll_interval: float,
        shutdown_timeout: float,
        shared_dispatch: bool,
        channels: ChannelSubscriptions,
        on_prepared: Callable[[Client], None],
    ) -> None:
        self._given_client = client
        self._servers = list(servers)
        self._connect_options = dict(connect_options)
        self._bucket = bucket
        self._replicas = replicas
        self._request_timeout = request_timeout
        self._open_timeout = open_timeout
        self._poll_interval = poll_interval
        self._shutdown_timeout = shutdown_timeout
        self._shared_dispatch = shared_dispatch
        self._channels = channels
        self._on_prepared = on_prepared

        self.client: Client | None = None
        self.handler: TransportHandler | None = None
        self.store = self._new_store()
        self.confirmations = Confirmations(self._request_timeout)
        self._dispatch_checked = False
        self.identity = ""
        self.problem = "not connected yet"
        self.is_open = self.ready = self._closing = False
        self._stream_suspect = False
        self._reconnects_seen = 0
        self._wake = anyio.Event()

    def _new_store(self) -> MarkerStore:
        return MarkerStore(
            self._bucket,
            replicas=self._replicas,
            request_timeout=self._request_timeout,
            on_stream_missing=self._on_stream_missing,
        )

    # ------------------------------------------------------------------ lifetime
    @asynccontextmanager
    async def run(self, handler: TransportHandler) -> AsyncIterator[None]:
        """What ``NatsTransport.open()`` enters: connect, prepare, supervise, shut down."""
        if self.is_open:
            raise RuntimeError("this NatsTransport is already open; make one per registry")
        client = self._given_client if self._given_client is not None else Client()
        if client.options.get("no_echo"):
            raise ValueError(
                "a client connected with no_echo=True cannot be used: calls are confirmed by echo"
            )
        self.is_open, self.ready, self._closing = True, False, False
        self.handler, self.client = handler, client
        self.store, self.confirmations = self._new_store(), Confirmations(self._request_timeout)
        self._dispatch_checked = False
        self._wake = anyio.Event()
        # Errors from open() itself and from the caller's block are re-raised after the
        # task group, so the caller sees them as they are, not inside an ExceptionGroup.
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tasks:
                try:
                    await self._start(client, tasks)
                    try:
                        yield
                    except Exception as error:
                        failure = error
                except UnsupportedNatsServerError as error:
                    failure = error
                finally:
                    self._closing = True
                    tasks.cancel_scope.cancel()
                    with anyio.move_on_after(self._shutdown_timeout, shield=True):
                        await self._shutdown(client)
                    if self._given_client is None and not client.is_closed:
                        with anyio.CancelScope(shield=True):
                            await client.close()
        finally:
            self.is_open = self.ready = False
            self.handler = self.client = None
            self._channels.clear()
        if failure is not None:
            raise failure

    async def _start(self, client: Client, tasks: anyio.abc.TaskGroup) -> None:
        if self._given_client is None:
            connected = anyio.Event()
            tasks.start_soon(self._connect, client, connected)
            with anyio.move_on_after(self._open_timeout):
                await connected.wait()
        if client.is_connected:
            await self._try_prepare(client, opening=True)
        if not self.ready:
            logger.warning("NATS is not usable at start (%s); retrying in the background", self.problem)
        tasks.start_soon(self._supervise, client)

    async def _connect(self, client: Client, connected: anyio.Event) -> None:
        options = dict(self._connect_options)
        theirs = {name: options.pop(name, None) for name in CALLBACKS}
        try:
            await client.connect(
                servers=self._servers,
                disconnected_cb=chain_callbacks(self._on_disconnected, theirs["disconnected_cb"]),
                reconnected_cb=chain_callbacks(self._on_reconnected, theirs["reconnected_cb"]),
                closed_cb=chain_callbacks(self._on_closed, theirs["closed_cb"]),
                error_cb=theirs["error_cb"] or self._on_error,
                **options,
            )
        except (nats.errors.Error, OSError, TimeoutError) as error:
            self.problem = f"could not connect to {', '.join(self._servers)}: {error or type(error).__name__}"
            logger.error("%s", self.problem)
        finally:
            connected.set()
            self._wake.set()

    async def _shutdown(self, client: Client) -> None:
        subscriptions = self._channels.take_all()
        confirmations = self.confirmations.take_subscription()
        if not client.is_connected or client.is_draining:
            return
        try:
            for subscription in subscriptions:
                await subscription.unsubscribe()
            await self.store.close()
            if confirmations is not None:
                if self.ready:
                    await self.confirmations.confirm(client)  # the UNSUBs above were processed
                await confirmations.unsubscribe()
            if self._given_client is None:
                await client.drain()
            # A client the caller gave us stays theirs: no flush() here, which the
            # shutdown's time bound could cancel (see _prepare).
        except (nats.errors.Error, OSError, TimeoutError, TransportError) as error:
            logger.info("NATS shutdown was not clean: %s", error or type(error).__name__)

    # ------------------------------------------------------------------ supervision
    async def _on_disconnected(self) -> None:
        self._fail_waiters()
        if not self._closing:
            self._lose()
        self._wake.set()

    async def _on_reconnected(self) -> None:
        self._wake.set()

    async def _on_closed(self) -> None:
        if not self._closing:
            self._lose()
            self.problem = "the NATS client was closed and will not reconnect"
        self._wake.set()

    async def _on_error(self, error: Exception) -> None:
        if isinstance(error, OSError | TimeoutError | nats.errors.StaleConnectionError):
            logger.debug("NATS connection error: %s", error or type(error).__name__)
        else:
            logger.warning("NATS error: %r", error)

    def _on_stream_missing(self) -> None:
        # The bucket's stream did not answer: it may be gone (deleted, or a server that
        # lost its store). Go lost → prepare (which recreates it, with a new identity)
        # → restored, so the registry reconciles.
        self._stream_suspect = True
        self._lose()
        self._wake.set()

    def _fail_waiters(self) -> None:
        # Answers to requests sent on a dropped connection will not come: fail them now
        # rather than at their timeout.
        self.store.forget_connection()
        self.confirmations.fail_all()

    def _notify(self, what: Literal["connection_lost", "connection_restored"]) -> None:
        # Runs in nats-py's reconnect task or our supervisor: a handler bug must stop neither.
        handler = self.handler
        if handler is None:
            return
        try:
            if what == "connection_lost":
                handler.connection_lost()
            else:
                handler.connection_restored()
        except Exception:
            logger.exception("the transport handler's %s() raised", what)

    def _lose(self) -> None:
        if not self.ready:
            return
        self.ready = False
        self.problem = "the NATS connection dropped"
        self._fail_waiters()
        self._notify("connection_lost")

    async def _supervise(self, client: Client) -> None:
        while True:
            with anyio.move_on_after(self._poll_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                up = client.is_connected and not client.is_draining
                if self.ready and (not up or client.stats["reconnects"] != self._reconnects_seen):
                    self._lose()
                if not self.ready and up and not self._closing:
                    await self._try_prepare(client, opening=False)
            except Exception:
                logger.exception("checking the NATS connection failed; retrying")

    async def _try_prepare(self, client: Client, *, opening: bool) -> None:
        reconnects = client.stats["reconnects"]
        self._stream_suspect = False
        try:
            await self._prepare(client)
        except TransportError as error:
            self.problem = str(error)
            logger.info("NATS is not ready yet: %s", error)
            return
        except UnsupportedNatsServerError as error:
            if opening:
                raise
            self.problem = str(error)
            logger.error("%s", error)
            return
        if not client.is_connected or client.stats["reconnects"] != reconnects or self._stream_suspect:
            self._wake.set()  # it moved under us: look again
            return
        self._reconnects_seen = reconnects
        self.ready = True
        self.problem = ""
        if not opening:
            self._notify("connection_restored")

    async def _prepare(self, client: Client) -> None:
        if not self._dispatch_checked:
            await self._choose_dispatch(client)
        shared = self._channels.shared_dispatch
        # Does the server answer? An echo through our own inbox, not nats-py's flush():
        # a flush that times out (or is cancelled) leaves a cancelled future among
        # nats-py's PONG waiters, and the PONG that comes later kills its read loop,
        # leaving the client connected and deaf (nats-py 2.16).
        await self.confirmations.subscribe(client, shared_dispatch=shared)
        await self.confirmations.confirm(client)
        identity = await self.store.prepare(client, shared_dispatch=shared)
        with broker_errors("resubscribing"):
            await self._channels.drop_stale()
            while True:
                await self._channels.subscribe(client, self._channels.missing())
                await self.confirmations.confirm(client)
                if self._channels.complete:  # nothing was added while we waited
                    break
        self._on_prepared(client)
        self.identity = identity

    async def _choose_dispatch(self, client: Client) -> None:
        shared = self._shared_dispatch
        if shared:
            with broker_errors("checking message dispatch"):
                shared = await sink_delivers_repeatedly(client, client.new_inbox(), self._request_timeout)
            if not shared:
                logger.warning(
                    "this nats-py does not pass every message of a future= subscription on; "
                    "falling back to one callback task per subscription (more memory per channel)"
                )
        self._channels.use_shared_dispatch(shared)
        self._dispatch_checked = True
