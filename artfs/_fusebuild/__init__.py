"""The fast FUSE build that ships with artfs: ``build-fuse.sh`` and the pyfuse3 patches it applies.

Kept inside the package (not only in the repository) so that ``artfs build-fuse`` works from an
installed wheel. The patches are written to go upstream (each names what it adds to pyfuse3);
``build-fuse.sh`` documents its steps, where it builds, and what it leaves when it fails.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "build-fuse.sh"


def patches() -> list[Path]:
    """The patches, in the order they apply."""
    return sorted((HERE / "patches").glob("*.patch"))
