"""py-spy on a running node while a benchmark drives it, summarised by code path.

``bench.peers --profile`` samples node 1 of the first sessionws system (``py-spy record
--nonblocking``: the node is not paused to be sampled) for the whole run and keeps the
stacks that pass through the functions of a close: the call (``close_all``), a received
command (``message_received``), the delivery workers (``_drain``). For each, the share
of samples per function, inclusive (the function or what it called) and exclusive.
py-spy comes with the ``dev`` extra (``pip install py-spy``); it needs the rights to read
another process's memory (the same user and no Yama ptrace restriction, or CAP_SYS_PTRACE):
py-spy is a sibling of the node, not its parent.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ("ATTACH_FAILED", "PATHS", "py_spy", "summarize")

#: How a run that could not profile says so (py-spy lacks the rights to read the node).
ATTACH_FAILED = "py-spy could not attach to the node"

#: The code paths of a close, by the function every stack of the path passes through.
PATHS = {
    "close call (close_all)": "close_all (sessionws/_registry.py)",
    "received command (message_received)": "message_received (sessionws/_registry.py)",
    "delivery worker (_drain)": "_drain (sessionws/_delivery.py)",
}


def _binary() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: pip install py-spy")
    return found


@contextlib.contextmanager
def py_spy(pid: int, output: Path, rate: int = 1000) -> Iterator[None]:
    """Sample ``pid`` into ``output`` (py-spy's raw format: one stack a line)."""
    command = [_binary(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw"]
    command += ["--nolineno", "--nonblocking", "--output", str(output)]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    if recorder.poll() is not None:
        _, errors = recorder.communicate()
        raise SystemExit(f"{ATTACH_FAILED}: {errors.decode(errors='replace')[-1000:]}")
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            _, errors = recorder.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, errors = recorder.communicate()
        if recorder.returncode not in (0, -signal.SIGINT) and not output.exists():
            raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-1000:]}")


def _stacks(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def _is(frame: str, marker: str) -> bool:
    """``Class.function (file)`` or ``function (file)`` is ``function (file)``."""
    return frame == marker or frame.endswith("." + marker)


def summarize(path: Path, top: int = 14) -> dict[str, Any]:
    """Samples in all, and per path of :data:`PATHS` its functions' shares."""
    stacks = _stacks(path)
    total = sum(count for _, count in stacks)
    summary: dict[str, Any] = {"samples": total, "paths": {}}
    for label, marker in PATHS.items():
        chosen = []
        for frames, count in stacks:
            at = next((index for index, frame in enumerate(frames) if _is(frame, marker)), None)
            if at is not None:
                chosen.append((frames[at:], count))
        samples = sum(count for _, count in chosen)
        inclusive: collections.Counter[str] = collections.Counter()
        exclusive: collections.Counter[str] = collections.Counter()
        for frames, count in chosen:
            below = frames
            for frame in set(below):
                inclusive[frame] += count
            exclusive[below[-1]] += count
        summary["paths"][label] = {
            "samples": samples,
            "inclusive": [(frame, count / samples) for frame, count in inclusive.most_common(top)]
            if samples
            else [],
            "exclusive": [(frame, count / samples) for frame, count in exclusive.most_common(top)]
            if samples
            else [],
        }
    return summary
