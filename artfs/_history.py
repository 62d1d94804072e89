"""A run's metrics: ``run.log``, ``run.summary``, ``run.define_metric``, kept in the store.

Store objects (spelled in :mod:`artfs._layout`), each written by the run's one logging process
and never by anything else, so runs on many machines never contend:

    <project>/runs/<run-id>/history.jsonl   one JSON object per committed step (``_step``,
                                            ``_runtime``, ``_timestamp`` and the logged keys)
    <project>/runs/<run-id>/summary.json    the summary, the next step, the metric definitions,
                                            and the config (for a run whose record another
                                            process writes, such as ``artfs run``'s)

Both are rewritten whole (object stores cannot append) when the run flushes: at ``finish``, and
after a committed step when :data:`FLUSH_SECONDS` have passed since the last flush. A crash
loses at most the rows of that interval; the history object is always a complete earlier copy.
The history is held in memory while the run lives (a row is a few hundred bytes: a million
steps is a few hundred MB; log less often than that).

Steps follow W&B's core (``core/internal/stream/handler.go``, the non-shared mode):
``log(d)`` merges ``d`` into the pending row and commits it at the current step, which then
advances by one; ``commit=False`` only merges; ``step=N`` greater than the current step commits
the pending row first and moves to N (and does not commit ``d`` unless ``commit=True``);
a step below the current one is ignored with a warning. The summary is updated from each
committed row: the last value per key, or what ``define_metric(name, summary="min,max,...")``
asks for (``{"min": ..., "max": ...}``, as W&B shows it); ``summary="none"`` leaves it out. A
value set on the summary directly stays until that key is logged again.
"""

from __future__ import annotations

import fnmatch
import json
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ._config import json_friendly
from ._errors import ArtfsError, CorruptData, NotFound
from ._layout import run_history_key, run_summary_key
from ._term import termwarn

if TYPE_CHECKING:
    from ._store import Store

SUMMARY_FORMAT = "artfs.summary/1"
#: a committed step flushes history and summary when the last flush is this old
FLUSH_SECONDS = 30.0
_AGGREGATES = ("min", "max", "mean", "first", "last")


class Metric:
    """What ``define_metric`` returns (W&B's ``wandb_metric.Metric``): the definition as given."""

    def __init__(self, name: str, step_metric: str | None = None, step_sync: bool | None = None,
                 hidden: bool | None = None, summary: str | None = None, goal: str | None = None) -> None:
        self.name, self.step_metric, self.step_sync = name, step_metric, step_sync
        self.hidden, self.summary, self.goal = hidden, summary, goal

    def to_json(self) -> dict[str, Any]:
        """The definition as ``summary.json`` keeps it (the parameters given)."""
        return {k: v for k, v in self.__dict__.items() if v is not None and k != "name"}

    def __repr__(self) -> str:
        return f"Metric({self.name!r}, summary={self.summary!r})"


def _summary_kinds(metric: Metric) -> set[str] | None:
    """The aggregates a definition asks for; None for W&B's default (the last value)."""
    if metric.summary is None:
        return None
    kinds = {s.strip() for s in metric.summary.split(",") if s.strip()}
    if "best" in kinds:  # W&B's deprecated spelling: best + goal
        kinds.discard("best")
        kinds.add("max" if (metric.goal or "").startswith("max") else "min")
    kinds.discard("copy")
    bad = kinds - set(_AGGREGATES) - {"none"}
    if bad:
        raise ArtfsError(f"define_metric: unknown summary {sorted(bad)}; use min, max, mean, first, last or none")
    return kinds


