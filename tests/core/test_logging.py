"""One logger tree: every package logs under ``sessionws``, with no product prefix.

``logging.getLogger("sessionws").setLevel(...)`` must reach the core, the adapters and
the transports alike, and the logger name already says where a record comes from.
"""

from __future__ import annotations

import ast
import importlib
import logging
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "sessionws",
    "sessionws_aiohttp",
    "sessionws_starlette",
    "sessionws_redis",
    "sessionws_nats",
    "sessionws_demo",
)
LOG_METHODS = frozenset({"debug", "info", "warning", "error", "exception", "critical", "log"})


def _modules() -> list[ModuleType]:
    modules = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{name}."):
            if info.name.endswith("__main__"):
                continue
            modules.append(importlib.import_module(info.name))
    return modules


MODULES = _modules()


@pytest.mark.parametrize("module", MODULES, ids=[module.__name__ for module in MODULES])
def test_every_module_logs_under_sessionws(module: ModuleType) -> None:
    loggers = [value for value in vars(module).values() if isinstance(value, logging.Logger)]
    for logger in loggers:
        assert logger.name == "sessionws" or logger.name.startswith("sessionws."), (
            f"{module.__name__} logs as {logger.name!r}, outside the 'sessionws' tree"
        )


def test_the_transports_and_adapters_have_loggers_in_the_tree() -> None:
    names = {
        value.name
        for module in MODULES
        for value in vars(module).values()
        if isinstance(value, logging.Logger)
    }
    assert {"sessionws.redis", "sessionws.nats", "sessionws.aiohttp", "sessionws.starlette"} <= names


def _first_argument_prefixes(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LOG_METHODS
            and node.args
        ):
            message = node.args[1] if node.func.attr == "log" and len(node.args) > 1 else node.args[0]
            text = message.value if isinstance(message, ast.Constant) else None
            if isinstance(text, str) and text.startswith(("sessionws:", "sessionws_")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {text!r}")
    return found


def test_no_log_message_repeats_the_product_name() -> None:
    offenders = [
        line
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        for line in _first_argument_prefixes(path)
    ]
    assert not offenders, "the logger name says 'sessionws' already:\n" + "\n".join(offenders)
