"""``python -m sessionws_demo``: run the demo (see ``--help``)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from sessionws_demo._options import FRAMEWORKS, DemoOptions

_EXTRAS = {"aiohttp": "aiohttp", "starlette": "starlette"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m sessionws_demo",
        description=(
            "A page whose websockets are tied to the session: reset, log in and log out close "
            "them on every node. Run two with the same broker URL and --secret for a cluster."
        ),
    )
    parser.add_argument("--framework", choices=FRAMEWORKS, default="aiohttp", help="default: %(default)s")
    parser.add_argument(
        "--transport",
        default="memory://",
        metavar="URL",
        help="memory:// (default), redis://host:6379/0, nats://host:4222, ...",
    )
    parser.add_argument("--host", default="127.0.0.1", help="default: %(default)s")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port (default: %(default)s)")
    parser.add_argument("--node", default=None, help="this process's name on the page (no '.')")
    parser.add_argument(
        "--secret",
        default=None,
        help="signs the session cookie; nodes of a cluster need the same one (default: random)",
    )
    parser.add_argument(
        "--namespace", default="sessionws-demo", help="broker namespace (default: %(default)s)"
    )
    return parser


def load_framework(framework: str) -> ModuleType:
    """``sessionws_demo._<framework>_app``, with a clear message when it cannot be used."""
    name = f"sessionws_demo._{framework}_app"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name == name:
            raise SystemExit(
                f"the {framework} version of the demo is not available yet; use --framework aiohttp"
            ) from None
        extra = _EXTRAS[framework]
        raise SystemExit(
            f"the {framework} demo needs {error.name}: pip install 'sessionws[{extra}]'"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port must be 0-65535, not {args.port}")
    if args.secret is not None and len(args.secret.encode()) < 16:
        raise SystemExit("--secret needs at least 16 bytes (give every node of a cluster the same one)")
    options = DemoOptions(
        transport=args.transport,
        host=args.host,
        port=args.port,
        node=args.node,
        secret=args.secret,
        namespace=args.namespace,
    )
    module = load_framework(args.framework)
    result = module.run(options)
    return int(result)


if __name__ == "__main__":
    sys.exit(main())
