"""The wire format between nodes, and the names used on the broker.

A command is a compact JSON object with a version ``v`` (readers drop versions they do
not know and ignore fields they do not know, so additive changes keep ``v`` and stay
readable by the previous release during a rolling deploy). With signing keys, the JSON
is followed by ``\\n<key id>:<HMAC-SHA256 hex>``; JSON never contains a raw newline,
so the split is unambiguous. The first key signs; every key verifies (rotation).

What a command acts on is inside what is signed: ``k``, the hash of the key whose
channel it travels on (keyed by the namespace, so it binds the namespace too), and
``e``, the broker epoch it was issued in. A receiver drops a command whose ``k`` does
not match the channel it arrived on, or whose ``e`` is not the broker's current
epoch: a captured command cannot be replayed on another key, another namespace, or
after the broker lost its data.

Decoding is total: any bytes either decode to a :class:`Command` or raise
:class:`WireError` with a reason. The size is bounded before anything is parsed, and
so is the nesting (a command is one flat object), so no input reaches the JSON
parser's recursion.

Broker names carry a keyed BLAKE2b hash of the key, never the key itself: ids cannot be
read off the broker, and any string is a valid key on every broker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, cast, get_args

__all__ = ("Command", "Names", "WireCodec", "WireError")

WIRE_VERSION: Final = 1

Op = Literal[
    "close",
    "revoke",
    "send",
    "count",
    "reply",
    "hello",
    "beat",
    "leave",
    "who",
    "broadcast",
    "send_to",
    "close_to",
    "members",
]
_OPS: Final = frozenset(get_args(Op))
#: Ops whose effect must not be repeated: they carry a namespace sequence and are
#: checked against replays.
EFFECTFUL_OPS: Final = frozenset({"close", "revoke", "send", "broadcast", "send_to", "close_to"})
#: Ops that act on one socket, sent to the inbox of the node that holds it.
DIRECT_OPS: Final = frozenset({"send_to", "close_to"})

DropReason = Literal[
    "malformed",
    "oversized",
    "version",
    "op",
    "unsigned",
    "forged",
    "unbound",
    "replayed",
    "channel",
    "epoch",
    "sequence",
    "internal",
]

#: Sequences are 63-bit integers (Redis ``INCR``, NATS stream sequences): anything
#: larger cannot have come from a broker.
MAX_SEQUENCE: Final = (1 << 63) - 1
_MAX_COUNT: Final = 1 << 31
#: A ttl or an interval longer than a few centuries is not one a node sent.
_MAX_SECONDS: Final = 1e10
#: Room for the signature line and the fields around a payload.
_ENVELOPE: Final = 4096
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')

_NAMESPACE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class WireError(ValueError):
    """A payload that is dropped; ``reason`` says which kind of bad it was."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: DropReason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Command:
    """One message between nodes.

    ``target`` is the key's hash for commands on the control channel (confirmed
    close, count); commands on a key's own channel leave it empty and name their key
    in ``key`` instead. ``epoch`` is the broker epoch the command was issued in.
    """

    op: Op
    origin: str
    sequence: int = 0
    target: str = ""
    code: int = 0
    reason: str = ""
    exclude: str = ""
    query: str = ""
    data: str | bytes | None = None
    count: int = 0
    observer: bool = False
    ttl: float = 0.0
    interval: float = 0.0
    key: str = ""
    epoch: str = ""


def _to_json(command: Command) -> dict[str, Any]:
    body: dict[str, Any] = {"v": WIRE_VERSION, "op": command.op, "o": command.origin}
    if command.sequence:
        body["s"] = command.sequence
    if command.target:
        body["t"] = command.target
    if command.code:
        body["c"] = command.code
    if command.reason:
        body["r"] = command.reason
    if command.exclude:
        body["x"] = command.exclude
    if command.query:
        body["q"] = command.query
    if isinstance(command.data, bytes):
        body["b"] = base64.b64encode(command.data).decode("ascii")
    elif command.data is not None:
        body["d"] = command.data
    if command.count:
        body["n"] = command.count
    if command.observer:
        body["ob"] = 1
    if command.ttl:
        body["ttl"] = command.ttl
    if command.interval:
        body["i"] = command.interval
    if command.key:
        body["k"] = command.key
    if command.epoch:
        body["e"] = command.epoch
    return body


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(name, default)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise WireError("malformed", f"field {name!r} has type {type(value).__name__}")
    return value


