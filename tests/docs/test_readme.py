"""Every ```python block of the README works as written.

Programs run as real servers (or scripts) in a subprocess, driven by a real HTTP and
websocket client; fragments are compiled and type-checked with ``mypy --strict``. The
conventions a block must follow are in ``tests/docs/_blocks.py``; a failure names the
README line of the block.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import anyio
import pytest
from anyio.abc import Process

from tests._ports import free_port
from tests.docs._blocks import FRAGMENT_MARK, Block, python_blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
ALL_BLOCKS = python_blocks(README)
#: Excerpts of tested files under examples/ are checked to be verbatim copies instead.
EXCERPTS = [block for block in ALL_BLOCKS if block.kind == "excerpt"]
BLOCKS = [block for block in ALL_BLOCKS if block.kind != "excerpt"]
PROGRAMS = [block for block in BLOCKS if block.kind == "program"]

#: How the type check treats the reader's own code (``from myapp import ...``).
MYPY_CONFIG = """\
[mypy]
strict = True
python_version = 3.11
warn_unreachable = True

[mypy-aiohttp_session.*]
ignore_missing_imports = True

[mypy-myapp.*]
ignore_missing_imports = True
"""

CONVENTIONS = (
    f"(a block that is not a complete program needs {FRAGMENT_MARK} on the line before its fence; "
    "see tests/docs/_blocks.py)"
)


@pytest.mark.parametrize("block", EXCERPTS, ids=[block.name for block in EXCERPTS])
def test_every_excerpt_is_a_verbatim_part_of_a_tested_example(block: Block) -> None:
    sources = [path.read_text() for path in (README.parent / "examples").rglob("*.py")]
    assert any(block.code in source for source in sources), (
        f"the excerpt at README.md line {block.line} is not a verbatim part of any file under examples/"
    )


def test_the_readme_has_programs_and_fragments() -> None:
    assert len(PROGRAMS) >= 3, [block.name for block in BLOCKS]
    assert any(block.kind == "fragment" for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_every_block_compiles(block: Block) -> None:
    try:
        compile(block.code, block.name, "exec")
    except SyntaxError as error:
        line = block.line + (error.lineno or 1) - 1
        pytest.fail(f"README.md line {line} (the {block.kind} at line {block.line}): {error.msg}")


@pytest.fixture(scope="module")
def type_errors(tmp_path_factory: pytest.TempPathFactory) -> dict[int, list[str]]:
    """One ``mypy --strict`` run over every block; its errors by the block's README line."""
    directory = tmp_path_factory.mktemp("readme-blocks")
    for block in BLOCKS:
        (directory / f"{block.module_name}.py").write_text(block.code, encoding="utf-8")
    (directory / "mypy.ini").write_text(MYPY_CONFIG, encoding="utf-8")
    completed = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--config-file", str(directory / "mypy.ini"),
            "--cache-dir", str(ROOT / ".mypy_cache" / "readme-blocks"), "--no-error-summary",
            "--show-error-codes", *sorted(path.name for path in directory.glob("block_line_*.py")),
        ],
        # The checkout on MYPYPATH: mypy cannot follow setuptools' editable-install finder.
        cwd=directory, env={**os.environ, "MYPYPATH": str(ROOT)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    errors: dict[int, list[str]] = {block.line: [] for block in BLOCKS}
    pattern = re.compile(r"^block_line_(\d+)\.py:(\d+): (error|note): (.*)$")
    for text in completed.stdout.splitlines():
        found = pattern.match(text)
        if found is None:
            continue
        start, offset, severity, message = found.groups()
        if severity == "error":
            errors[int(start)].append(f"README.md line {int(start) + int(offset) - 1}: {message}")
    if completed.returncode not in (0, 1) or (completed.returncode == 1 and not any(errors.values())):
        pytest.fail(f"mypy did not run: {completed.stdout}{completed.stderr}")
    return errors


@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_every_block_type_checks(block: Block, type_errors: dict[int, list[str]]) -> None:
    found = type_errors[block.line]
    assert not found, f"the {block.kind} at README.md line {block.line} fails mypy --strict:\n" + "\n".join(
        found
    )


# ------------------------------------------------------------------------ programs
class Program:
    """A README program running in a subprocess; its output goes to a file."""

    def __init__(self, block: Block, process: Process, port: int, log: Path) -> None:
        self.block = block
        self.process = process
        self.port = port
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def where(self) -> str:
        return f"the program at README.md line {self.block.line}"

    def describe(self) -> str:
        return f"{self.where()} {CONVENTIONS}; its output:\n{self.output()}"


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@asynccontextmanager
async def running(block: Block, directory: Path) -> AsyncIterator[Program]:
    script = directory / f"{block.module_name}.py"
    script.write_text(block.code, encoding="utf-8")
    log = directory / f"{block.module_name}.log"
    port = free_port()
    environment = {name: value for name, value in os.environ.items() if not name.startswith("SESSIONWS_")}
    environment.update(PORT=str(port), PYTHONUNBUFFERED="1")
    with log.open("wb") as output:
        # Run from a directory of its own: the program must not lean on the checkout.
        process = await anyio.open_process(
            [sys.executable, str(script)], cwd=directory, env=environment, stdout=output, stderr=output
        )
    program = Program(block, process, port, log)
    try:
        yield program
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            with anyio.move_on_after(20):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _started(program: Program) -> bool:
    """True once it listens on $PORT; False if it exited by itself (a script)."""
    with anyio.fail_after(60):
        while True:
            if program.process.returncode is not None:
                return False
            if await anyio.to_thread.run_sync(_listening, program.port):
                return True
            await anyio.sleep(0.1)


async def _close_of(websocket: aiohttp.ClientWebSocketResponse, program: Program) -> int:
    """The close code the server sends (waiting generously); fails on anything else."""
    with anyio.fail_after(20):
        while True:
            message = await websocket.receive()
            if message.type is aiohttp.WSMsgType.CLOSE:
                return int(message.data)
            if message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                pytest.fail(f"{program.where()}: the websocket dropped without a close frame")


async def _exercise(program: Program) -> None:
    timeout = aiohttp.ClientTimeout(total=20)
    # A stranger without a session: a clear answer (an id minted on the upgrade, 1008, or
    # a 4xx), never a 500.
    async with aiohttp.ClientSession(timeout=timeout) as stranger:
        try:
            websocket = await stranger.ws_connect(f"{program.base}/ws")
        except aiohttp.WSServerHandshakeError as error:
            if not 400 <= error.status < 500:
                pytest.fail(f"{program.where()}: /ws answered {error.status} to a client without a session")
        else:
            async with websocket:
                with anyio.move_on_after(1):
                    message = await websocket.receive()
                    if message.type is aiohttp.WSMsgType.CLOSE:
                        assert int(message.data) == 1008, f"{program.where()}: closed with {message.data}"

    # A browser: the page gives the session its id, the websocket is tied to it, and the
    # logout closes that websocket.
    async with aiohttp.ClientSession(timeout=timeout, cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{program.base}/") as response:
            assert response.status == 200, f"{program.where()}: GET / answered {response.status}"
        websocket = await browser.ws_connect(f"{program.base}/ws")
        async with websocket:
            async with browser.post(f"{program.base}/logout", allow_redirects=False) as response:
                assert response.status < 400, f"{program.where()}: POST /logout answered {response.status}"
            code = await _close_of(websocket, program)
            # A close the app chose (not 1006 "dropped", 1011 "server error", ...).
            assert code == 1000 or 3000 <= code <= 4999, (
                f"{program.where()}: the logout closed it with {code}"
            )


@pytest.mark.anyio
@pytest.mark.timeout(120)
@pytest.mark.parametrize("block", PROGRAMS, ids=[block.name for block in PROGRAMS])
async def test_every_program_runs_as_written(block: Block, tmp_path: Path) -> None:
    async with running(block, tmp_path) as program:
        try:
            serving = await _started(program)
        except TimeoutError:
            pytest.fail(
                f"{program.where()} neither exited nor listened on $PORT in 60 s: {program.describe()}"
            )
        if not serving:
            assert program.process.returncode == 0, f"{program.where()} failed: {program.describe()}"
        else:
            try:
                await _exercise(program)
            except (AssertionError, aiohttp.ClientError, TimeoutError) as error:
                pytest.fail(f"{error!r}\n{program.describe()}")
    assert "Traceback" not in program.output(), f"{program.where()} logged an error: {program.describe()}"
