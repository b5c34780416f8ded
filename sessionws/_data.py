"""Per-socket data: a small JSON object kept on a handle (``handle.data``).

It is what presence (``members``) reports for each socket, so it must travel on the
broker: JSON-serialisable, with string keys, and small. The registry keeps a copy made
from its JSON encoding, so later changes to the caller's object do not leak in.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

__all__ = ("MAX_DATA_BYTES", "check_data")

#: The largest per-socket data, as compact UTF-8 JSON.
MAX_DATA_BYTES = 4096


def check_data(data: object) -> dict[str, Any]:
    """A detached copy of ``data``, or ``TypeError`` / ``ValueError`` saying what is wrong."""
    if not isinstance(data, Mapping):
        raise TypeError(f"per-socket data must be a mapping (a JSON object), not {type(data).__name__}")
    if not all(isinstance(key, str) for key in data):
        raise TypeError("per-socket data must have string keys")
    try:
        encoded = json.dumps(dict(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(f"per-socket data must be JSON-serialisable: {error}") from error
    size = len(encoded.encode("utf-8"))
    if size > MAX_DATA_BYTES:
        raise ValueError(f"per-socket data takes {size} bytes as JSON; at most {MAX_DATA_BYTES} are allowed")
    copy: dict[str, Any] = json.loads(encoded)
    return copy
