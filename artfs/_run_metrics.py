"""The run API beyond artifacts: ``config``, ``log``, ``summary``, ``define_metric``, ``log_code``.

:class:`RunData` is a base class of :class:`artfs._run.Run`. A live run (from ``artfs.init``)
keeps its metrics in a :class:`artfs._history.History` and its config in a
:class:`artfs._config.Config`; both are written by the run's own process only (the record
``run.json`` when the run owns it, ``history.jsonl`` and ``summary.json`` always; see
:mod:`artfs._history`). A run read back (``Api().run``, ``artifact.logged_by()``) answers from
those objects: ``config`` and ``summary`` are plain dicts, ``history()`` the rows.

Media logged with ``log`` are kept, not dropped: a ``Table`` becomes an artifact
``run-<id>-<key>`` of type ``run_table`` logged by the run (as W&B does), an ``Image`` a file
of the run (``runs/<id>/files/media/images/...``); the history row holds where they are.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterator

from . import data_types
from ._artifact import Artifact
from ._config import Config
from ._errors import ArtfsError
from ._history import History, Metric, Summary, read_history, read_summary_doc
from ._layout import run_file_key
from ._lineage import RunRecord, write_record
from ._names import check_path, make_artifact_name_safe
from ._term import termwarn

if TYPE_CHECKING:
    from ._store import Store


def _default_code_file(path: str) -> bool:
    base = os.path.basename(path)
    return base.endswith(".py") or base.startswith("Dockerfile") or base == "requirements.txt"


def _not_wandb_dir(path: str, root: str) -> bool:
    return any(os.path.relpath(path, root).startswith(d + os.sep) for d in ("wandb", ".wandb", ".venv", ".git"))


def _call(fn: Callable[..., bool], path: str, root: str) -> bool:
    """W&B's include/exclude functions take ``(path)`` or ``(path, root)``."""
    try:
        return fn(path, root)
    except TypeError:
        return fn(path)


