"""The fanout demo: `python demos/fanout.py [--duration S] [--no-dashboard] [--json]`.

The same as `reactor demo fanout`; the topology is built in :mod:`reactor.demos.fanout`.
"""

from __future__ import annotations

import os
import sys

# Run from a checkout without installing: the package is one directory up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reactor.faces.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", "fanout", *sys.argv[1:]]))
