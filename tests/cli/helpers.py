"""Run the real ``sessionws`` command in a subprocess, next to registries in this process."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from sessionws import SessionRegistry

__all__ = ("CLI_HEARTBEAT", "HEARTBEAT", "CliCluster", "CliResult", "run_cli", "start_cluster", "together")

ROOT = Path(__file__).resolve().parents[2]
#: The nodes' heartbeat interval.
HEARTBEAT = 0.2
#: What the CLI is told the interval is: it listens this long (plus 10 %) for heartbeats
#: before a confirmed close or a count, so two beats of every node fit in, even on a busy
#: machine.
CLI_HEARTBEAT = 2 * HEARTBEAT


@dataclass(frozen=True)
class CliResult:
    """What one run of the command printed, and its exit code."""

    code: int
    out: str
    err: str

    @property
    def data(self) -> Any:
        """stdout parsed as the one JSON object ``--json`` prints."""
        return json.loads(self.out)

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()


async def run_cli(
    *arguments: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> CliResult:
    """``python -m sessionws ARGUMENTS`` without blocking the event loop (the nodes keep serving).

    The environment is this process's without any ``SESSIONWS_*`` variable, plus ``env``.
    """
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SESSIONWS_")}
    environment.update(env or {})
    completed = await anyio.run_process(
        [sys.executable, "-m", "sessionws", *arguments],
        input=None if stdin is None else stdin.encode(),
        check=False,
        env=environment,
        cwd=ROOT,
    )
    return CliResult(completed.returncode, completed.stdout.decode(), completed.stderr.decode())


async def together(*runs: Callable[[], Awaitable[CliResult]]) -> list[CliResult]:
    """Run independent commands at the same time (each waits for heartbeats); results in order."""
    results: dict[int, CliResult] = {}

    async def run(index: int) -> None:
        results[index] = await runs[index]()

    async with anyio.create_task_group() as tasks:
        for index in range(len(runs)):
            tasks.start_soon(run, index)
    return [results[index] for index in range(len(runs))]


@dataclass
class CliCluster:
    """Registries sharing one Redis and namespace, and the CLI options that reach them."""

    url: str
    namespace: str
    nodes: list[SessionRegistry]

    def __getitem__(self, index: int) -> SessionRegistry:
        return self.nodes[index]

    def options(self, *, url: bool = True) -> list[str]:
        """``--url``, ``--namespace`` and ``--heartbeat-interval`` for this cluster."""
        options = ["--namespace", self.namespace, "--heartbeat-interval", str(CLI_HEARTBEAT)]
        return [*options, "--url", self.url] if url else options


@asynccontextmanager
async def start_cluster(url: str, size: int = 3, **options: Any) -> AsyncIterator[CliCluster]:
    """``size`` running registries named node0, node1, ... in a fresh namespace."""
    namespace = f"cli-{uuid.uuid4().hex[:12]}"
    settings: dict[str, Any] = {
        "heartbeat_interval": HEARTBEAT,
        "linger": 0.05,
        "close_timeout": 0.5,
        **options,
    }
    async with AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                SessionRegistry(url, namespace=namespace, node_id=f"node{index}", **settings)
            )
            for index in range(size)
        ]
        yield CliCluster(url, namespace, nodes)
