"""Importing an adapter without its extra names the ``pip install`` that fixes it.

Each case runs a fresh interpreter in which the framework cannot be imported
(``sys.modules[name] = None`` makes ``import name`` fail as if it were not installed).
"""

from __future__ import annotations

import subprocess
import sys

import pytest


def _import_without(package: str, blocked: str) -> subprocess.CompletedProcess[str]:
    program = f"import sys; sys.modules[{blocked!r}] = None; import {package}"
    return subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("package", "blocked", "extra"),
    [
        ("sessionws_starlette", "starlette", "starlette"),
        ("sessionws_aiohttp", "aiohttp", "aiohttp"),
        ("sessionws_aiohttp", "aiohttp_session", "aiohttp"),
    ],
)
def test_an_adapter_without_its_extra_names_the_install(package: str, blocked: str, extra: str) -> None:
    result = _import_without(package, blocked)

    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("ImportError: "), result.stderr
    assert f"pip install 'sessionws[{extra}]'" in last_line
    assert blocked in last_line


def test_the_core_imports_without_any_framework() -> None:
    program = (
        "import sys\n"
        "for name in ('aiohttp', 'aiohttp_session', 'starlette', 'redis', 'nats'):\n"
        "    sys.modules[name] = None\n"
        "import sessionws\n"
        "print(sessionws.SessionRegistry.__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "SessionRegistry\n"
