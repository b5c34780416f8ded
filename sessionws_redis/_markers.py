"""The marker store: one Lua script takes a sequence and writes a marker, atomically.

``mark`` runs the script: ``INCR`` the namespace sequence and ``SET`` the marker to
``b"<sequence>:" + value`` with ``PX``. All of the transport's keys share the hash
tag ``{prefix}``, so they live in one slot on a Redis Cluster too (the script and
``MGET`` then run on one node).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import NoScriptError

from sessionws.transport import Marker
from sessionws_redis._options import TransportOptions, chunks

__all__ = ("Markers", "parse_marker")

logger = logging.getLogger("sessionws.redis")

_MARK_SCRIPT = b"""\
local sequence = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], string.format('%d:', sequence) .. ARGV[1], 'PX', ARGV[2])
return sequence
"""
_MARK_SHA = hashlib.sha1(_MARK_SCRIPT).hexdigest()

# The marker (unless a newer one is there) and the publish, in one atomic step: no node
# can die between them, and nothing runs in between on the server.
_MARK_AND_PUBLISH_SCRIPT = b"""\
local current = redis.call('GET', KEYS[1])
local newer = false
if current then
  local sequence = tonumber(string.match(current, '^(%d+):'))
  newer = sequence ~= nil and sequence >= tonumber(ARGV[1])
end
if not newer then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
end
return redis.call('PUBLISH', ARGV[4], ARGV[5])
"""
_MARK_AND_PUBLISH_SHA = hashlib.sha1(_MARK_AND_PUBLISH_SCRIPT).hexdigest()


# The sequence, the marker and the publish in one step, for unsigned commands: the
# command's JSON arrives in two halves and the script splices the sequence in.
_NUMBERED_SCRIPT = b"""\
local sequence = redis.call('INCR', KEYS[1])
local number = string.format('%d', sequence)
redis.call('SET', KEYS[2], number .. ':' .. ARGV[1], 'PX', ARGV[2])
return {sequence, redis.call('PUBLISH', ARGV[3], ARGV[4] .. number .. ARGV[5])}
"""
_NUMBERED_SHA = hashlib.sha1(_NUMBERED_SCRIPT).hexdigest()


def parse_marker(raw: bytes | None) -> Marker | None:
    """Decode ``b"<sequence>:" + value`` as stored by the mark script."""
    if raw is None:
        return None
    sequence, separator, value = bytes(raw).partition(b":")
    if not separator or not sequence.isdigit():
        logger.warning("ignoring a marker that was not written by sessionws_redis")
        return None
    return Marker(int(sequence), value)


def _milliseconds(ttl: float) -> int:
    if not isinstance(ttl, int | float) or not 0 < ttl < math.inf:
        raise ValueError(f"a marker's ttl must be a positive number of seconds, got {ttl!r}")
    return max(1, math.ceil(ttl * 1000))


class Markers:
    """The marker store and sequence, over any client with ``execute_command``."""

    def __init__(self, execute: Callable[..., Awaitable[Any]], options: TransportOptions) -> None:
        self._execute = execute
        self._options = options

    async def _run(self, script: bytes, sha: str, key_count: int, *keys_and_args: Any) -> Any:
        """Run a script by its SHA1, loading it with EVAL where the server lacks it."""
        try:
            return await self._execute("EVALSHA", sha, key_count, *keys_and_args)
        except NoScriptError:
            # A restarted server forgot the script; EVAL loads it again.
            return await self._execute("EVAL", script, key_count, *keys_and_args)

    async def current_sequence(self) -> int:
        value = await self._execute("GET", self._options.sequence_key)
        return 0 if value is None else int(value)

    async def next_sequence(self) -> int:
        return int(await self._execute("INCR", self._options.sequence_key))

    async def mark(self, key: str, value: bytes, ttl: float) -> int:
        marker_key = self._options.marker_key(key)
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"a marker's value must be bytes, got {type(value).__name__}")
        keys_and_args = (self._options.sequence_key, marker_key, bytes(value), _milliseconds(ttl))
        return int(await self._run(_MARK_SCRIPT, _MARK_SHA, 2, *keys_and_args))

    async def mark_and_publish(
        self, key: str, value: bytes, ttl: float, sequence: int, channel: str, payload: bytes
    ) -> int:
        """Set the marker to ``sequence`` (unless a newer one is there) and publish, atomically."""
        arguments = (
            self._options.marker_key(key),
            str(int(sequence)),
            bytes(value),
            _milliseconds(ttl),
            channel,
            bytes(payload),
        )
        return int(await self._run(_MARK_AND_PUBLISH_SCRIPT, _MARK_AND_PUBLISH_SHA, 1, *arguments))

    async def mark_and_publish_numbered(
        self, key: str, value: bytes, ttl: float, channel: str, head: bytes, tail: bytes
    ) -> tuple[int, int]:
        """Take a sequence, set the marker and publish ``head + sequence + tail``, atomically."""
        keys_and_args = (
            self._options.sequence_key,
            self._options.marker_key(key),
            bytes(value),
            _milliseconds(ttl),
            channel,
            bytes(head),
            bytes(tail),
        )
        sequence, receivers = await self._run(_NUMBERED_SCRIPT, _NUMBERED_SHA, 2, *keys_and_args)
        return int(sequence), int(receivers)

    async def read_markers(self, keys: Sequence[str]) -> list[Marker | None]:
        marker_keys = [self._options.marker_key(key) for key in keys]
        markers: list[Marker | None] = []
        for chunk in chunks(marker_keys):
            markers.extend(parse_marker(raw) for raw in await self._execute("MGET", *chunk))
        return markers
