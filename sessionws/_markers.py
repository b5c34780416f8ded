"""Markers: what a close or revoke leaves on the broker, so nobody misses it.

Every close and revoke writes a marker (with a new namespace sequence) *before* its
command is published. A registering node reads the markers of its keys after its
subscription is confirmed, and a reconnecting node reads the markers of all its keys:
whatever it did not receive as a message, it finds as a marker. Comparisons use
sequences, never clocks.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sessionws._codes import CLOSE_DEFAULT, CLOSE_REVOKED
from sessionws._protocols import Marker, Transport
from sessionws._wire import Names

__all__ = ("CloseMarker", "KeyMarkers", "MarkerCheck", "encode_marker", "read_key_markers")

logger = logging.getLogger(__name__)

#: Checks a marker's value by its name: the value to believe, or ``None`` (forged).
MarkerCheck = Callable[[str, bytes], bytes | None]
#: A marker's value is a small JSON object; anything larger was not written by a node.
_MAX_MARKER_BYTES = 4096

#: Marker reads are batched in chunks of this many keys (each key has three markers).
READ_CHUNK = 500


@dataclass(frozen=True, slots=True)
class CloseMarker:
    sequence: int
    code: int
    reason: str
    exclude: str
    #: Revocations only: wall-clock expiry, used to size the local cache of revoked
    #: keys (never to order anything).
    expires: float | None = None


@dataclass(frozen=True, slots=True)
class KeyMarkers:
    """The newest closes of a key (of all, and sparing one), and its revocation if in force."""

    close: CloseMarker | None
    partial: CloseMarker | None
    revoke: CloseMarker | None


def encode_marker(code: int, reason: str, exclude: str = "", expires: float | None = None) -> bytes:
    body: dict[str, object] = {"c": code}
    if reason:
        body["r"] = reason
    if exclude:
        body["x"] = exclude
    if expires is not None:
        body["e"] = round(expires, 3)
    return json.dumps(body, separators=(",", ":")).encode()


def _decode(marker: Marker | None, default_code: int) -> CloseMarker | None:
    if marker is None:
        return None
    try:
        if len(marker.value) > _MAX_MARKER_BYTES:
            raise ValueError("too large")
        body = json.loads(marker.value)
        code, reason, exclude = body.get("c", default_code), body.get("r", ""), body.get("x", "")
        expires = body.get("e")
        if not (isinstance(code, int) and isinstance(reason, str) and isinstance(exclude, str)):
            raise TypeError("marker fields have the wrong types")
        if expires is not None and not isinstance(expires, (int, float)):
            raise TypeError("marker expiry has the wrong type")
    except (ValueError, TypeError, AttributeError, RecursionError):
        # A marker we cannot read still says *that* the key was closed: act on it
        # with the default code rather than ignore it.
        logger.warning("unreadable marker value; using the default close code")
        code, reason, exclude, expires = default_code, "", "", None
    return CloseMarker(marker.sequence, code, reason, exclude, None if expires is None else float(expires))


def _checked(check: MarkerCheck, name: str, marker: Marker | None) -> Marker | None:
    if marker is None:
        return None
    value = check(name, marker.value)
    return None if value is None else marker._replace(value=value)


async def read_key_markers(
    transport: Transport, names: Names, key_hashes: Iterable[str], check: MarkerCheck | None = None
) -> dict[str, KeyMarkers]:
    """Read the close and revoke markers of many keys, in batched calls; with ``check``
    (signing on), a marker whose signature does not hold counts as absent."""
    hashes = list(key_hashes)
    result: dict[str, KeyMarkers] = {}
    for start in range(0, len(hashes), READ_CHUNK):
        chunk: Sequence[str] = hashes[start : start + READ_CHUNK]
        names_to_read = [
            name
            for h in chunk
            for name in (names.close_marker(h), names.partial_close_marker(h), names.revoke_marker(h))
        ]
        markers = await transport.read_markers(names_to_read)
        if check is not None:
            pairs = zip(names_to_read, markers, strict=True)
            markers = [_checked(check, name, marker) for name, marker in pairs]
        for index, key_hash in enumerate(chunk):
            result[key_hash] = KeyMarkers(
                close=_decode(markers[3 * index], CLOSE_DEFAULT),
                partial=_decode(markers[3 * index + 1], CLOSE_DEFAULT),
                revoke=_decode(markers[3 * index + 2], CLOSE_REVOKED),
            )
    return result