class RunData:
    """Config, metrics and code of a run (a base of ``Run``; see the module docstring)."""

    store: "Store"
    project: str
    id: str
    _live: bool
    _owner: bool

    if TYPE_CHECKING:
        @property
        def record(self) -> RunRecord: ...

        def log_artifact(self, artifact_or_path: "Artifact | str", name: str | None = None,
                         type: str | None = None, aliases: list[str] | None = None) -> "Artifact": ...

        def _need_live(self, what: str) -> None: ...

    _history: History | None = None
    _config_obj: Config | None = None
    _record_dirty: bool = False
    #: W&B's attributes that mean nothing here; settable, as in W&B
    resumed: bool = False
    tags: tuple[str, ...] = ()
    notes: str | None = None

    def _start_data(self, *, resume: bool) -> None:
        """Called by ``init`` for a live run: the config over the record's, and the history."""
        self._config_obj = Config(self.record.config, on_change=self._config_changed)
        self._history = History(self.store, self.project, self.id, convert=self._log_media,
                                extra=lambda: {"config": self._config_obj._as_dict() if self._config_obj else {}})
        if resume or not self._owner:
            self._history.load()
            doc = read_summary_doc(self.store, self.project, self.id)
            if doc and doc.get("config"):
                self._config_obj.update(doc["config"], allow_val_change=True)
                self._record_dirty = False

    def _config_changed(self) -> None:
        self._record_dirty = True
        if self._history is not None:
            self._history.touch()

    def _flush_data(self, *, final: bool) -> None:
        """Write history and summary; the record too, when this process owns it and the config changed."""
        if self._config_obj is not None and self._record_dirty and self._owner:
            self.record.config = self._config_obj._as_dict()
            write_record(self.store, self.record)
        self._record_dirty = False
        if self._history is not None:
            self._history.flush(final=final)

    # -- config and summary ------------------------------------------------------------------------
    @property
    def config(self) -> Any:
        """A live run's :class:`Config` (``run.config.lr``); a run read back: its config as a dict."""
        if self._config_obj is not None:
            return self._config_obj
        config = dict(self.record.config)
        doc = read_summary_doc(self.store, self.project, self.id)
        if doc and doc.get("config"):
            config.update(doc["config"])
        return config

    @property
    def summary(self) -> Any:
        """A live run's :class:`Summary`; a run read back: its summary as a dict (empty if it logged nothing)."""
        if self._history is not None:
            return Summary(self._history)
        doc = read_summary_doc(self.store, self.project, self.id)
        return dict(doc.get("summary") or {}) if doc else {}

    @property
    def step(self) -> int:
        """The step the next ``log`` without ``step=`` goes to."""
        if self._history is not None:
            return self._history.step
        doc = read_summary_doc(self.store, self.project, self.id)
        return int(doc.get("step") or 0) if doc else 0

    # -- metrics -----------------------------------------------------------------------------------
    def _live_history(self, what: str) -> History:
        self._need_live(what)
        assert self._history is not None
        return self._history

    def log(self, data: dict[str, Any], step: int | None = None, commit: bool | None = None,
            sync: bool | None = None) -> None:
        """W&B's ``run.log``: one step of metrics (see :mod:`artfs._history` for ``step``/``commit``)."""
        self._live_history("log").log(data, step=step, commit=commit)

    def define_metric(self, name: str, step_metric: Any = None, step_sync: bool | None = None,
                      hidden: bool | None = None, summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None, **kwargs: Any) -> Metric:
        """W&B's ``define_metric``: ``summary="min"``/``"max"``/``"mean"``/``"none"`` shape the summary;
        ``step_metric`` is filled into rows that lack it."""
        return self._live_history("define_metric").define_metric(name, step_metric, step_sync, hidden, summary,
                                                                 goal, overwrite)

    def history(self, samples: int = 500, keys: list[str] | None = None, x_axis: str = "_step",
                pandas: bool = True, stream: str = "default") -> Any:
        """The logged rows (W&B's public ``Run.history``): a pandas DataFrame when pandas is installed
        and ``pandas=True``, else a list of dicts; ``keys`` keeps rows that have them, and those columns."""
        rows = list(self.scan_history(keys=keys))
        if pandas:
            try:
                import pandas as pd  # type: ignore[import-untyped]
            except ImportError:
                return rows
            return pd.DataFrame.from_records(rows)
        return rows

    def scan_history(self, keys: list[str] | None = None, page_size: int = 1000, min_step: int | None = None,
                     max_step: int | None = None) -> Iterator[dict[str, Any]]:
        """Every logged row, in step order (W&B's ``scan_history``)."""
        if self._history is not None:
            self._history.flush()
        for row in read_history(self.store, self.project, self.id):
            step = row.get("_step", 0)
            if (min_step is not None and step < min_step) or (max_step is not None and step >= max_step):
                continue
            if keys is not None:
                if not all(k in row for k in keys):
                    continue
                row = {k: row[k] for k in ["_step", *keys] if k in row}
            yield row

    def _log_media(self, key: str, obj: Any, step: int) -> Any:
        """Keep a logged Table or Image in the store; return what the history row holds."""
        safe = make_artifact_name_safe(key)
        if isinstance(obj, data_types.Image):
            data, ext = obj._png_bytes()
            digest = data_types.short_hash(data)
            path = check_path(f"media/images/{safe}_{step}_{digest}.{ext}")
            self.store.backend.put(run_file_key(self.project, self.id, path), data)
            return {**obj.to_json(path), "_type": "image-file"}
        if isinstance(obj, data_types.Table):
            art = Artifact(make_artifact_name_safe(f"run-{self.id}-{key}"), type="run_table")
            entry = art.add(obj, key.replace("/", "_"))
            self.log_artifact(art)
            return {"_type": "table-file", "artifact_path": art.qualified_name, "path": entry,
                    "ncols": len(obj.columns), "nrows": len(obj.data)}
        return {"_type": getattr(obj, "_log_type", type(obj).__name__)}

    # -- code --------------------------------------------------------------------------------------
    def log_code(self, root: str | None = ".", name: str | None = None,
                 include_fn: Callable[..., bool] = _default_code_file,
                 exclude_fn: Callable[..., bool] = _not_wandb_dir) -> "Artifact | None":
        """The code under ``root`` (``*.py``, ``requirements.txt``, ``Dockerfile*`` by default) as an
        artifact of type ``code``, logged by this run (W&B's name: ``source-<project>-<script>``)."""
        self._need_live("log_code")
        if name is None:
            program = os.path.relpath(os.path.abspath(sys.argv[0])) if sys.argv and sys.argv[0] else "python"
            name = make_artifact_name_safe(f"source-{self.project}-{program}")
        art = Artifact(name, type="code")
        if root is not None:
            root = os.path.abspath(root)
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
                for fn in sorted(filenames):
                    p = os.path.join(dirpath, fn)
                    if os.path.isfile(p) and _call(include_fn, p, root) and not _call(exclude_fn, p, root):
                        art.add_file(p, name=os.path.relpath(p, root).replace(os.sep, "/"))
        if not art.draft_files():
            termwarn("No relevant files were detected in the specified directory. No code will be logged to your run.")
            return None
        self.log_artifact(art)
        if self._config_obj is not None:
            self._config_obj.update({"_wandb": {"code_path": art.qualified_name}}, allow_val_change=True)
        return art

    # -- W&B calls with nothing to do here ----------------------------------------------------------
    def watch(self, *args: Any, **kwargs: Any) -> None:
        """``wandb.watch(model)`` logs gradients to W&B's server; accepted, nothing is recorded."""

    def unwatch(self, *args: Any, **kwargs: Any) -> None:
        """Accepted (see ``watch``)."""

    def alert(self, title: str = "", text: str = "", *args: Any, **kwargs: Any) -> None:
        """W&B sends alerts from its server; artfs prints the alert on stderr instead."""
        termwarn(f"alert: {title}: {text}")

    def mark_preempting(self) -> None:
        """Accepted; artfs has no scheduler to tell."""

    def save(self, glob_str: str | None = None, base_path: str | None = None, policy: str = "live") -> bool:
        """``run.save(path)`` uploads files to W&B's run page; artfs keeps no run files beyond media,
        so this is accepted and says so once (log them as an artifact instead)."""
        termwarn("run.save() is accepted but keeps nothing; log files as an artifact (run.log_artifact)",
                 repeat=False)
        return True

    def _label(self, *args: Any, **kwargs: Any) -> None:
        """An internal W&B hook the integrations call (Lightning, Transformers); nothing to do."""

    def _set_config_wandb(self, key: str, value: Any) -> None:
        """Internal W&B hook (integrations record their name in ``config._wandb``)."""

    @property
    def dir(self) -> str:
        """W&B's run directory: here a directory under the system's temp dir, made on first use."""
        import tempfile

        d = os.path.join(tempfile.gettempdir(), f"artfs-run-{self.project}-{self.id}")
        os.makedirs(d, exist_ok=True)
        return d

    @property
    def entity(self) -> str:
        """artfs has no entities; W&B code that formats ``entity/project`` gets the project's store."""
        return ""

    @property
    def project_name(self) -> str:
        return self.project

    @property
    def url(self) -> None:
        """No web page: None (W&B's offline runs have none either)."""
        return None

    def get_url(self) -> None:
        return None

    @property
    def offline(self) -> bool:
        return False

    @property
    def disabled(self) -> bool:
        return False

    @property
    def settings(self) -> Any:
        import types

        return types.SimpleNamespace(mode="online", project=self.project, run_id=self.id, files_dir=self.dir)

    @property
    def sweep_id(self) -> None:
        return None

