"""W&B's ``wandb.Table`` and ``wandb.data_types.PartitionedTable``, as plain JSON files in a version.

``artifact.add(table, "parts/table_0")`` stores ``parts/table_0.table.json``; a
``PartitionedTable("parts")`` added as ``"distributed_table"`` stores
``distributed_table.partitioned-table.json``, which names the directory whose ``*.table.json``
files are its parts (the way W&B's distributed-writers example assembles one table from many
runs). The JSON follows W&B's layout (``columns``, ``data``; ``parts_path``), so both read the
same files; :func:`load` turns such a file back into an object.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

from ._errors import ArtfsError, CorruptData


class Table:
    """Rows of values under named columns (W&B's ``wandb.Table``, without media types)."""

    _log_type = "table"

    def __init__(self, columns: Sequence[str] | None = None, data: Sequence[Sequence[Any]] | None = None) -> None:
        self.data = [list(r) for r in data or []]
        ncols = len(self.data[0]) if self.data else 0
        self.columns = list(columns) if columns is not None else [str(i) for i in range(ncols)]
        for r in self.data:
            if len(r) != len(self.columns):
                raise ArtfsError(f"a row has {len(r)} values for {len(self.columns)} columns: {r!r}")

    def add_data(self, *values: Any) -> None:
        """Append one row (one value per column; ArtfsError otherwise)."""
        if len(values) != len(self.columns):
            raise ArtfsError(f"{len(values)} values for {len(self.columns)} columns")
        self.data.append(list(values))

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``Artifact.add`` stores for this table."""
        return {"_type": "table", "columns": self.columns, "data": self.data,
                "ncols": len(self.columns), "nrows": len(self.data)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and (self.columns, self.data) == (other.columns, other.data)

    def __repr__(self) -> str:
        return f"Table(columns={self.columns!r}, rows={len(self.data)})"


class PartitionedTable:
    """A table made of the ``*.table.json`` parts under ``parts_path`` of the same version."""

    _log_type = "partitioned-table"

    def __init__(self, parts_path: str) -> None:
        self.parts_path = parts_path

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``Artifact.add`` stores: where the parts are."""
        return {"_type": "partitioned-table", "parts_path": self.parts_path}

    def __repr__(self) -> str:
        return f"PartitionedTable({self.parts_path!r})"


def file_name(obj: Any, name: str) -> str:
    """The entry path ``artifact.add(obj, name)`` stores ``obj`` under (``name.<type>.json``)."""
    kind = getattr(obj, "_log_type", None)
    if kind is None or not hasattr(obj, "to_json"):
        raise ArtfsError(f"artifact.add takes a Table or PartitionedTable, not {type(obj).__name__}")
    suffix = f".{kind}.json"
    return name if name.endswith(suffix) else name + suffix


def dumps(obj: Any) -> str:
    return json.dumps(obj.to_json(), ensure_ascii=False, sort_keys=True)


def load(data: bytes | str) -> Table | PartitionedTable:
    """A Table or PartitionedTable from the bytes of its file."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CorruptData(f"not a table file: {e}") from None
    kind = doc.get("_type") if isinstance(doc, dict) else None
    if kind == "table":
        return Table(doc.get("columns"), doc.get("data"))
    if kind == "partitioned-table" and isinstance(doc.get("parts_path"), str):
        return PartitionedTable(doc["parts_path"])
    raise CorruptData(f"not a table file (type {kind!r})")
