"""Registry names → NATS subjects and KV keys.

The registry's channel and marker names look like ``myapp.k.3f2a...`` or
``myapp.close.3f2a...`` (characters ``[A-Za-z0-9_.:-]``), but a transport must accept
any string. Each dot-separated token is escaped so the result is a valid subject
*and* a valid KV key: bytes outside ``[A-Za-z0-9_-]`` become ``=XX`` (upper-case hex
of the UTF-8 byte) and an empty token becomes a lone ``=``. Typical names pass through
unchanged, so they stay readable in ``nats sub`` and ``nats kv ls``, and the encoding
is injective (``=`` only ever starts an escape or stands alone), so two names never
share a subject or a key.
"""

from __future__ import annotations

import re

__all__ = ("decode_name", "encode_name", "validate_prefix")

_PLAIN = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")
_PREFIX_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


def _encode_token(token: str) -> str:
    if not token:
        return "="
    raw = token.encode()
    if all(byte in _PLAIN for byte in raw):
        return token
    return "".join(chr(byte) if byte in _PLAIN else f"={byte:02X}" for byte in raw)


def _decode_token(token: str) -> str:
    if token == "=":
        return ""
    if "=" not in token:
        return token
    raw = bytearray()
    position = 0
    for match in _ESCAPE.finditer(token):
        raw += token[position : match.start()].encode()
        raw.append(int(match.group(1), 16))
        position = match.end()
    raw += token[position:].encode()
    return raw.decode()


def encode_name(name: str) -> str:
    """The subject/KV-key form of a registry name (dot-separated tokens kept)."""
    if not isinstance(name, str):
        raise TypeError(f"a channel or marker name must be a str, not {type(name).__name__}")
    if _PLAIN_NAME.fullmatch(name):
        return name  # the common case: nothing to escape
    return ".".join(_encode_token(token) for token in name.split("."))


def decode_name(encoded: str) -> str:
    """The inverse of :func:`encode_name`."""
    return ".".join(_decode_token(token) for token in encoded.split("."))


def validate_prefix(prefix: str, what: str) -> str:
    """Check a subject prefix or KV key prefix: dot-separated ``[A-Za-z0-9_-]`` tokens."""
    if not isinstance(prefix, str):
        raise TypeError(f"{what} must be a str, not {type(prefix).__name__}")
    if not all(_PREFIX_TOKEN.fullmatch(token) for token in prefix.split(".")):
        raise ValueError(
            f"{what} {prefix!r} is not a valid NATS subject prefix: use dot-separated tokens of "
            "letters, digits, '_' and '-' (e.g. 'sessionws' or 'apps.sessionws')"
        )
    return prefix
