"""The public modules: what they export, where their names say they live, what moved.

The app's API is ``sessionws``; a transport author's is ``sessionws.transport``, and the
transports shipped here are built on it alone, as a third-party one must be.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import sessionws
import sessionws.transport

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_MODULES = (
    "sessionws",
    "sessionws.transport",
    "sessionws.metrics",
    "sessionws.testing",
    "sessionws_redis",
    "sessionws_nats",
    "sessionws_aiohttp",
    "sessionws_starlette",
)


def _exported(module_name: str) -> list[tuple[str, object]]:
    module = importlib.import_module(module_name)
    return [(name, getattr(module, name)) for name in module.__all__]


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_public_names_report_a_public_module_that_exports_them(module_name: str) -> None:
    for name, value in _exported(module_name):
        home = getattr(value, "__module__", None)
        if not isinstance(value, type) and not callable(value):
            continue  # constants, type aliases
        if home is None or not home.startswith("sessionws"):
            continue  # re-exported from elsewhere (a typing alias, a library's class)
        assert not any(part.startswith("_") for part in home.split(".")), (
            f"{module_name}.{name} says it lives in the private module {home}"
        )
        assert name in importlib.import_module(home).__all__, f"{home} does not export {name}"


def test_the_transport_authors_module_has_what_a_transport_needs() -> None:
    assert {
        "Transport",
        "TransportHandler",
        "Marker",
        "TransportError",
        "SessionWSError",
        "background_tasks",
        "ENTRY_POINT_GROUP",
        "OPEN_TIMEOUT",
    } <= set(sessionws.transport.__all__)
    assert sessionws.transport.ENTRY_POINT_GROUP == "sessionws.transports"
    # The errors are the app's too: the same classes, under the app's module.
    assert sessionws.transport.TransportError is sessionws.TransportError
    assert sessionws.TransportError.__module__ == "sessionws"
    assert sessionws.transport.Transport.__module__ == "sessionws.transport"


def test_internals_are_not_in_the_apps_api() -> None:
    for name in ("normalize_id_factory", "TransportHandler", "Marker", "ENTRY_POINT_GROUP"):
        assert name not in sessionws.__all__


@pytest.mark.parametrize("name", ["normalize_id_factory", "TransportHandler", "Marker", "ENTRY_POINT_GROUP"])
def test_names_that_left_the_apps_api_still_import_with_a_warning(name: str) -> None:
    with pytest.warns(DeprecationWarning, match=rf"sessionws\.{name} is deprecated"):
        value = getattr(sessionws, name)
    assert value is getattr(
        importlib.import_module(f"sessionws.{'_ids' if 'id' in name else 'transport'}"), name
    )
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        sessionws.nonsense  # noqa: B018


@pytest.mark.parametrize("package", ["sessionws_redis", "sessionws_nats"])
def test_the_shipped_transports_import_only_the_transport_authors_module(package: str) -> None:
    imported = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    from_core = {name for name in imported if name == "sessionws" or name.startswith("sessionws.")}
    assert from_core == {"sessionws.transport"}
