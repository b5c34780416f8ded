"""What every cluster benchmark does with its results: the ``--json``, ``--doc`` and
``--from-json`` options, the JSON file, and the generated block of a docs page."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ("add_result_options", "replace_doc_block", "report", "run_facts", "stored_results")


def add_result_options(parser: argparse.ArgumentParser, default_json: str) -> None:
    """``--json`` (where the results go), ``--doc`` and ``--from-json``."""
    parser.add_argument("--json", type=Path, default=Path(default_json))
    parser.add_argument("--doc", type=Path, default=None, help="rewrite the figures in this page")
    parser.add_argument("--from-json", type=Path, default=None, help="no run: render this result file")


def replace_doc_block(path: Path, start: str, end: str, block: str) -> None:
    """Put ``block`` (which opens with ``start`` and closes with ``end``) in place of the
    page's generated block, or at its end when it has none."""
    text = path.read_text() if path.exists() else ""
    if start in text and end in text:
        before, _, rest = text.partition(start)
        _, _, after = rest.partition(end)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)


def stored_results(
    options: argparse.Namespace,
    table: Callable[[dict[str, Any]], str],
    write_doc: Callable[[Path, dict[str, Any]], None],
) -> bool:
    """With ``--from-json``: render that file (table, and the page with ``--doc``) and say
    so; the benchmark then runs nothing."""
    if options.from_json is None:
        return False
    stored: dict[str, Any] = json.loads(options.from_json.read_text())
    print(table(stored))
    if options.doc is not None:
        write_doc(options.doc, stored)
    return True


def report(
    options: argparse.Namespace,
    results: dict[str, Any],
    table: Callable[[dict[str, Any]], str],
    write_doc: Callable[[Path, dict[str, Any]], None],
) -> None:
    """Print the table, write the JSON file and, with ``--doc``, the page."""
    print(table(results))
    options.json.parent.mkdir(parents=True, exist_ok=True)
    options.json.write_text(json.dumps(results, indent=2) + "\n")
    if options.doc is not None:
        write_doc(options.doc, results)


def run_facts(**settings: Any) -> dict[str, Any]:
    """The ``run`` part of a result file: when and where it ran (the load average at the
    end, so a busy machine shows), then the benchmark's ``settings``."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_at_end": os.getloadavg(),
        **settings,
    }
