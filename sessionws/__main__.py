"""``python -m sessionws``: the same as the ``sessionws`` command."""

from __future__ import annotations

import sys

from sessionws._cli import main

sys.exit(main())