class _Agg:
    """Running aggregates of one key (W&B's ``metricSummary``)."""

    __slots__ = ("first", "last", "min", "max", "total", "count")

    def __init__(self) -> None:
        self.first: Any = None
        self.last: Any = None
        self.min = self.max = self.total = 0.0
        self.count = 0

    def add(self, v: Any) -> None:
        if self.first is None:
            self.first = v
        self.last = v
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v)):
            self.min = v if self.count == 0 else min(self.min, v)
            self.max = v if self.count == 0 else max(self.max, v)
            self.total += v
            self.count += 1

    def value(self, kinds: set[str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in _AGGREGATES:
            if k not in kinds:
                continue
            if k in ("first", "last"):
                out[k] = getattr(self, k)
            elif self.count:
                out[k] = self.total / self.count if k == "mean" else getattr(self, k)
        return out


class Summary:
    """``run.summary``: the last value of every logged key unless set (``summary["best"] = 0.9``).

    Attribute and item access, ``update``, ``get``, ``keys``, ``items``, ``del`` (as W&B's).
    """

    def __init__(self, history: "History") -> None:
        object.__setattr__(self, "_h", history)

    def _d(self) -> dict[str, Any]:
        return self._h._summary  # type: ignore[no-any-return]

    def __getitem__(self, key: str) -> Any:
        return self._d()[key]

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        try:
            return self._d()[key]
        except KeyError:
            raise AttributeError(f"summary has no key {key!r}") from None

    def __setitem__(self, key: str, value: Any) -> None:
        self._h.set_summary({key: value})

    __setattr__ = __setitem__

    def __delitem__(self, key: str) -> None:
        self._h.del_summary(key)

    __delattr__ = __delitem__

    def update(self, d: dict[str, Any]) -> None:
        """Set several keys (they stay until logged again)."""
        self._h.set_summary(dict(d))

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._d().get(key, default)

    def keys(self) -> list[str]:
        """Every key (``_step``, ``_runtime``, ``_timestamp`` too, as in W&B)."""
        return [k for k in self._d() if k != "_wandb"]

    def items(self) -> list[tuple[str, Any]]:
        """(key, value) of every key."""
        return [(k, self._d()[k]) for k in self.keys()]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __contains__(self, key: object) -> bool:
        return key in self._d()

    def __len__(self) -> int:
        return len(self.keys())

    def _as_dict(self) -> dict[str, Any]:
        return dict(self._d())

    def __repr__(self) -> str:
        return repr(self._d())


class History:
    """The metrics of one live run; every method is safe to call from several threads.

    ``convert`` turns a logged media object (``Table``, ``Image``) into the JSON the history keeps
    (the run stores its bytes); ``extra`` returns more of ``summary.json`` (the run's config).
    """

    def __init__(self, store: "Store", project: str, run_id: str, *,
                 convert: Callable[[str, Any, int], Any] | None = None,
                 extra: Callable[[], dict[str, Any]] | None = None) -> None:
        self.store, self.project, self.run_id = store, project, run_id
        self._convert, self._extra = convert, extra
        self._lock = threading.RLock()
        self.step = 0
        self._rows: list[str] = []  # committed rows, as JSON lines
        self._pending: dict[str, Any] = {}
        self._summary: dict[str, Any] = {}
        self._aggs: dict[str, _Agg] = {}
        self._explicit: set[str] = set()  # summary keys set by hand since last logged
        self._metrics: dict[str, Metric] = {}
        self._start = time.time()
        self._last_flush = time.monotonic()
        self._dirty = False

    # -- resuming --------------------------------------------------------------------------------
    def load(self) -> None:
        """Continue a run's stored history (``init(id=..., resume=...)``): rows, summary, step."""
        doc = read_summary_doc(self.store, self.project, self.run_id)
        if doc is None:
            return
        with self._lock:
            self._summary = dict(doc.get("summary") or {})
            self.step = int(doc.get("step") or 0)
            for name, d in (doc.get("metrics") or {}).items():
                self._metrics[name] = Metric(name, **{k: d.get(k) for k in
                                                      ("step_metric", "step_sync", "hidden", "summary", "goal")})
            try:
                data = self.store.backend.get(run_history_key(self.project, self.run_id))
            except NotFound:
                data = b""
            self._rows = [line for line in data.decode("utf-8").splitlines() if line.strip()]
            runtime = self._summary.get("_runtime")
            if isinstance(runtime, (int, float)):
                self._start = time.time() - runtime

    # -- logging ---------------------------------------------------------------------------------
    def log(self, data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """W&B's ``run.log`` (see the module docstring for step and commit)."""
        if not isinstance(data, dict):
            raise TypeError("log takes a dictionary of metrics")
        if any(not isinstance(k, str) for k in data):
            raise TypeError("the keys of a log() dictionary are strings")
        with self._lock:
            if step is not None:
                if not isinstance(step, int) or isinstance(step, bool) or step < 0:
                    raise TypeError(f"step must be a non-negative integer, not {step!r}")
                if step > self.step:
                    self._commit(step)
                elif step < self.step:
                    termwarn(f"Tried to log to step {step} that is less than the current step {self.step}. "
                             "Steps must be monotonically increasing, so this data will be ignored.")
                    return
            for k, v in data.items():
                self._pending[k] = self._value(k, v)
            flush = commit if commit is not None else step is None
            if flush:
                self._commit(self.step + 1)

    def _value(self, key: str, v: Any) -> Any:
        if self._convert is not None and hasattr(v, "_log_type"):
            return self._convert(key, v, self.step)
        if isinstance(v, dict):
            return {str(k): self._value(f"{key}.{k}", x) for k, x in v.items()}
        return json_friendly(v)

    def _commit(self, next_step: int) -> None:
        """Commit the pending row at the current step (if it has anything), then move to ``next_step``."""
        if self._pending:
            row = dict(self._pending)
            self._sync_steps(row)
            now = time.time()
            row["_step"], row["_runtime"], row["_timestamp"] = self.step, round(now - self._start, 3), now
            self._rows.append(json.dumps(row, ensure_ascii=False, allow_nan=True))
            self._pending = {}
            for k, v in row.items():
                self._update_summary(k, v)
            self._dirty = True
        self.step = next_step
        if self._dirty and time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def _sync_steps(self, row: dict[str, Any]) -> None:
        """``define_metric(name, step_metric=s)``: the last value of ``s`` goes into rows without it."""
        for k in list(row):
            m = self._metric(k)
            if m is not None and m.step_metric and m.step_sync is not False and m.step_metric not in row:
                last = self._summary.get(m.step_metric)
                if last is not None and not isinstance(last, dict):
                    row[m.step_metric] = last

    def _metric(self, key: str) -> Metric | None:
        m = self._metrics.get(key)
        if m is not None:
            return m
        for name, m in self._metrics.items():
            if "*" in name and fnmatch.fnmatchcase(key, name):
                return m
        return None

    def _update_summary(self, key: str, v: Any) -> None:
        self._explicit.discard(key)
        m = self._metric(key) if not key.startswith("_") else None
        kinds = _summary_kinds(m) if m is not None else None
        if kinds is None:
            self._summary[key] = v
            return
        if "none" in kinds:
            self._summary.pop(key, None)
            return
        agg = self._aggs.setdefault(key, _Agg())
        agg.add(v)
        self._summary[key] = agg.value(kinds)

    def define_metric(self, name: str, step_metric: Any = None, step_sync: bool | None = None,
                      hidden: bool | None = None, summary: str | None = None, goal: str | None = None,
                      overwrite: bool | None = None) -> Metric:
        """W&B's ``define_metric``: kept with the run; ``summary`` and ``step_metric`` are honoured."""
        if not isinstance(name, str) or not name:
            raise ArtfsError("define_metric needs a metric name")
        if isinstance(step_metric, Metric):
            step_metric = step_metric.name
        new = Metric(name, step_metric, step_sync, hidden, summary, goal)
        _summary_kinds(new)  # refuses an unknown aggregate now, not at the next log
        with self._lock:
            old = self._metrics.get(name)
            if old is not None and not overwrite:  # merged with the earlier call, as in W&B
                for k, v in old.__dict__.items():
                    if getattr(new, k) is None:
                        setattr(new, k, v)
            self._metrics[name] = new
            self._dirty = True
        return new

    # -- the summary -----------------------------------------------------------------------------
    def set_summary(self, d: dict[str, Any]) -> None:
        with self._lock:
            for k, v in d.items():
                if not isinstance(k, str):
                    raise TypeError("summary keys are strings")
                self._summary[k] = json_friendly(v)
                self._explicit.add(k)
            self._dirty = True

    def del_summary(self, key: str) -> None:
        with self._lock:
            del self._summary[key]
            self._dirty = True

    def touch(self) -> None:
        """Something in ``summary.json`` changed elsewhere (the config): write it at the next flush."""
        self._dirty = True

    # -- persisting ------------------------------------------------------------------------------
    def flush(self, *, final: bool = False) -> None:
        """Write history and summary (when anything changed); ``final`` commits a pending row first."""
        with self._lock:
            if final and self._pending:
                self._commit(self.step + 1)
            self._last_flush = time.monotonic()
            if not self._dirty:
                return
            self._dirty = False
            doc = {"format": SUMMARY_FORMAT, "summary": self._summary, "step": self.step,
                   "metrics": {n: m.to_json() for n, m in self._metrics.items()},
                   **(self._extra() if self._extra else {})}
            history = ("\n".join(self._rows) + "\n").encode() if self._rows else b""
            summary = json.dumps(doc, ensure_ascii=False, indent=1, allow_nan=True).encode()
        self.store.backend.put(run_history_key(self.project, self.run_id), history)
        self.store.backend.put(run_summary_key(self.project, self.run_id), summary)


# -- reading back ------------------------------------------------------------------------------------
def read_summary_doc(store: "Store", project: str, run_id: str) -> dict[str, Any] | None:
    """``summary.json`` of a run, validated (CorruptData if damaged), or None if it logged nothing."""
    key = run_summary_key(project, run_id)
    try:
        data = store.backend.get(key)
    except NotFound:
        return None
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptData(f"{key}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != SUMMARY_FORMAT:
        raise CorruptData(f"{key}: unknown summary format")
    for k in ("summary", "metrics", "config"):
        if not isinstance(doc.get(k, {}), dict):
            raise CorruptData(f"{key}: {k} is not an object")
    step = doc.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CorruptData(f"{key}: step is not a non-negative integer")
    return doc


def read_history(store: "Store", project: str, run_id: str) -> list[dict[str, Any]]:
    """Every committed row of a run (an empty list for a run that logged nothing)."""
    key = run_history_key(project, run_id)
    try:
        data = store.backend.get(key)
    except NotFound:
        return []
    rows = []
    for i, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise CorruptData(f"{key}: line {i} is not valid JSON") from None
        if not isinstance(row, dict):
            raise CorruptData(f"{key}: line {i} is not an object")
        rows.append(row)
    return rows
