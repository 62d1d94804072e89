"""W&B's ``wandb.Table``, ``wandb.Image`` and ``wandb.data_types.PartitionedTable``, as plain files in a version.

``artifact.add(table, "parts/table_0")`` stores ``parts/table_0.table.json``; a
``PartitionedTable("parts")`` added as ``"distributed_table"`` stores
``distributed_table.partitioned-table.json``, which names the directory whose ``*.table.json``
files are its parts (the way W&B's distributed-writers example assembles one table from many
runs). The JSON follows W&B's layout (``columns``, ``data``; ``parts_path``), so both read the
same files; :func:`load` turns such a file back into an object.

An ``Image`` is stored as its file (``media/images/<hash>.png``) and a ``name.image-file.json``
that names it (W&B's layout); a Table whose cells hold Images stores each one the same way and
the cell as that JSON. ``Artifact.get(name)`` reads any of these back. Images from numpy arrays
(or torch tensors) are encoded as PNG here, without Pillow: uint8 or floats in [0, 1],
``H x W``, ``H x W x 3|4``, or channels first (``3 x H x W``, as torch has them).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zlib
from typing import Any, Callable, Sequence

from ._errors import ArtfsError, CorruptData


class Table:
    """Rows of values under named columns (W&B's ``wandb.Table``, without media types)."""

    _log_type = "table"

    def __init__(self, columns: Sequence[str] | None = None, data: Sequence[Sequence[Any]] | None = None,
                 rows: Sequence[Sequence[Any]] | None = None, dataframe: Any = None, **wandb_options: Any) -> None:
        if dataframe is not None:
            columns = [str(c) for c in dataframe.columns]
            data = dataframe.values.tolist()
        self.data = [list(r) for r in (data if data is not None else rows) or []]
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

    def add_column(self, name: str, data: Sequence[Any]) -> None:
        """Add a column (one value per row)."""
        if self.data and len(data) != len(self.data):
            raise ArtfsError(f"column {name!r} has {len(data)} values for {len(self.data)} rows")
        if name in self.columns:
            raise ArtfsError(f"the table has a column {name!r} already")
        self.columns.append(name)
        if not self.data:
            self.data = [[v] for v in data]
        else:
            for r, v in zip(self.data, data):
                r.append(v)

    def get_column(self, name: str, convert_to: str | None = None) -> list[Any]:
        """The values of one column (``convert_to="numpy"`` for an array)."""
        if name not in self.columns:
            raise ArtfsError(f"the table has no column {name!r}; it has {self.columns}")
        i = self.columns.index(name)
        values = [r[i] for r in self.data]
        if convert_to == "numpy":
            import numpy as np

            return np.array(values)  # type: ignore[return-value]
        return values

    def iterrows(self) -> Any:
        """``(index, row)`` for each row, as W&B's ``Table.iterrows``."""
        return enumerate(list(r) for r in self.data)

    def get_dataframe(self) -> Any:
        """The table as a pandas DataFrame (needs pandas)."""
        import pandas as pd  # type: ignore[import-untyped]

        return pd.DataFrame(self.data, columns=self.columns)

    def to_json(self, media: Callable[["Image"], dict[str, Any]] | None = None) -> dict[str, Any]:
        """The JSON document ``Artifact.add`` stores for this table; ``media`` stores an Image cell."""

        def cell(v: Any) -> Any:
            if isinstance(v, Image):
                if media is None:
                    raise ArtfsError("a Table with Images can only be added to an artifact")
                return media(v)
            return v

        data = [[cell(v) for v in r] for r in self.data]
        return {"_type": "table", "columns": self.columns, "data": data,
                "ncols": len(self.columns), "nrows": len(self.data)}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Table) and (self.columns, self.data) == (other.columns, other.data)

    def __repr__(self) -> str:
        return f"Table(columns={self.columns!r}, rows={len(self.data)})"


def short_hash(data: bytes) -> str:
    """20 hex digits of the SHA-256 of ``data``: the name of a media file (equal bytes, one file)."""
    return hashlib.sha256(data).hexdigest()[:20]


class Image:
    """W&B's ``wandb.Image``: a picture from a file path, a numpy array, a torch tensor or a PIL image.

    ``caption`` is kept with it. What is stored is the image file itself (PNG for arrays).
    """

    _log_type = "image-file"

    def __init__(self, data_or_path: Any, mode: str | None = None, caption: str | None = None,
                 grouping: int | None = None, classes: Any = None, boxes: Any = None, masks: Any = None,
                 file_type: str | None = None, normalize: bool = True, **wandb_options: Any) -> None:
        self.caption = caption
        self._path: str | None = None  # a file holding the image (given, or downloaded from an artifact)
        self._data: bytes | None = None
        self._ext = "png"
        if isinstance(data_or_path, Image):
            self._path, self._data, self._ext = data_or_path._path, data_or_path._data, data_or_path._ext
        elif isinstance(data_or_path, (str, os.PathLike)):
            self._path = os.fspath(data_or_path)
            if not os.path.isfile(self._path):
                raise ArtfsError(f"{self._path}: no such image file")
            self._ext = os.path.splitext(self._path)[1].lstrip(".").lower() or "png"
        elif hasattr(data_or_path, "save") and hasattr(data_or_path, "mode"):  # a PIL image
            import io

            buf = io.BytesIO()
            data_or_path.save(buf, format="PNG")
            self._data = buf.getvalue()
        else:
            self._data = _png(data_or_path, normalize)

    def _png_bytes(self) -> tuple[bytes, str]:
        """The image file's bytes and its extension."""
        if self._data is None:
            assert self._path is not None
            with open(self._path, "rb") as f:
                self._data = f.read()
        return self._data, self._ext

    @property
    def width(self) -> int | None:
        """Pixels across (of a PNG; None for other formats)."""
        return _png_size(self._png_bytes()[0])[0]

    @property
    def height(self) -> int | None:
        """Pixels down (of a PNG; None for other formats)."""
        return _png_size(self._png_bytes()[0])[1]

    @property
    def image(self) -> Any:
        """The picture as a PIL image (needs Pillow)."""
        import io

        from PIL import Image as PILImage  # type: ignore[import-not-found]

        return PILImage.open(io.BytesIO(self._png_bytes()[0]))

    def to_json(self, path: str) -> dict[str, Any]:
        """The JSON that names the stored file ``path`` (W&B's ``image-file`` document)."""
        data, ext = self._png_bytes()
        w, h = _png_size(data)
        doc: dict[str, Any] = {"_type": "image-file", "path": path, "format": ext, "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
        if w is not None:
            doc["width"], doc["height"] = w, h
        if self.caption is not None:
            doc["caption"] = self.caption
        return doc

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Image) and self._png_bytes()[0] == other._png_bytes()[0]

    def __repr__(self) -> str:
        return f"Image({self.width}x{self.height}, caption={self.caption!r})"


