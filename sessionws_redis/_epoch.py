"""What a pub/sub connection learns as it connects: the namespace's epoch and the server's run id.

The link that reaches the transport's keys reads the *epoch*, a random token kept
under ``{prefix}:epoch`` and written once (``SET`` only where missing, in one
script) by the first node to find none. A restart that kept its data (AOF, RDB)
keeps the epoch; a restart that lost it loses the epoch too, and the first node
back writes a new one. Every node of the namespace then reads the same new epoch:
that is the transport's ``identity``. (A server's ``run_id`` would change on every
restart, data kept or not.)
"""

from __future__ import annotations

import math
import secrets

import anyio
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

from sessionws.transport import TransportError

__all__ = ("handshake",)

# The epoch: read it, or write ours where there is none (a new namespace, or one whose
# data is gone), in one step so that every node ends up with the same one.
_EPOCH_SCRIPT = b"""\
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
end
return epoch
"""


async def handshake(
    connection: AbstractConnection, name: str, *, epoch_key: str | None, timeout: float
) -> tuple[str, str]:
    """Connect; return the epoch (``""`` without ``epoch_key``: a link that does not
    hold the transport's keys) and the server's ``run_id`` (which a Sentinel
    transport adds to its identity). ``name`` says which server in errors."""
    with anyio.fail_after(timeout):
        await connection.connect_check_health(check_health=False, retry_socket_connect=False)
        await connection.send_command("INFO", "server", check_health=False)
        info = await connection.read_response(disable_decoding=True, timeout=math.inf)
        if epoch_key is None:
            return "", _parse_run_id(info)
        token = secrets.token_hex(8)
        arguments = ("EVAL", _EPOCH_SCRIPT, 1, epoch_key, token)
        await connection.send_command(*arguments, check_health=False)
        epoch = await connection.read_response(disable_decoding=True, timeout=math.inf)
    if isinstance(epoch, ResponseError):
        raise epoch
    if not isinstance(epoch, bytes) or not epoch:
        raise TransportError(f"Redis at {name} answered the epoch script with {epoch!r}")
    return epoch.decode("ascii", "replace"), _parse_run_id(info)


def _parse_run_id(info: object) -> str:
    if isinstance(info, bytes):
        for line in info.splitlines():
            if line.startswith(b"run_id:"):
                return line.partition(b":")[2].strip().decode()
    raise TransportError("the Redis server did not report a run_id in INFO server")
