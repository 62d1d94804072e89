"""``artfs run --wandb -- CMD``: CMD's own ``import wandb`` gets artfs.

Integrations import ``wandb`` inside their own code (PyTorch Lightning's ``WandbLogger``,
Transformers' ``WandbCallback``, Ultralytics' callback), so changing the user's import never
reaches them. :func:`make_shim` writes a small package named ``wandb`` (and the
``wandb-<version>.dist-info`` that version checks such as Lightning's
``RequirementCache("wandb>=0.12.10")`` read) into a fresh temporary directory, which
``artfs run`` puts first on CMD's ``PYTHONPATH`` and removes when CMD ends. Nothing is installed
anywhere: a real ``wandb`` in site-packages stays as it is, and only CMD sees the shim.

The package re-exports artfs (every name, ``wandb.run``/``config``/``summary`` included) and
the few module paths the integrations import: ``wandb.sdk.lib.RunDisabled``,
``wandb.wandb_run.Run`` and ``wandb.sdk.wandb_run.Run``, ``wandb.sdk.lib.config_util.ConfigError``,
``wandb.util``, ``wandb.errors``,
``wandb.data_types``, ``wandb.apis.public``, and ``wandb.require``. CMD must run a Python that
can import artfs (the one artfs is installed in).
"""

from __future__ import annotations

import os
import tempfile

#: the version the shim reports (integrations check ``wandb>=...``)
WANDB_VERSION = "0.19.11"

_FILES: dict[str, str] = {
    "wandb/__init__.py": '''"""artfs standing in for wandb (artfs run --wandb): W&B's API, kept in an artfs store."""
import artfs as _artfs
from artfs import *  # noqa: F401,F403
from artfs import Api, Artifact, Image, Run, Table, finish, init, log, log_artifact, use_artifact  # noqa: F401
from . import apis, data_types, errors, sdk, util, wandb_run  # noqa: F401

__version__ = "{version}"
__artfs__ = True


def require(*args, **kwargs):
    """W&B's feature switches (``wandb.require("service")``): nothing to switch here."""


def __getattr__(name):
    """``wandb.run``, ``wandb.config``, ``wandb.summary`` and every other artfs name."""
    return getattr(_artfs, name)
''',
    "wandb/sdk/__init__.py": '''from artfs import Artifact, Config  # noqa: F401
from . import lib, wandb_run  # noqa: F401
''',
    "wandb/sdk/lib/__init__.py": '''class RunDisabled:
    """W&B's run of ``mode="disabled"``; artfs runs are never disabled, so nothing is one."""
''',
    "wandb/sdk/lib/config_util.py": "from artfs import ConfigError  # noqa: F401\n",
    "wandb/sdk/wandb_run.py": "from artfs import Run  # noqa: F401\n",
    "wandb/wandb_run.py": "from artfs import Run  # noqa: F401\n",
    "wandb/util.py": "from artfs.util import *  # noqa: F401,F403\n",
    "wandb/data_types.py": "from artfs.data_types import *  # noqa: F401,F403\n",
    "wandb/errors.py": '''from artfs import ArtfsError as Error  # noqa: F401


class CommError(Error):
    """W&B's error talking to its server (artfs raises its own errors instead)."""


class UsageError(Error):
    """W&B's error for a wrong call."""
''',
    "wandb/apis/__init__.py": "from artfs import Api as PublicApi  # noqa: F401\nfrom . import public  # noqa: F401\n",
    "wandb/apis/public.py": "from artfs._api import *  # noqa: F401,F403\nfrom artfs import Api, Run  # noqa: F401\n",
    "wandb-{version}.dist-info/METADATA": "Metadata-Version: 2.1\nName: wandb\nVersion: {version}\n"
                                          "Summary: artfs standing in for wandb (artfs run --wandb)\n",
    "wandb-{version}.dist-info/top_level.txt": "wandb\n",
}


def make_shim(parent: str | None = None) -> str:
    """Write the ``wandb`` shim into a new directory (under ``parent``, default the temp dir) and
    return it: the directory to put first on ``PYTHONPATH``. The caller removes it."""
    root = tempfile.mkdtemp(prefix="artfs-wandb-", dir=parent)
    for rel, text in _FILES.items():
        path = os.path.join(root, *rel.replace("{version}", WANDB_VERSION).split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text.replace("{version}", WANDB_VERSION))
    return root
