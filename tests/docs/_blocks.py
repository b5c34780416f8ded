"""The ```python blocks of a Markdown page, with their line numbers and kind.

The conventions (README authors: this is all there is to know):

* A ```python block is a **program** unless the last non-blank line before its fence is
  ``<!-- fragment -->``. A program is complete: pasted into a file, ``python file.py``
  runs it. It either exits by itself (status 0), or serves HTTP on the port in ``$PORT``
  (default of your choice) with the memory transport unless ``$SESSIONWS_URL`` says
  otherwise, and then offers: ``GET /`` (the page: it gives the session its id),
  a websocket at ``/ws`` tied to the session, and ``POST /logout``, which closes that
  websocket (with 1000 or a code of 3000-4999). The test starts it, connects a real
  websocket client, logs out, and stops it with SIGINT (Ctrl-C). Its output must hold no
  ``Traceback``.
* A **fragment** (``<!-- fragment -->`` before the fence) is compiled and type-checked
  with ``mypy --strict``, but not run. It must import what it uses; names that stand for
  the reader's own code are imported from a module ``myapp`` (``from myapp import
  current_user  # yours``), which the type check treats as unknown (``Any``).
* An **excerpt** (``<!-- excerpt -->`` before the fence) shows part of a file under
  ``examples/`` that has tests of its own; it must appear there verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ("EXCERPT_MARK", "FRAGMENT_MARK", "Block", "python_blocks")

FRAGMENT_MARK = "<!-- fragment -->"
EXCERPT_MARK = "<!-- excerpt -->"
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")

Kind = Literal["program", "fragment", "excerpt"]


@dataclass(frozen=True)
class Block:
    """One ```python block: ``line`` is the 1-based line of its first line of code."""

    page: str
    line: int
    kind: Kind
    code: str

    @property
    def name(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def module_name(self) -> str:
        return f"block_line_{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every ```python block of ``path``, in order (other languages and bare fences are skipped)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent, fence, language = opening.groups()
        start = index + 1
        end = start
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        if language == "python":
            previous = next((text.strip() for text in reversed(lines[:index]) if text.strip()), "")
            marks: dict[str, Kind] = {FRAGMENT_MARK: "fragment", EXCERPT_MARK: "excerpt"}
            kind = marks.get(previous, "program")
            code = "\n".join(text.removeprefix(indent) for text in lines[start:end]) + "\n"
            blocks.append(Block(path.name, start + 1, kind, code))
        index = end + 1
    return blocks
