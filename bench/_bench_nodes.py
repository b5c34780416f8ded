"""sessionws node processes for the benchmarks: ``tests/cluster/node.py`` with a namespace,
an event loop, no access log, and optionally from another copy of the repository."""

from __future__ import annotations

from pathlib import Path

from tests.cluster._nodes import NodeProcess

__all__ = ("BenchNode",)


class BenchNode(NodeProcess):
    """A sessionws node with its own namespace and event loop; with ``code``, the node
    imports sessionws (and everything else) from that source tree first."""

    def __init__(
        self, name: str, broker_url: str, directory: Path, namespace: str, loop: str, code: Path | None = None
    ) -> None:
        super().__init__(name, broker_url, directory)
        self.code = code
        # No access log: a log line per request is CPU on the path of the close that the
        # peer (which logs nothing) does not spend.
        self.extra = ["--namespace", namespace, "--loop", loop, "--no-access-log"]

    def command(self) -> list[str]:
        command = [*super().command(), *self.extra]
        if self.code is None:
            return command
        start = (
            f"import runpy, sys; sys.path.insert(0, {str(self.code)!r}); "
            "runpy.run_module('tests.cluster.node', run_name='__main__', alter_sys=True)"
        )
        return [command[0], "-c", start, *command[3:]]  # in place of "-m tests.cluster.node"
