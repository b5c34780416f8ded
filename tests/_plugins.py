"""A third-party transport, installed for one test: a module and its dist-info on a path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ("install_transport_plugin",)


def install_transport_plugin(
    directory: Path, distribution: str, module: str, source: str, schemes: Mapping[str, str]
) -> Path:
    """Write ``module.py`` and a dist-info registering ``schemes`` (``{scheme: "module:factory"}``)
    under ``sessionws.transports`` into ``directory``; put that on ``sys.path``
    (``monkeypatch.syspath_prepend``) or ``PYTHONPATH`` to install it."""
    (directory / f"{module}.py").write_text(source)
    dist = directory / f"{distribution.replace('-', '_')}-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    lines = "".join(f"{scheme} = {target}\n" for scheme, target in schemes.items())
    (dist / "entry_points.txt").write_text(f"[sessionws.transports]\n{lines}")
    return directory
