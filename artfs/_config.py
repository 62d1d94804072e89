"""``run.config`` / ``artfs.config``: W&B's ``wandb.Config``, kept in the run's record.

The behaviour follows ``wandb/sdk/wandb_config.py``: attribute and item access (``config.lr``,
``config["lr"]``), ``update(d, allow_val_change=...)``, ``setdefaults(d)``; keys lose leading
and trailing ``-`` (argparse's ``--lr`` becomes ``lr``); changing the value of a key that is set
raises :class:`ConfigError` unless ``allow_val_change=True`` (as W&B does; setting the same value
again is fine). ``init(config=...)`` and ``update`` take a dict, an ``argparse.Namespace``, a
``SimpleNamespace``, absl flags, or any object with a ``__dict__``; W&B's keyword arguments
``exclude_keys``/``include_keys`` of ``init`` too.

Values are made JSON-friendly on the way in (numpy and torch scalars become numbers, paths and
other objects their ``str``), because the config is written into the run record (JSON). A change
only marks the config dirty; the run writes its record when it flushes (periodically while
metrics are logged, and at ``finish``), so a loop that sets config keys costs no store requests.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import types
from typing import Any, Callable, Iterator

from ._errors import ArtfsError


class ConfigError(ArtfsError):
    """A config key's value was changed without ``allow_val_change=True`` (W&B's ``ConfigError``)."""


def json_friendly(value: Any) -> Any:
    """``value`` as something ``json.dumps`` takes, W&B-like: scalars of numpy/torch as numbers,
    tuples and sets as lists, dicts and namespaces recursively, anything else as its ``str``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): json_friendly(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_friendly(v) for v in value]
    if _is_namespace(value):
        return json_friendly(vars(value))
    item = getattr(value, "item", None)  # numpy / torch scalars (and one-element tensors)
    if callable(item) and getattr(value, "size", 1) in (1, ()) and _numel(value) == 1:
        try:
            return json_friendly(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    tolist = getattr(value, "tolist", None)  # numpy arrays, tensors
    if callable(tolist):
        try:
            return json_friendly(tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _is_namespace(value: Any) -> bool:
    """An ``argparse.Namespace`` (without importing argparse: only the CLI does) or a SimpleNamespace."""
    argparse = sys.modules.get("argparse")
    return isinstance(value, types.SimpleNamespace) or (argparse is not None and isinstance(value, argparse.Namespace))


def _numel(value: Any) -> int:
    n = getattr(value, "numel", None)
    if callable(n):
        try:
            return int(n())
        except (TypeError, ValueError, RuntimeError):
            return 0
    size = getattr(value, "size", 1)
    return size if isinstance(size, int) else 1


def to_dict(params: Any) -> dict[str, Any]:
    """What W&B's ``wandb_helper.parse_config`` makes of ``params``: a dict of its items."""
    if params is None:
        return {}
    if isinstance(params, str):
        return _from_file(params)
    if isinstance(params, dict):
        return dict(params)
    module = inspect.getmodule(params)
    if module is not None and module.__name__.startswith("absl.flags"):
        return {name: params[name].value for name in dir(params)}
    if isinstance(params, types.ModuleType) and module is not None and module.__name__ == "absl.flags":
        flags = params.FLAGS
        return {name: flags[name].value for name in dir(flags)}
    if not hasattr(params, "__dict__"):
        raise TypeError("config must be a dict or have a __dict__ attribute (argparse.Namespace, SimpleNamespace)")
    return dict(vars(params))


def _from_file(path: str) -> dict[str, Any]:
    """``init(config="config.yaml")``: a YAML (needs PyYAML) or JSON file of key: value."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ArtfsError(f"config file {path}: {e.strerror or e}") from None
    if path.endswith((".yaml", ".yml")):
        try:
            import yaml  # type: ignore[import-untyped]
        except ImportError:
            raise ArtfsError(f"config file {path}: reading YAML needs PyYAML (pip install pyyaml)") from None
        doc = yaml.safe_load(text)
    else:
        doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ArtfsError(f"config file {path}: not a mapping of keys to values")
    # W&B's config-defaults.yaml style: {"lr": {"value": 0.1, "desc": ...}}
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v for k, v in doc.items()}


class Config:
    """A run's configuration: ``config.lr``, ``config["lr"]``, ``config.update({...})``.

    ``on_change`` is called (with no argument) after every change; the run uses it to mark its
    record dirty.
    """

    def __init__(self, items: dict[str, Any] | None = None, on_change: Callable[[], None] | None = None) -> None:
        object.__setattr__(self, "_items", {})
        object.__setattr__(self, "_on_change", None)
        if items:
            self.update(items, allow_val_change=True)
        object.__setattr__(self, "_on_change", on_change)

    # -- reading ---------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._items[key]
        except KeyError:
            raise AttributeError(f"config has no key {key!r}") from None

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._items.get(key, default)

    def keys(self) -> list[str]:
        """The keys a user set (W&B hides keys starting with ``_``, such as ``_wandb``)."""
        return [k for k in self._items if not k.startswith("_")]

    def items(self) -> list[tuple[str, Any]]:
        """(key, value) of the keys a user set."""
        return [(k, v) for k, v in self._items.items() if not k.startswith("_")]

    def values(self) -> list[Any]:
        """The values of the keys a user set."""
        return [v for _, v in self.items()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def as_dict(self) -> dict[str, Any]:
        """The keys a user set, as a plain dict."""
        return dict(self.items())

    def _as_dict(self) -> dict[str, Any]:
        """Every key, ``_wandb`` included: what the run record keeps."""
        return dict(self._items)

    def __repr__(self) -> str:
        return repr(self.as_dict())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return bool(self._items == other._items)
        return isinstance(other, dict) and self.as_dict() == other

    __hash__ = None  # type: ignore[assignment]

    # -- changing --------------------------------------------------------------------------------
    def _sanitize(self, key: Any, val: Any, allow_val_change: bool | None) -> tuple[str, Any]:
        if not isinstance(key, str):
            raise TypeError(f"config keys are strings, not {type(key).__name__}")
        key = key.strip("-")
        if not key:
            raise ArtfsError("a config key may not be empty")
        val = json_friendly(val)
        if not allow_val_change and key in self._items and self._items[key] != val:
            raise ConfigError(f'Attempted to change value of key "{key}" from {self._items[key]} to {val}\n'
                              "If you really want to do this, pass allow_val_change=True to config.update()")
        return key, val

    def __setitem__(self, key: str, val: Any) -> None:
        k, v = self._sanitize(key, val, None)
        self._items[k] = v
        self._changed()

    __setattr__ = __setitem__

    def __delitem__(self, key: str) -> None:
        del self._items[key]
        self._changed()

    def update(self, d: Any, allow_val_change: bool | None = None) -> None:
        """Set every key of ``d`` (a dict, a namespace, absl flags); all or nothing."""
        sanitized = dict(self._sanitize(k, v, allow_val_change) for k, v in to_dict(d).items())
        self._items.update(sanitized)
        self._changed()

    def setdefaults(self, d: Any) -> None:
        """Set the keys of ``d`` that are not set yet (W&B's ``setdefaults``)."""
        new = {k: v for k, v in to_dict(d).items() if k.strip("-") not in self._items}
        self.update(new)

    def persist(self) -> None:
        """W&B's ``config.persist()``: the run writes its record at its next flush anyway."""
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()


class PreInit:
    """``artfs.config`` / ``artfs.summary`` before ``artfs.init()``: every use says what to do."""

    _name: str

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "_name", name)

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise ArtfsError(f"call artfs.init() before using artfs.{object.__getattribute__(self, '_name')}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # copy, pickle, inspect look for these: no answer, not an error
            raise AttributeError(name)
        return self._fail()

    __getitem__ = __setattr__ = __setitem__ = __call__ = _fail

    def __repr__(self) -> str:
        return f"<artfs.{object.__getattribute__(self, '_name')} before artfs.init()>"
