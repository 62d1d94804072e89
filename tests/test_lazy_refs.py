"""``LazyBlobs.open_ref``: reference entries read in chunks through the shared cache (no mount)."""

from __future__ import annotations

import os

import pytest

from artfs import Cache, Store
from artfs._errors import ArtfsError, ReferenceChanged
from artfs._lazy import LazyBlobs
from artfs._refs import RefReader, ref_key, resolve_reference

from refservers import FileServer

CS = 64 << 10


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))


def _gets(srv) -> int:
    return sum(1 for m, _, _ in srv.requests if m == "GET")


def test_pinned_reference_without_digest_is_cached_under_its_ref_key(store, tmp_path):
    data = os.urandom(10 * CS + 5)
    with FileServer({"d.bin": data}) as srv:
        (e,) = resolve_reference(srv.url_of("d.bin"))
        assert e.digest is None
        with RefReader() as reader, LazyBlobs(store, chunk_size=CS, readahead_max=0) as lb:
            with lb.open_ref("proj", e, reader) as h:
                assert h.read(3 * CS + 1, 100) == data[3 * CS + 1 : 3 * CS + 101]
                assert _gets(srv) == 1  # one chunk
                assert h.read(0, len(data)) == data
            assert lb.drain(5)
        partial = os.path.join(store.cache.root, "partial", ref_key(e))
        assert os.path.exists(partial)  # complete, but nothing to verify it against: stays partial

        # a later process: served from the cache (no verification drops it), the server untouched
        n = _gets(srv)
        with RefReader() as reader, LazyBlobs(store, chunk_size=CS) as lb:
            with lb.open_ref("proj", e, reader) as h:
                assert h.read(0, len(data)) == data
            assert lb.drain(5)
        assert _gets(srv) == n and os.path.exists(partial)

        # changed behind the reference: cached bytes stay the recorded ones, others fail
        srv.set("d.bin", os.urandom(len(data)))
        os.unlink(partial + ".map")  # forget the cached chunks (the map resets)
        with RefReader() as reader, LazyBlobs(store, chunk_size=CS, readahead_max=0) as lb:
            with lb.open_ref("proj", e, reader) as h, pytest.raises(ReferenceChanged, match="d.bin"):
                h.read(0, 10)


def test_reference_with_digest_becomes_a_verified_blob(store):
    data = os.urandom(5 * CS)
    with FileServer({"p.bin": data}, etag=False) as srv:
        (e,) = resolve_reference(srv.url_of("p.bin"))
        assert e.digest is not None
        with RefReader() as reader, LazyBlobs(store, chunk_size=CS) as lb:
            with lb.open_ref("proj", e, reader) as h:
                assert h.read(0, len(data)) == data
            assert lb.drain(5)
        assert store.cache.has(e.digest)


def test_unpinned_reference_is_not_cached(store):
    with FileServer({"x": b"x"}) as srv:
        (e,) = resolve_reference(srv.url_of("x"), checksum=False)
        with RefReader() as reader, LazyBlobs(store) as lb, pytest.raises(ArtfsError, match="unpinned"):
            lb.open_ref("proj", e, reader)


def test_check_allowed(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("a")
    (e,) = resolve_reference(f"file://{f}")
    with RefReader() as r, pytest.raises(PermissionError):
        r.check_allowed(e)
    with RefReader(file_roots=[str(tmp_path)]) as r:
        r.check_allowed(e)
    with RefReader(allow_file=True) as r:
        r.check_allowed(e)
    with FileServer({"x": b"x"}) as srv, RefReader() as r:
        r.check_allowed(resolve_reference(srv.url_of("x"))[0])  # not a file: nothing to check