def _bounded(body: dict[str, Any], name: str, kind: type | tuple[type, ...], low: float, high: float) -> Any:
    value = _field(body, name, kind, 0)
    if not low <= value <= high:  # NaN fails this too
        raise WireError("malformed", f"field {name!r} is out of range")
    return value


def _from_json(body: Any) -> Command:
    if not isinstance(body, dict):
        raise WireError("malformed", "not a JSON object")
    version = body.get("v")
    if not isinstance(version, int) or isinstance(version, bool):
        raise WireError("malformed", "no version")
    if version != WIRE_VERSION:
        raise WireError("version", f"wire version {str(version)[:20]} is not {WIRE_VERSION}")
    op = body.get("op")
    if not isinstance(op, str) or op not in _OPS:
        raise WireError("op", f"unknown op {str(op)[:40]!r}")
    op = cast(Op, op)
    data: str | bytes | None = None
    if "b" in body:
        try:
            data = base64.b64decode(_field(body, "b", str, ""), validate=True)
        except ValueError as error:
            raise WireError("malformed", "bad base64 data") from error
    elif "d" in body:
        data = _field(body, "d", str, "")
    origin = _field(body, "o", str, "")
    if not origin:
        raise WireError("malformed", "no origin")
    return Command(
        op=op,
        origin=origin,
        sequence=_bounded(body, "s", int, 0, MAX_SEQUENCE),
        target=_field(body, "t", str, ""),
        code=_field(body, "c", int, 0),
        reason=_field(body, "r", str, ""),
        exclude=_field(body, "x", str, ""),
        query=_field(body, "q", str, ""),
        data=data,
        count=_bounded(body, "n", int, 0, _MAX_COUNT),
        observer=bool(_field(body, "ob", int, 0)),
        ttl=float(_bounded(body, "ttl", (int, float), 0, _MAX_SECONDS)),
        interval=float(_bounded(body, "i", (int, float), 0, _MAX_SECONDS)),
        key=_field(body, "k", str, ""),
        epoch=_field(body, "e", str, ""),
    )


def _as_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def _reject_constant(name: str) -> Any:
    raise WireError("malformed", f"{name} is not a number a command may carry")


def _is_flat(body: bytes) -> bool:
    """Whether ``body`` holds no array and at most one object outside its strings: a
    command is one flat object, and this bounds the parser's nesting before it runs."""
    if b"[" not in body and body.count(b"{") <= 1:
        return True
    outside = _JSON_STRING.sub(b'""', body)
    return b"[" not in outside and outside.count(b"{") <= 1


