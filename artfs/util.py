"""``wandb.util``'s helpers that scripts call: ``make_artifact_name_safe``."""

from __future__ import annotations

from ._names import make_artifact_name_safe

__all__ = ["make_artifact_name_safe"]
