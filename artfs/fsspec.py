"""``artfs://`` for every Python data tool: artfs versions as an fsspec filesystem.

With artfs installed (and ``fsspec``: ``pip install 'artfs[fsspec]'``), fsspec finds the
protocol through the ``fsspec.specs`` entry point, so pandas, pyarrow, Dask, Polars, DuckDB and
Hugging Face ``datasets`` read ``artfs://PROJECT/ARTIFACT/VERSION/PATH`` with no mount::

    import pandas as pd
    df = pd.read_csv("artfs://cycling/bike-dataset/latest/labels.csv")

    import fsspec
    fs = fsspec.filesystem("artfs", store="s3://bucket/prefix")
    with fs.transaction:                                   # one new version when the block ends
        with fs.open("cycling/bike-dataset/draft/labels.csv", "wb") as f:
            f.write(b"...")

See ``docs/fsspec.md`` and :class:`ArtfsFileSystem`.
"""

from __future__ import annotations

from ._fsspec import ArtfsFileSystem

__all__ = ["ArtfsFileSystem"]