def _png(array: Any, normalize: bool) -> bytes:
    """A PNG of an image array: uint8 (or floats in [0, 1]); HxW, HxWxC or CxHxW with C in 1, 3, 4."""
    import numpy as np

    if hasattr(array, "detach"):  # torch
        array = array.detach().cpu().numpy()
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 3, 4):
        a = np.transpose(a, (1, 2, 0))  # channels first
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ArtfsError(f"an Image takes an HxW, HxWx3 or HxWx4 array, not shape {a.shape}")
    if a.dtype != np.uint8:
        f = a.astype(np.float64)
        if normalize and f.size and f.min() >= 0 and f.max() <= 1:
            f = f * 255
        a = np.clip(f, 0, 255).astype(np.uint8)
    h, w = a.shape[:2]
    color = {2: 0, 3: 2}[a.ndim] if a.ndim == 2 or a.shape[2] == 3 else 6
    raw = b"".join(b"\x00" + a[y].tobytes() for y in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def _png_size(data: bytes) -> tuple[int | None, int | None]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR":
        w, h = struct.unpack(">II", data[16:24])
        return int(w), int(h)
    return None, None


class _NotKept:
    """A W&B media type that artfs accepts but does not keep: ``log`` records only its type."""

    _log_type = "media"

    def __init__(self, *args: Any, caption: str | None = None, **kwargs: Any) -> None:
        self.caption = caption

    def __repr__(self) -> str:
        return f"{type(self).__name__}(not kept by artfs)"


class Video(_NotKept):
    """W&B's ``wandb.Video``: accepted; ``log`` records only ``{"_type": "video"}``."""

    _log_type = "video"


class Audio(_NotKept):
    """W&B's ``wandb.Audio``: accepted; ``log`` records only ``{"_type": "audio"}``."""

    _log_type = "audio"


class Html(_NotKept):
    """W&B's ``wandb.Html``: accepted; ``log`` records only ``{"_type": "html"}``."""

    _log_type = "html"


class Histogram(_NotKept):
    """W&B's ``wandb.Histogram``: accepted; ``log`` records only ``{"_type": "histogram"}``."""

    _log_type = "histogram"


class Object3D(_NotKept):
    """W&B's ``wandb.Object3D``: accepted; ``log`` records only ``{"_type": "object3D"}``."""

    _log_type = "object3D"


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
        raise ArtfsError(f"artifact.add takes a Table, Image or PartitionedTable, not {type(obj).__name__}")
    suffix = f".{kind}.json"
    return name if name.endswith(suffix) else name + suffix


def dumps(obj: Any, media: Callable[[Image], dict[str, Any]] | None = None) -> str:
    """The file ``Artifact.add`` stores; ``media(image)`` adds an image's file and returns its JSON."""
    if isinstance(obj, Image):
        assert media is not None
        doc = media(obj)
    elif isinstance(obj, Table):
        doc = obj.to_json(media)
    else:
        doc = obj.to_json()
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)


#: the suffixes ``Artifact.get(name)`` looks for: ``name.table.json`` ...
SUFFIXES = (".table.json", ".image-file.json", ".partitioned-table.json")


def load(data: bytes | str, media: Callable[[dict[str, Any]], Image] | None = None) -> Table | PartitionedTable | Image:
    """A Table, Image or PartitionedTable from the bytes of its file; ``media(doc)`` reads an image
    that the file names (in the same artifact)."""
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise CorruptData(f"not a table file: {e}") from None
    kind = doc.get("_type") if isinstance(doc, dict) else None
    if kind == "table":
        rows = doc.get("data") or []
        if media is not None and isinstance(rows, list):
            rows = [[media(v) if isinstance(v, dict) and v.get("_type") == "image-file" else v for v in r]
                    if isinstance(r, list) else r for r in rows]
        return Table(doc.get("columns"), rows)
    if kind == "image-file" and media is not None:
        return media(doc)
    if kind == "partitioned-table" and isinstance(doc.get("parts_path"), str):
        return PartitionedTable(doc["parts_path"])
    raise CorruptData(f"not a table file (type {kind!r})")