class WireCodec:
    """Encode, sign, verify and decode commands.

    ``max_size`` bounds what :meth:`decode` reads (the transport's ``max_payload``
    plus room for the envelope); larger payloads are dropped unparsed.
    """

    def __init__(self, signing_keys: Sequence[str | bytes] = (), *, max_size: int = 1 << 20) -> None:
        if isinstance(signing_keys, (str, bytes)):
            raise TypeError("signing_keys must be a list of keys (the first one signs), not one key")
        keys = [_as_bytes(key) for key in signing_keys]
        if any(len(key) < 16 for key in keys):
            raise ValueError("each signing key must be at least 16 bytes long")
        self._keys = {hashlib.sha256(key).hexdigest()[:8].encode(): key for key in keys}
        self._signing = next(iter(self._keys.items()), None)
        self._max_size = max_size + _ENVELOPE

    @property
    def signed(self) -> bool:
        return self._signing is not None

    def encode(self, command: Command) -> bytes:
        body = json.dumps(_to_json(command), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return self.sign(body)

    def encode_unnumbered(self, command: Command) -> tuple[bytes, bytes] | None:
        """``command`` as the two halves around its sequence, for a broker that takes the
        sequence and publishes in one step: ``head + b"<sequence>" + tail`` is what
        :meth:`encode` would give (with fields in another order).

        ``None`` when signing is on: the signature covers the sequence, so the node must
        know it before it can sign.
        """
        if self._signing is not None:
            return None
        if command.sequence:
            command = replace(command, sequence=0)
        body = json.dumps(_to_json(command), separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return b'{"s":', b"," + body[1:]

    def sign(self, body: bytes) -> bytes:
        """Append the signature line to ``body`` (unchanged when signing is off)."""
        if self._signing is None:
            return body
        key_id, key = self._signing
        mac = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        return body + b"\n" + key_id + b":" + mac

    def sign_marker(self, name: str, epoch: str, value: bytes) -> bytes:
        """``value`` with a signature line binding it to the marker's ``name`` and the
        broker ``epoch`` (unchanged when signing is off)."""
        if self._signing is None:
            return value
        key_id, key = self._signing
        return value + b"\n" + key_id + b":" + _marker_mac(key, name, epoch, value)

    def verify_marker(self, name: str, epoch: str, value: bytes) -> bytes | None:
        """The marker's value if its signature holds (or signing is off), else ``None``:
        with signing keys, a marker written without them is not believed."""
        if not self._keys:
            return value
        body, newline, signature = value.rpartition(b"\n")
        key_id, _, mac = signature.partition(b":")
        key = self._keys.get(key_id) if newline else None
        if key is None or not hmac.compare_digest(mac, _marker_mac(key, name, epoch, body)):
            return None
        return body

    def decode(self, payload: bytes) -> Command:
        """Return the command in ``payload`` or raise :class:`WireError` (never anything else)."""
        if not isinstance(payload, bytes | bytearray | memoryview):
            raise WireError("malformed", f"a payload is bytes, not {type(payload).__name__}")
        if len(payload) > self._max_size:
            raise WireError("oversized", f"{len(payload)} bytes is more than a command can be")
        payload = bytes(payload)
        body, newline, signature = payload.rpartition(b"\n")
        if not newline:
            body, signature = payload, b""
        if self._keys:
            if not signature:
                raise WireError("unsigned", "an unsigned command reached a node that requires signatures")
            key_id, _, mac = signature.partition(b":")
            key = self._keys.get(key_id)
            expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode() if key else b""
            if key is None or not hmac.compare_digest(mac, expected):
                raise WireError("forged", "the signature does not verify with any configured key")
        if not _is_flat(body):
            raise WireError("malformed", "nested JSON: a command is one flat object")
        try:
            parsed = json.loads(body, parse_constant=_reject_constant)
        except WireError:
            raise
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise WireError("malformed", "not JSON") from error
        return _from_json(parsed)


def _marker_mac(key: bytes, name: str, epoch: str, value: bytes) -> bytes:
    context = b"sessionws marker\0" + name.encode() + b"\0" + epoch.encode() + b"\0"
    return hmac.new(key, context + value, hashlib.sha256).hexdigest().encode()


class Names:
    """Broker names for one namespace; keys only ever appear as keyed hashes."""

    def __init__(self, namespace: str, secret: str | bytes | None = None) -> None:
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise ValueError(
                f"namespace {namespace!r} must be 1-64 characters of letters, digits, '_' or '-'"
            )
        self.namespace = namespace
        base = _as_bytes(secret) if secret is not None else b""
        self._hash_key = hashlib.sha256(b"sessionws names\0" + namespace.encode() + b"\0" + base).digest()
        self.control = f"{namespace}.nodes"
        self._key_channel_prefix = f"{namespace}.k."

    def key_hash(self, key: str) -> str:
        digest = hashlib.blake2b(
            key.encode("utf-8", "surrogatepass"), key=self._hash_key, digest_size=16
        ).hexdigest()
        return digest

    def channel(self, key_hash: str) -> str:
        return f"{self.namespace}.k.{key_hash}"

    def key_hash_of(self, channel: str) -> str | None:
        """The key hash of a key's channel; ``None`` for any other channel."""
        if not channel.startswith(self._key_channel_prefix):
            return None
        return channel[len(self._key_channel_prefix) :] or None

    def close_marker(self, key_hash: str) -> str:
        """The newest close of every socket of the key."""
        return f"{self.namespace}.close.{key_hash}"

    def partial_close_marker(self, key_hash: str) -> str:
        """The newest close that spared one socket (``exclude=``)."""
        return f"{self.namespace}.closex.{key_hash}"

    def revoke_marker(self, key_hash: str) -> str:
        return f"{self.namespace}.revoke.{key_hash}"

    def inbox(self, node: str) -> str:
        return f"{self.namespace}.node.{node}"
