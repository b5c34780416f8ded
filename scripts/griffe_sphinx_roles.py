"""A griffe extension for the API reference (mkdocs.yml): Sphinx roles as inline code.

The docstrings use reST roles (``:class:`~sessionws.Transport```); Markdown would show them
raw. Each becomes inline code: the last dotted part with ``~`` (as Sphinx shows it), the
whole target without.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|exc|data|mod|obj):`(~?)([^`]+)`")


def _replace(found: re.Match[str]) -> str:
    short, target = found.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRolesAsCode(griffe.Extension):
    """Rewrite every docstring's Sphinx roles before mkdocstrings renders it."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_replace, obj.docstring.value)
