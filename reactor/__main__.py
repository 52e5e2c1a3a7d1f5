"""``python -m reactor``: the same as the ``reactor`` command."""

from __future__ import annotations

import sys

from reactor.faces.cli import main

if __name__ == "__main__":
    sys.exit(main())
