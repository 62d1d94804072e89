"""``python -m artfs.cli ...``: the ``artfs`` command (the tests and the mount's tools run it so)."""

from __future__ import annotations

import sys

from artfs.cli import main

sys.exit(main())
