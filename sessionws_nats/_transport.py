"""``NatsTransport``: sessionws over core NATS pub/sub and a JetStream key-value bucket.

* **Channels** are subjects ``<subject_prefix>.<channel>`` (names escaped by
  :mod:`~sessionws_nats._names`), one subscription per channel, all feeding one
  dispatcher (:mod:`~sessionws_nats._dispatch` has the measurements behind that).
* **Confirmed calls.** ``subscribe``, ``unsubscribe`` and ``publish`` return once the
  server has processed them, proved by the echo of a message sent behind them
  (:mod:`~sessionws_nats._confirm` says why nats-py's ``flush()`` cannot prove it).
  For ``publish`` that means a message lost with a dying connection raises
  :class:`~sessionws.TransportError`, which the registry queues and resends, instead
  of vanishing silently while the other nodes, still connected, never reconcile. It
  costs a round trip per publish (median ~0.24 ms on loopback; ~5k sequential or
  ~24k concurrent publishes per second from one node).
* **Clusters.** In a NATS cluster, interest reaches the other servers asynchronously:
  a publish on another server just after ``subscribe`` returned can be dropped. The
  registry closes that gap with a second marker read after a grace period. Measured
  on a 3-node loopback cluster (``tests/nats/test_cluster.py``, 200 subscribe-then-
  publish trials per run): median 0.03-0.06 ms, p99 0.7-5 ms, max 2-8 ms; one run on
  a busy machine saw 0.7 s. A grace period of 1-2 s leaves ample margin.
* **Markers and the sequence** live in the bucket (:mod:`~sessionws_nats._markers`);
  ``identity`` is the bucket stream's creation time, so a server that lost its store
  (or a deleted bucket) shows up as a new identity.
* **Connection state.** ``connected`` is true once the connection is up, the bucket
  checked and every wanted channel subscribed. nats-py's ``disconnected_cb`` marks the
  transport down at once and calls ``handler.connection_lost()`` (once per outage).
  After nats-py's ``reconnected_cb`` (nats-py resubscribes its subscriptions itself) a
  supervisor task checks the connection, the bucket and its identity, subscribes what
  is still missing, and calls ``handler.connection_restored()``. The supervisor also
  polls the client every ``poll_interval`` (its state and ``stats["reconnects"]``),
  which is all a ready-made client needs: a drop and reconnect shorter than the poll
  still shows as a changed counter.
* **While the broker is down** every call raises :class:`~sessionws.TransportError`
  at once, before anything reaches nats-py's pending buffer, where it would wait for
  the reconnect (or be lost with it).
* **Shutdown** unsubscribes, then ``drain()``\\ s the connection it made; a client
  handed in is left open, without this transport's subscriptions.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import nats.errors
from nats.aio.client import Client

from sessionws.transport import Marker, TransportError, TransportHandler
from sessionws_nats._channels import ChannelSubscriptions
from sessionws_nats._confirm import Confirmations
from sessionws_nats._dispatch import sink_delivers_repeatedly
from sessionws_nats._errors import UnsupportedNatsServerError, broker_errors
from sessionws_nats._markers import MarkerStore
from sessionws_nats._names import validate_prefix
from sessionws_nats._options import CALLBACKS, CONNECT_DEFAULTS, chain_callbacks, split_options

__all__ = ("NatsTransport", "transport_from_url")

logger = logging.getLogger("sessionws.nats")

_DEFAULT_MAX_PAYLOAD = 1 << 20
_DEFAULT_OPEN_TIMEOUT = 5.0
_NOT_OPEN = "use the transport inside `async with transport.open(handler)`"


class NatsTransport:
    """The :class:`~sessionws.Transport` for NATS (nats-py, JetStream key-value).

    Make one with :meth:`from_url` (``nats://``, ``tls://``, several servers
    comma-separated), or hand in a nats-py ``Client`` you connect and close yourself::

        NatsTransport.from_url("nats://n1:4222,n2:4222", reconnect_time_wait=0.5)
        NatsTransport(client, bucket="myapp_sessionws")

    Options:

    * ``bucket``: the KV bucket (default ``"sessionws"``), created when missing;
      ``replicas``: its replicas when created (use 3 on a 3-node cluster).
    * ``subject_prefix``: the subjects' first tokens (default ``"sessionws"``).
    * ``request_timeout``: bound on JetStream calls and confirmations (seconds).
    * ``open_timeout``: how long ``open()`` waits for a first connection before it
      carries on disconnected, reconnecting in the background (``connect_wait``, its
      old name, still works and warns).
    * ``poll_interval``: how often the supervisor checks the client's state.
    * ``shutdown_timeout``: bound on unsubscribing and draining at the end.
    * ``shared_dispatch``: one dispatcher for all subscriptions (default); ``False``
      gives each subscription a nats-py callback task (more memory, no order across
      channels).
    * ``max_payload``: a limit below the server's; otherwise ``max_payload`` is the
      one in the server's INFO (1 MiB by default).

    Every other option of :meth:`from_url` goes to ``nats.connect`` (e.g.
    ``reconnect_time_wait``, ``tls``, ``user_credentials``); its defaults here are
    to reconnect forever every second and to ping every 10 s (a half-open connection
    is noticed in ~30 s, not nats-py's 6 minutes). Callbacks given there run after
    the transport's own. ``no_echo`` is refused: confirmations travel by echo.

    Needs nats-server 2.11+ with JetStream; ``open()`` raises
    :class:`UnsupportedNatsServerError` naming the fix otherwise.
    """

    max_payload: int

    def __init__(
        self,
        client: Client | None = None,
        *,
        servers: Sequence[str] | None = None,
        connect_options: Mapping[str, Any] | None = None,
        bucket: str = "sessionws",
        subject_prefix: str = "sessionws",
        replicas: int = 1,
        request_timeout: float = 5.0,
        open_timeout: float | None = None,
        poll_interval: float = 0.5,
        shutdown_timeout: float = 5.0,
        shared_dispatch: bool = True,
        max_payload: int | None = None,
        interest_grace: float = 1.0,
        connect_wait: float | None = None,
    ) -> None:
        if connect_wait is not None:
            warnings.warn(
                "the NATS transport's option 'connect_wait' is deprecated: "
                "use 'open_timeout' (the same seconds)",
                DeprecationWarning,
                stacklevel=3,
            )
        if open_timeout is None:
            open_timeout = _DEFAULT_OPEN_TIMEOUT if connect_wait is None else connect_wait
        if (client is None) == (servers is None):
            raise TypeError("pass either a nats-py client or servers=[...] (from_url does that)")
        if client is not None and not isinstance(client, Client):
            raise TypeError(f"client must be a nats.aio.client.Client, not {type(client).__name__}")
        if servers is not None and (isinstance(servers, str) or not servers):
            raise TypeError("servers must be a non-empty list of URLs, e.g. ['nats://127.0.0.1:4222']")
        if connect_options is not None and client is not None:
            raise TypeError("connect_options apply only to a connection the transport makes (servers=)")
        if not isinstance(bucket, str) or not bucket or not all(c.isalnum() or c in "_-" for c in bucket):
            raise ValueError(f"bucket must be letters, digits, '_' or '-', not {bucket!r}")
        if not isinstance(replicas, int) or not 1 <= replicas <= 5:
            raise ValueError(f"replicas must be an int from 1 to 5, not {replicas!r}")
        if max_payload is not None and (not isinstance(max_payload, int) or max_payload < 1):
            raise ValueError(f"max_payload must be a positive number of bytes, not {max_payload!r}")
        if not isinstance(interest_grace, int | float) or interest_grace < 0:
            raise ValueError(f"interest_grace must be zero or positive seconds, not {interest_grace!r}")
        for name, value in (
            ("request_timeout", request_timeout),
            ("open_timeout", open_timeout),
            ("poll_interval", poll_interval),
            ("shutdown_timeout", shutdown_timeout),
        ):
            if not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
        options = dict(connect_options or {})
        if "servers" in options:
            raise TypeError("give the servers in the URL (or servers=), not in the connect options")
        if options.get("no_echo"):
            raise ValueError("no_echo=True is not supported: the transport confirms its calls by echo")
        self._given_client = client
        self._servers = list(servers or ())
        self._connect_options = {**CONNECT_DEFAULTS, **options}
        self._subject_prefix = validate_prefix(subject_prefix, "subject_prefix")
        self._bucket = bucket
        self._replicas = replicas
        self._request_timeout = float(request_timeout)
        self._open_timeout = float(open_timeout)
        self._poll_interval = float(poll_interval)
        self._shutdown_timeout = float(shutdown_timeout)
        self._shared_dispatch = shared_dispatch
        self._max_payload_cap = max_payload
        # A NATS cluster spreads a new subscription's interest to the other servers
        # asynchronously (measured on loopback: median 0.03-0.06 ms, p99 up to 5 ms,
        # rare outliers of hundreds of ms on a loaded machine). The registry reads the
        # markers of new keys once more after this grace, closing that gap.
        self.interest_grace = float(interest_grace)
        self.max_payload = min(_DEFAULT_MAX_PAYLOAD, max_payload or _DEFAULT_MAX_PAYLOAD)

        self._client: Client | None = None
        self._handler: TransportHandler | None = None
        self._channels = ChannelSubscriptions(self._subject_prefix, self._deliver)
        self._store = self._new_store()
        self._confirmations = Confirmations(self._request_timeout)
        self._dispatch_checked = False
        self._identity = ""
        self._problem = "not connected yet"
        self._open = self._ready = self._closing = False
        self._stream_suspect = False
        self._reconnects_seen = 0
        self._wake = anyio.Event()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> NatsTransport:
        """A transport for ``nats://host:port`` / ``tls://host:port`` (comma-separate several).

        The query string may set every transport option (``?bucket=app&replicas=3&
        request_timeout=2&shared_dispatch=false``) and the ``nats.connect`` options
        that are text or numbers (``name``, ``reconnect_time_wait``, ``ping_interval``,
        ...); keyword options win over it. Transport options are listed on the class;
        the rest go to ``nats.connect``. Any other name raises :class:`ValueError`.
        """
        servers, transport_options, connect_options = split_options(url, options)
        return cls(servers=servers, connect_options=connect_options, **transport_options)

    def _new_store(self) -> MarkerStore:
        return MarkerStore(
            self._bucket,
            replicas=self._replicas,
            request_timeout=self._request_timeout,
            on_stream_missing=self._on_stream_missing,
        )

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """Whether calls can reach the broker right now."""
        return self._ready

    @property
    def identity(self) -> str:
        """The bucket's stream and its creation time; ``""`` until first connected."""
        return self._identity

    @property
    def client(self) -> Client | None:
        """The nats-py client in use while the transport is open."""
        return self._client

    # ------------------------------------------------------------------ lifetime
    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]:
        """Connect (or adopt the client), set the bucket up, and supervise the connection."""
        return self._run(handler)

    @asynccontextmanager
    async def _run(self, handler: TransportHandler) -> AsyncIterator[None]:
        if self._open:
            raise RuntimeError("this NatsTransport is already open; make one per registry")
        client = self._given_client if self._given_client is not None else Client()
        if client.options.get("no_echo"):
            raise ValueError(
                "a client connected with no_echo=True cannot be used: calls are confirmed by echo"
            )
        self._open, self._ready, self._closing = True, False, False
        self._handler, self._client = handler, client
        self._store, self._confirmations = self._new_store(), Confirmations(self._request_timeout)
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
            self._open = self._ready = False
            self._handler = self._client = None
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
        if not self._ready:
            logger.warning("NATS is not usable at start (%s); retrying in the background", self._problem)
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
            self._problem = (
                f"could not connect to {', '.join(self._servers)}: {error or type(error).__name__}"
            )
            logger.error("%s", self._problem)
        finally:
            connected.set()
            self._wake.set()

    async def _shutdown(self, client: Client) -> None:
        subscriptions = self._channels.take_all()
        confirmations = self._confirmations.take_subscription()
        if not client.is_connected or client.is_draining:
            return
        try:
            for subscription in subscriptions:
                await subscription.unsubscribe()
            await self._store.close()
            if confirmations is not None:
                if self._ready:
                    await self._confirmations.confirm(client)  # the UNSUBs above were processed
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
            self._problem = "the NATS client was closed and will not reconnect"
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
        self._store.forget_connection()
        self._confirmations.fail_all()

    def _notify(self, what: Literal["connection_lost", "connection_restored"]) -> None:
        # Runs in nats-py's reconnect task or our supervisor: a handler bug must stop neither.
        handler = self._handler
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
        if not self._ready:
            return
        self._ready = False
        self._problem = "the NATS connection dropped"
        self._fail_waiters()
        self._notify("connection_lost")

    async def _supervise(self, client: Client) -> None:
        while True:
            with anyio.move_on_after(self._poll_interval):
                await self._wake.wait()
            self._wake = anyio.Event()
            try:
                up = client.is_connected and not client.is_draining
                if self._ready and (not up or client.stats["reconnects"] != self._reconnects_seen):
                    self._lose()
                if not self._ready and up and not self._closing:
                    await self._try_prepare(client, opening=False)
            except Exception:
                logger.exception("checking the NATS connection failed; retrying")

    async def _try_prepare(self, client: Client, *, opening: bool) -> None:
        reconnects = client.stats["reconnects"]
        self._stream_suspect = False
        try:
            await self._prepare(client)
        except TransportError as error:
            self._problem = str(error)
            logger.info("NATS is not ready yet: %s", error)
            return
        except UnsupportedNatsServerError as error:
            if opening:
                raise
            self._problem = str(error)
            logger.error("%s", error)
            return
        if not client.is_connected or client.stats["reconnects"] != reconnects or self._stream_suspect:
            self._wake.set()  # it moved under us: look again
            return
        self._reconnects_seen = reconnects
        self._ready = True
        self._problem = ""
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
        await self._confirmations.subscribe(client, shared_dispatch=shared)
        await self._confirmations.confirm(client)
        identity = await self._store.prepare(client, shared_dispatch=shared)
        with broker_errors("resubscribing"):
            await self._channels.drop_stale()
            while True:
                await self._channels.subscribe(client, self._channels.missing())
                await self._confirmations.confirm(client)
                if self._channels.complete:  # nothing was added while we waited
                    break
        self.max_payload = min(client.max_payload, self._max_payload_cap or client.max_payload)
        self._identity = identity

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

    # ------------------------------------------------------------------ channels
    def _deliver(self, channel: str, payload: bytes) -> None:
        if self._handler is not None:
            self._handler.message_received(channel, payload)

    def _require_ready(self) -> Client:
        if not self._open or self._client is None:
            raise RuntimeError(_NOT_OPEN)
        if not self._ready or not self._client.is_connected:
            raise TransportError(f"NATS is unreachable: {self._problem or 'the connection dropped'}")
        return self._client

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe many channels; returns once the server has processed the subscriptions."""
        if not self._open:
            raise RuntimeError(_NOT_OPEN)
        wanted = self._channels.want(channels)
        client = self._require_ready()
        with broker_errors("subscribe"):
            await self._channels.subscribe(client, wanted)
        await self._confirmations.confirm(client)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Unsubscribe many channels; returns once the server has processed it.

        While the broker is down this only forgets them: the server dropped the
        interest with the connection, and nats-py will not replay it.
        """
        if not self._open or self._client is None:
            raise RuntimeError(_NOT_OPEN)
        client = self._client
        removed = self._channels.forget(channels)
        if not removed or client.is_closed:
            await anyio.lowlevel.checkpoint()
            return
        for index, subscription in enumerate(removed):
            try:
                await subscription.unsubscribe()
            except (nats.errors.Error, OSError) as error:
                self._channels.keep_for_later(removed[index:])
                if self._ready:
                    raise TransportError(
                        f"NATS unsubscribe failed: {error or type(error).__name__}"
                    ) from error
                return
        if self._ready:
            await self._confirmations.confirm(client)

    async def publish(self, channel: str, payload: bytes) -> int | None:
        """Publish to a channel; return once the server has taken the message.

        NATS reports no receiver count, so this returns ``None``.
        """
        if len(payload) > self.max_payload:
            raise ValueError(
                f"payload of {len(payload)} bytes exceeds the broker limit of {self.max_payload}"
            )
        client = self._require_ready()
        with broker_errors("publish"):
            await client.publish(self._channels.subject(channel), payload)
        await self._confirmations.confirm(client)
        return None

    # ------------------------------------------------------------------ markers
    async def current_sequence(self) -> int:
        """The bucket stream's last sequence (the newest sequence taken)."""
        self._require_ready()
        return await self._store.current_sequence()

    async def next_sequence(self) -> int:
        """A new sequence: the revision of a put to the bucket's sequence key."""
        self._require_ready()
        return await self._store.next_sequence()

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        """Store ``value`` under ``key`` for ``ttl`` seconds (rounded up, at least 1 s)."""
        if not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError("a marker's ttl must be a positive number of seconds")
        self._require_ready()
        return await self._store.mark(key, value, ttl)

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        """The markers of many keys (``None`` where missing or expired), in batched gets."""
        self._require_ready()
        if not keys:
            await anyio.lowlevel.checkpoint()
            return []
        return await self._store.read(keys)


def transport_from_url(url: str, **options: Any) -> NatsTransport:
    """The core's URL table calls this for ``nats://`` and ``tls://`` URLs."""
    return NatsTransport.from_url(url, **options)
