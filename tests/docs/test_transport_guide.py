"""The guide "Writing a transport" (docs/writing-a-transport.md) holds as written.

Its skeleton must satisfy the :class:`~sessionws.transport.Transport` protocol under
``mypy --strict`` (the factory at its end returns it as one), import nothing from the
core but :mod:`sessionws.transport`, and its entry-point registration must be what the
core reads.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import sessionws.transport
from tests.docs._blocks import python_blocks
from tests.docs.test_readme import MYPY_CONFIG

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "writing-a-transport.md"
BLOCKS = python_blocks(GUIDE)


def test_the_guide_has_one_skeleton_fragment() -> None:
    assert [block.kind for block in BLOCKS] == ["fragment"]


def test_the_skeleton_imports_only_the_transport_authors_module() -> None:
    tree = ast.parse(BLOCKS[0].code)
    core = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sessionws")
    }
    assert core == {"sessionws.transport"}


def test_the_skeleton_is_a_transport_under_mypy_strict(tmp_path: Path) -> None:
    (tmp_path / "skeleton.py").write_text(BLOCKS[0].code, encoding="utf-8")
    (tmp_path / "mypy.ini").write_text(MYPY_CONFIG, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "--no-incremental", "skeleton.py"],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, (
        f"docs/writing-a-transport.md line {BLOCKS[0].line}:\n{completed.stdout}"
    )


def test_the_registration_shown_is_what_the_core_reads() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    found = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert found is not None
    table = tomllib.loads(found.group(1))["project"]["entry-points"][sessionws.transport.ENTRY_POINT_GROUP]
    for scheme, value in table.items():
        entry = EntryPoint(name=scheme, value=value, group=sessionws.transport.ENTRY_POINT_GROUP)
        assert (entry.module, entry.attr, entry.extras) == (
            "sessionws_pigeon",
            "transport_from_url",
            ["pigeon"],
        )


def test_the_guide_names_the_constants_by_their_values() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    assert f'`"{sessionws.transport.OPEN_TIMEOUT}"`' in text
    assert f'`"{sessionws.transport.ENTRY_POINT_GROUP}"`' in text
