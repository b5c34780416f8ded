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

import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio.lowlevel
import nats.errors
from nats.aio.client import Client

from sessionws.transport import Marker, TransportError, TransportHandler
from sessionws_nats._channels import ChannelSubscriptions
from sessionws_nats._connection import NatsConnection
from sessionws_nats._errors import broker_errors
from sessionws_nats._names import validate_prefix
from sessionws_nats._options import CONNECT_DEFAULTS, split_options

__all__ = ("NatsTransport", "transport_from_url")

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

        self._channels = ChannelSubscriptions(self._subject_prefix, self._deliver)
        self._connection = NatsConnection(
            client,
            servers=self._servers,
            connect_options=self._connect_options,
            bucket=bucket,
            replicas=replicas,
            request_timeout=self._request_timeout,
            open_timeout=self._open_timeout,
            poll_interval=self._poll_interval,
            shutdown_timeout=self._shutdown_timeout,
            shared_dispatch=shared_dispatch,
            channels=self._channels,
            on_prepared=self._adopt_limits,
        )

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

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """Whether calls can reach the broker right now."""
        return self._connection.ready

    @property
    def identity(self) -> str:
        """The bucket's stream and its creation time; ``""`` until first connected."""
        return self._connection.identity

    @property
    def client(self) -> Client | None:
        """The nats-py client in use while the transport is open."""
        return self._connection.client

    # ------------------------------------------------------------------ lifetime
    def open(self, handler: TransportHandler) -> AbstractAsyncContextManager[None]:
        """Connect (or adopt the client), set the bucket up, and supervise the connection."""
        return self._connection.run(handler)

    def _adopt_limits(self, client: Client) -> None:
        # Called by the connection each time it is ready: the server's limit may differ.
        self.max_payload = min(client.max_payload, self._max_payload_cap or client.max_payload)

    # ------------------------------------------------------------------ channels
    def _deliver(self, channel: str, payload: bytes) -> None:
        handler = self._connection.handler
        if handler is not None:
            handler.message_received(channel, payload)

    def _require_ready(self) -> Client:
        connection = self._connection
        if not connection.is_open or connection.client is None:
            raise RuntimeError(_NOT_OPEN)
        if not connection.ready or not connection.client.is_connected:
            raise TransportError(f"NATS is unreachable: {connection.problem or 'the connection dropped'}")
        return connection.client

    async def subscribe(self, channels: Sequence[str]) -> None:
        """Subscribe many channels; returns once the server has processed the subscriptions."""
        if not self._connection.is_open:
            raise RuntimeError(_NOT_OPEN)
        wanted = self._channels.want(channels)
        client = self._require_ready()
        with broker_errors("subscribe"):
            await self._channels.subscribe(client, wanted)
        await self._connection.confirmations.confirm(client)

    async def unsubscribe(self, channels: Sequence[str]) -> None:
        """Unsubscribe many channels; returns once the server has processed it.

        While the broker is down this only forgets them: the server dropped the
        interest with the connection, and nats-py will not replay it.
        """
        if not self._connection.is_open or self._connection.client is None:
            raise RuntimeError(_NOT_OPEN)
        client = self._connection.client
        removed = self._channels.forget(channels)
        if not removed or client.is_closed:
            await anyio.lowlevel.checkpoint()
            return
        for index, subscription in enumerate(removed):
            try:
                await subscription.unsubscribe()
            except (nats.errors.Error, OSError) as error:
                self._channels.keep_for_later(removed[index:])
                if self._connection.ready:
                    raise TransportError(
                        f"NATS unsubscribe failed: {error or type(error).__name__}"
                    ) from error
                return
        if self._connection.ready:
            await self._connection.confirmations.confirm(client)

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
        await self._connection.confirmations.confirm(client)
        return None

    # ------------------------------------------------------------------ markers
    async def current_sequence(self) -> int:
        """The bucket stream's last sequence (the newest sequence taken)."""
        self._require_ready()
        return await self._connection.store.current_sequence()

    async def next_sequence(self) -> int:
        """A new sequence: the revision of a put to the bucket's sequence key."""
        self._require_ready()
        return await self._connection.store.next_sequence()

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        """Store ``value`` under ``key`` for ``ttl`` seconds (rounded up, at least 1 s)."""
        if not isinstance(ttl, int | float) or ttl <= 0:
            raise ValueError("a marker's ttl must be a positive number of seconds")
        self._require_ready()
        return await self._connection.store.mark(key, value, ttl)

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        """The markers of many keys (``None`` where missing or expired), in batched gets."""
        self._require_ready()
        if not keys:
            await anyio.lowlevel.checkpoint()
            return []
        return await self._connection.store.read(keys)


def transport_from_url(url: str, **options: Any) -> NatsTransport:
    """The core's URL table calls this for ``nats://`` and ``tls://`` URLs."""
    return NatsTransport.from_url(url, **options)
