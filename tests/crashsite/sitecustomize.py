"""Test-only: imported at startup by a child process whose PYTHONPATH starts with this directory
(``tests/crashpoints.py``, :func:`crash_env`); installs the crash point ``$ARTFS_TEST_CRASHPOINT``
names. Never on the path of a normal run."""

import importlib.util
import os
import sys

if os.environ.get("ARTFS_TEST_CRASHPOINT"):
    _path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "crashpoints.py")
    _spec = importlib.util.spec_from_file_location("crashpoints", _path)
    assert _spec is not None and _spec.loader is not None
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["crashpoints"] = _mod
    _spec.loader.exec_module(_mod)
    _mod.install()
