"""The backend contract: every store backend passes the same tests.

The contract itself is the docstring of artfs/backends/__init__.py.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from artfs._errors import AlreadyExists, NotFound, StoreUnavailable
from artfs.backends import Backend, open_backend
from artfs.testing import free_port

MiB = 1024 * 1024


@pytest.fixture
def backend(backend_url) -> Backend:
    b = open_backend(backend_url)
    yield b
    b.close()


def is_s3(b: Backend) -> bool:
    return b.url.startswith("s3://")


# --- get / put ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"hello", bytes(range(256)) * 100])
def test_put_get_round_trip(backend, data):
    before = backend.counter["put"]
    backend.put("p/artifacts/a/versions/0.json", data)
    assert backend.get("p/artifacts/a/versions/0.json") == data
    assert backend.counter["put"] == before + 1


def test_put_overwrites_when_not_exclusive(backend):
    backend.put("k", b"one")
    backend.put("k", b"two")
    assert backend.get("k") == b"two"


def test_get_missing_is_not_found(backend):
    with pytest.raises(NotFound):
        backend.get("no/such/key")
    with pytest.raises(NotFound):
        backend.get_range("no/such/key", 0, 10)
    backend.put("dir/file", b"x")
    with pytest.raises(NotFound):
        backend.get("dir")  # a "directory" is not an object


def test_download_missing_is_not_found(backend, tmp_path):
    with pytest.raises(NotFound):
        backend.download_file("no/such/key", str(tmp_path / "out"))


# --- exclusive create --------------------------------------------------------------------------


def test_exclusive_put_twice(backend):
    backend.put("v/0.json", b"first", exclusive=True)
    with pytest.raises(AlreadyExists):
        backend.put("v/0.json", b"second", exclusive=True)
    assert backend.get("v/0.json") == b"first"


def test_exclusive_put_file_twice(backend, tmp_path):
    f1, f2 = tmp_path / "1", tmp_path / "2"
    f1.write_bytes(b"first")
    f2.write_bytes(b"second")
    backend.put_file("v/1.json", str(f1), exclusive=True)
    with pytest.raises(AlreadyExists):
        backend.put_file("v/1.json", str(f2), exclusive=True)
    assert backend.get("v/1.json") == b"first"


def test_exclusive_put_race_has_one_winner(backend):
    n = 8
    barrier = threading.Barrier(n)

    def attempt(i: int) -> bool:
        barrier.wait()
        try:
            backend.put("race/0.json", b"writer %d" % i, exclusive=True)
            return True
        except AlreadyExists:
            return False

    for _ in range(3):  # a few rounds, so an unlucky scheduling cannot hide a lost update
        backend.delete("race/0.json")
        barrier.reset()
        with ThreadPoolExecutor(n) as ex:
            won = list(ex.map(attempt, range(n)))
        assert won.count(True) == 1, won
        assert backend.get("race/0.json") == b"writer %d" % won.index(True)


# --- ranges ------------------------------------------------------------------------------------


def test_get_range(backend):
    data = bytes(range(256)) * 4  # 1024 bytes
    backend.put("r", data)
    before = backend.counter["range"]
    assert backend.get_range("r", 100, 50) == data[100:150]  # middle
    assert backend.get_range("r", 0, 1) == data[:1]
    assert backend.get_range("r", 1000, 100) == data[1000:]  # crosses the end: fewer bytes
    assert backend.get_range("r", 1024, 10) == b""  # at the end
    assert backend.get_range("r", 5000, 10) == b""  # past the end
    assert backend.get_range("r", 10, 0) == b""
    assert backend.counter["range"] == before + 6
    backend.put("empty", b"")
    assert backend.get_range("empty", 0, 10) == b""


def _fetch_into(fetch, path, key, offset, length, fd_offset=0):
    """Run ``fetch(key, offset, length, fd, fd_offset)`` on a file of 0xEE bytes; (n, file bytes)."""
    with open(path, "wb") as f:
        f.write(b"\xee" * 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, 7, os.SEEK_SET)
        n = fetch(key, offset, length, fd, fd_offset)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 7  # pwrite semantics: the fd's position is untouched
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        return n, f.read()


@pytest.mark.parametrize("impl", ["backend", "default"])
def test_fetch_range_into(backend, tmp_path, impl):
    """``fetch_range_into`` writes what ``get_range`` returns, at ``fd_offset``, and nothing else.

    ``default`` runs the base class's implementation (get_range + pwrite) against the backend.
    """
    fetch = backend.fetch_range_into if impl == "backend" else (
        lambda *a: Backend.fetch_range_into(backend, *a))
    data = bytes(range(256)) * 4  # 1024 bytes
    backend.put("r", data)
    path = str(tmp_path / "out")
    fill = b"\xee" * 4096
    before = backend.counter["range"]
    n, got = _fetch_into(fetch, path, "r", 100, 50, 1000)  # middle, at an offset in the file
    assert n == 50 and got == fill[:1000] + data[100:150] + fill[1050:]
    n, got = _fetch_into(fetch, path, "r", 0, 1)
    assert n == 1 and got == data[:1] + fill[1:]
    n, got = _fetch_into(fetch, path, "r", 1000, 100, 5)  # crosses the end: fewer bytes
    assert n == 24 and got == fill[:5] + data[1000:] + fill[29:]
    for off, length in [(1024, 10), (5000, 10), (10, 0)]:  # at / past the end, nothing asked
        n, got = _fetch_into(fetch, path, "r", off, length)
        assert n == 0 and got == fill
    assert backend.counter["range"] == before + 6
    backend.put("empty", b"")
    assert _fetch_into(fetch, path, "empty", 0, 10) == (0, fill)
    with pytest.raises(NotFound):
        _fetch_into(fetch, path, "no/such/key", 0, 10)
    if impl == "backend":
        backend.put("dir/file", b"x")
        with pytest.raises(NotFound):
            _fetch_into(fetch, path, "dir", 0, 10)  # a "directory" is not an object


def test_fetch_range_into_large(backend, tmp_path):
    """Several MiB in one call (S3 streams the body in 1 MiB pieces), from many threads at once."""
    data = os.urandom(5 * MiB + 333)
    backend.put("big", data)
    path = tmp_path / "out"
    with open(path, "wb") as f:
        f.truncate(len(data) + MiB)
    fd = os.open(path, os.O_RDWR)
    try:
        assert backend.fetch_range_into("big", 0, 3 * MiB + 5, fd, MiB) == 3 * MiB + 5
        assert os.pread(fd, 5 * MiB, 0) == bytes(MiB) + data[: 3 * MiB + 5] + bytes(MiB - 5)
        pieces = [(off, min(MiB + 17, len(data) - off)) for off in range(0, len(data), MiB + 17)]
        with ThreadPoolExecutor(4) as ex:
            counts = list(ex.map(lambda p: backend.fetch_range_into("big", p[0], p[1] + 99, fd, p[0]), pieces))
        assert counts == [min(length + 99, len(data) - off) for off, length in pieces]  # stops at the end
    finally:
        os.close(fd)
    assert path.read_bytes() == data + bytes(MiB)  # the tail past the object stays untouched


def test_local_fetch_range_into_without_copy_file_range(tmp_path, monkeypatch):
    """Where the kernel refuses copy_file_range (another file system, ...), a buffer copy is used."""
    import errno

    from artfs.backends import local

    b = local.LocalBackend(str(tmp_path / "store"))
    data = os.urandom(2 * MiB + 7)
    b.put("k", data)

    def refuse(*a):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(local.os, "copy_file_range", refuse)
    path = tmp_path / "out"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        assert b.fetch_range_into("k", 5, 3 * MiB, fd, 1) == len(data) - 5
    finally:
        os.close(fd)
    assert path.read_bytes() == b"\0" + data[5:]


# --- files -------------------------------------------------------------------------------------


def test_put_file_download_file_multipart(backend_url, tmp_path):
    if backend_url.startswith("s3://"):
        from artfs.backends.s3 import S3Backend

        # S3's smallest part is 5 MiB: 11 MiB + a bit is three parts
        b = S3Backend(backend_url, multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    else:
        b = open_backend(backend_url)
    data = os.urandom(11 * MiB + 12345)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    b.put_file("blobs/big", str(src))

    if is_s3(b):
        etag = b.client.head_object(Bucket=b.bucket, Key=b._key("blobs/big"))["ETag"]
        assert etag.strip('"').endswith("-3"), f"not a 3-part multipart upload: {etag}"

    dst = tmp_path / "dst.bin"
    dst.write_bytes(b"junk" * 10 * MiB)  # longer than the object: must be truncated
    assert b.download_file("blobs/big", str(dst)) == len(data)
    assert dst.read_bytes() == data
    assert b.get_range("blobs/big", 6 * MiB - 3, 7) == data[6 * MiB - 3 : 6 * MiB + 4]
    b.close()


def test_put_file_small(backend, tmp_path):
    src = tmp_path / "small"
    src.write_bytes(b"small file")
    backend.put_file("s", str(src))
    assert backend.get("s") == b"small file"
    out = tmp_path / "out"
    assert backend.download_file("s", str(out)) == 10
    assert out.read_bytes() == b"small file"


def test_put_file_of_missing_local_file_is_oserror(backend, tmp_path):
    with pytest.raises(FileNotFoundError):
        backend.put_file("k", str(tmp_path / "nope"))


# --- metadata, listing, deleting ---------------------------------------------------------------


def test_head(backend):
    assert backend.head("h") is None
    assert not backend.exists("h")
    backend.put("h", b"12345")
    info = backend.head("h")
    assert info is not None and info.key == "h" and info.size == 5
    assert abs(info.mtime - time.time()) < 300
    assert backend.exists("h")


def test_list_and_list_dirs(backend, backend_url):
    keys = ["a/1", "a/b/2", "a/b/3", "ab/4", "c/d/5", "top"]
    for k in keys:
        backend.put(k, k.encode())
    # a sibling store whose root shares our root's name as a prefix must stay invisible
    sibling = open_backend(backend_url + "-other")
    sibling.put("a/zzz", b"not ours")

    assert sorted(i.key for i in backend.list("")) == keys
    assert sorted(i.key for i in backend.list("a/")) == ["a/1", "a/b/2", "a/b/3"]
    assert sorted(i.key for i in backend.list("a/b/")) == ["a/b/2", "a/b/3"]
    assert list(backend.list("missing/")) == []
    sizes = {i.key: i.size for i in backend.list("")}
    assert sizes == {k: len(k) for k in keys}

    assert backend.list_dirs("") == ["a", "ab", "c"]
    assert backend.list_dirs("a/") == ["b"]
    assert backend.list_dirs("c/") == ["d"]
    assert backend.list_dirs("missing/") == []
    sibling.close()


def test_delete(backend):
    backend.delete("never/existed")  # not an error
    backend.put("d/e/f", b"x")
    backend.delete("d/e/f")
    assert backend.head("d/e/f") is None
    with pytest.raises(NotFound):
        backend.get("d/e/f")
    assert list(backend.list("d/")) == []
    assert backend.list_dirs("") == []
    backend.delete("d/e/f")  # twice is fine


def test_many_threads_share_one_backend(backend):
    def work(i: int) -> bytes:
        backend.put(f"t/{i}", b"%d" % i)
        return backend.get(f"t/{i}")

    with ThreadPoolExecutor(16) as ex:
        assert list(ex.map(work, range(64))) == [b"%d" % i for i in range(64)]


# --- S3 specifics ------------------------------------------------------------------------------


def test_s3_exclusive_put_whose_answer_was_lost(s3_url):
    """botocore retries a PUT whose answer was lost; the retry's 412 must not hide our success."""
    from artfs.backends.s3 import S3Backend

    b = S3Backend(s3_url)
    lost = []

    def lose_first_answer(attempts, response=None, **kwargs):
        if attempts == 1 and response is not None and response[0].status_code == 200:
            lost.append(True)
            return 0  # "retry after 0 s", as if the 200 never arrived
        return None

    b.client.meta.events.register_first("needs-retry.s3.PutObject", lose_first_answer)
    b.put("v/0.json", b"mine", exclusive=True)  # created by attempt 1, 412 on attempt 2
    assert lost and b.get("v/0.json") == b"mine"
    b.client.meta.events.unregister("needs-retry.s3.PutObject", lose_first_answer)
    with pytest.raises(AlreadyExists):
        b.put("v/0.json", b"mine", exclusive=True)  # no retry involved: a plain conflict
    b.close()


KEYS = ["p/blobs/xxh128/ab/0123456789abcdef", "odd name/with space+plus&amp=eq~tilde", "ünï/cødé", "a//b/./c/../d"]


def test_s3_get_blob(s3_url):
    """The small-blob GET (a direct request, not botocore's path) returns the bytes of keys of
    every kind, counts as one GET, and reports a missing key as botocore's path does."""
    from artfs.backends.s3 import S3Backend

    b = S3Backend(s3_url)
    data = {k: os.urandom(100 + i) for i, k in enumerate(KEYS)}
    for k, v in data.items():
        b.put(k, v)
    before = b.counter["get"]
    for k, v in data.items():
        assert b.get_blob(k) == v
    assert b.counter["get"] == before + len(KEYS)
    d = b._direct_obj
    assert d is not None and d.on
    for k, v in data.items():  # the direct request itself answers (no fallback hid a failure)
        assert d.get(b._key(k)) == v
    with pytest.raises(NotFound) as ei:
        b.get_blob("no/such/blob")
    assert "no/such/blob" in str(ei.value)
    assert b._direct_obj.on  # a missing key says nothing about the request: still direct
    b.close()


def test_s3_ranged_fetch_is_direct(s3_url, tmp_path):
    """The lazy reader's ranged GETs (``fetch_range_into``) are answered by the direct request
    itself, streamed in place: keys of every kind, a range within one piece and across several,
    one crossing the end of the object; each call counts as one range GET. A range past the end
    and a missing key are answered as botocore's path answers them, and keep the direct path on."""
    from artfs.backends._s3direct import PIECE
    from artfs.backends.s3 import S3Backend

    b = S3Backend(s3_url)
    big = os.urandom(2 * PIECE + 12345)
    b.put("big", big)
    path = tmp_path / "out"
    path.write_bytes(b"\xee" * (len(big) + 10))
    fd = os.open(path, os.O_RDWR)
    try:
        b.fetch_range_into("big", 0, 1, fd, 0)  # sets up the direct path
        d = b._direct_obj
        assert d is not None and d.on and d.ranges
        for key in KEYS:
            b.put(key, big[:1000])
            assert d.get_range_into(b._key(key), 10, 100, fd, 3) == (100, True)
            assert os.pread(fd, 100, 3) == big[10:110]
        before = b.counter["range"]
        for off, length, at in [(5, 100, 7), (PIECE - 3, PIECE + 9, 0), (0, len(big), 10), (PIECE, 2 * PIECE, 1)]:
            want = big[off: off + length]
            assert d.get_range_into(b._key("big"), off, length, fd, at) == (len(want), True)
            assert os.pread(fd, len(want), at) == want
            assert b.fetch_range_into("big", off, length, fd, at) == len(want)
            assert os.pread(fd, len(want), at) == want
        assert b.counter["range"] == before + 4
        assert d.get_range_into(b._key("big"), len(big), 10, fd, 0) == (0, False)  # 416
        assert b.fetch_range_into("big", len(big) + 5, 10, fd, 0) == 0
        with pytest.raises(NotFound):
            b.fetch_range_into("no/such/blob", 0, 10, fd, 0)
        assert d.on and d.ranges  # neither says anything about the request: still direct
    finally:
        os.close(fd)
    b.close()


def test_s3_get_blob_unsigned_falls_back_when_refused(s3_url):
    """Unsigned requests to a store that wants signatures: refused, then botocore's path gives the
    same error as a plain get (PermissionDenied), and the direct path is off for this backend."""
    from artfs._errors import PermissionDenied
    from artfs.backends.s3 import S3Backend

    signed = S3Backend(s3_url)
    signed.put("k", b"x")
    b = S3Backend(s3_url, unsigned=True)
    try:
        expected = b.get("k")
    except PermissionDenied:  # a server that checks signatures: the same error through get_blob
        with pytest.raises(PermissionDenied):
            b.get_blob("k")
        assert b._direct_obj is not None and not b._direct_obj.on
    else:  # a server that serves anonymous reads (moto): the direct path answers them
        assert b.get_blob("k") == expected == b"x"
    b.close()
    signed.close()


@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEB0aDAbc/def+ghi="])
def test_s3_direct_get_signature_is_botocores(token):
    """The direct GET's SigV4 headers are exactly those botocore's S3 signer computes."""
    import datetime

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from botocore.utils import percent_encode

    from artfs.backends.s3 import _DirectGet

    creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    for base, region in [("http://127.0.0.1:9000/bkt/", "us-east-1"),
                         ("https://bkt.s3.eu-west-3.amazonaws.com/", "eu-west-3")]:
        d = _DirectGet(base, None, creds, region)
        for key in KEYS:
            quoted = percent_encode("pre/fix/" + key, safe="/~")
            req = AWSRequest(method="GET", url=base + quoted)
            S3SigV4Auth(creds, "s3", region).add_auth(req)
            theirs = {k.lower(): req.headers[k] for k in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256")}
            if token:
                theirs["x-amz-security-token"] = req.headers["X-Amz-Security-Token"]
            when = datetime.datetime.strptime(theirs["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc)  # the same second as botocore's signature
            mine = {k.lower(): v for k, v in d.headers(d.path + quoted, when).items()}
            assert mine == theirs


def test_s3_url_parsing():
    from artfs.backends.s3 import S3Backend

    assert S3Backend("s3://bkt").prefix == ""
    assert S3Backend("s3://bkt/").url == "s3://bkt"
    b = S3Backend("s3://bkt/a/b/")
    assert (b.bucket, b.prefix, b.url, b._key("k/x")) == ("bkt", "a/b/", "s3://bkt/a/b", "a/b/k/x")
    with pytest.raises(ValueError):
        S3Backend("s3:///nobucket")


def test_s3_fetch_range_into_server_ignoring_range(tmp_path):
    """A server that answers a ranged GET with the whole object (200, no Content-Range)."""
    import io

    from botocore.response import StreamingBody

    from artfs.backends.s3 import S3Backend

    data = os.urandom(3 * MiB + 11)

    class Client:
        def get_object(self, **kw):
            assert kw["Range"] == f"bytes={MiB + 3}-{MiB + 3 + 2 * MiB - 1}"
            return {"Body": StreamingBody(io.BytesIO(data), len(data)),
                    "ResponseMetadata": {"HTTPStatusCode": 200}}

    b = S3Backend("s3://bkt")
    b._client_obj = Client()
    path = tmp_path / "out"
    path.write_bytes(b"")
    fd = os.open(path, os.O_RDWR)
    try:
        assert b.fetch_range_into("k", MiB + 3, 2 * MiB, fd, 0) == 2 * MiB
    finally:
        os.close(fd)
    assert path.read_bytes() == data[MiB + 3 : 3 * MiB + 3]


# --- an S3 endpoint that is down ---------------------------------------------------------------


@pytest.fixture
def fake_credentials(monkeypatch):
    from artfs.testing import CONFLICTING_ENV

    for k in CONFLICTING_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def _all_calls_unavailable(b, tmp_path, budget: float) -> None:
    src = tmp_path / "src"
    src.write_bytes(b"x")
    out = open(tmp_path / "range", "wb")
    fd = out.fileno()
    calls = {
        "get": lambda: b.get("k"),
        "get_blob": lambda: b.get_blob("k"),
        "get_range": lambda: b.get_range("k", 0, 10),
        "fetch_range_into": lambda: b.fetch_range_into("k", 0, 10, fd, 0),
        "head": lambda: b.head("k"),
        "put": lambda: b.put("k", b"x"),
        "put exclusive": lambda: b.put("k", b"x", exclusive=True),
        "put_file": lambda: b.put_file("k", str(src)),
        "download_file": lambda: b.download_file("k", str(tmp_path / "dst")),
        "list": lambda: list(b.list("")),
        "list_dirs": lambda: b.list_dirs(""),
        "delete": lambda: b.delete("k"),
    }
    for name, call in calls.items():
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable) as ei:
            call()
        took = time.monotonic() - t0
        assert took < budget, f"{name} took {took:.1f} s"
        msg = str(ei.value)
        assert "\n" not in msg and "127.0.0.1" in msg, msg
    out.close()


def test_s3_endpoint_refusing_connections(fake_credentials, tmp_path):
    from artfs.backends.s3 import S3Backend

    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    b = S3Backend("s3://bucket/prefix", endpoint_url=endpoint, timeout=1)
    _all_calls_unavailable(b, tmp_path, budget=4)


def test_s3_endpoint_that_never_answers(fake_credentials, tmp_path):
    from artfs.backends.s3 import S3Backend

    # a socket that listens but never accepts: connects succeed (kernel backlog), answers never come
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(128)
        endpoint = "http://127.0.0.1:%d" % srv.getsockname()[1]
        b = S3Backend("s3://bucket/prefix", endpoint_url=endpoint, timeout=1)
        with open(tmp_path / "range", "wb") as out:
            for call in (b.get, b.get_blob, lambda k: b.fetch_range_into(k, 0, 10, out.fileno(), 0)):
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable):
                    call("k")
                assert time.monotonic() - t0 < 4
        b.close()


def test_s3_attempt_timeout_leaves_room_for_retries():
    """One attempt waits a third of the budget (a stall is retried), never under a second nor
    over the budget; retries themselves are bounded by the budget (tests/test_s3_faults.py)."""
    from artfs.backends.s3 import DEFAULT_TIMEOUT, _attempt_timeout

    assert _attempt_timeout(DEFAULT_TIMEOUT) == DEFAULT_TIMEOUT / 3
    assert _attempt_timeout(1.5) == 1.0
    assert _attempt_timeout(0.5) == 0.5


class ScriptedS3:
    """A real HTTP server on 127.0.0.1 whose answers to GETs are given by the test: raw bytes, so
    that the direct GET meets answers botocore would cope with and a careless reader would not.

    ``answer(n)`` gives the bytes for the n-th GET (0-based) and what to do then: "keep" the
    connection, "close" it, or "stall" (send nothing more until the server stops). Counts the
    connections accepted and the requests read.
    """

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests = 0
        self.heads: list[bytes] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._srv = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self._srv.getsockname()[1]
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        self._srv.settimeout(0.1)
        while not self._stop.is_set():
            try:
                c, _ = self._srv.accept()
            except OSError:
                continue
            with self._lock:
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(c,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, c: socket.socket) -> None:
        with c:
            buf = b""
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buf:
                    c.settimeout(0.1)
                    try:
                        got = c.recv(65536)
                    except socket.timeout:
                        if self._stop.is_set():
                            return
                        continue
                    except OSError:
                        return
                    if not got:
                        return
                    buf += got
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self._lock:
                    n = self.requests
                    self.requests += 1
                    self.heads.append(head)
                data, then = self.answer(n)
                try:
                    c.sendall(data)
                except OSError:
                    return
                if then == "close":
                    return
                if then == "stall":
                    self._stop.wait()
                    return

    def close(self) -> None:
        self._stop.set()
        self._srv.close()
        for t in self._threads:
            t.join(5)


def _ok(body: bytes, *headers: str) -> bytes:
    extra = "".join(h + "\r\n" for h in headers)
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


@pytest.fixture
def scripted(fake_credentials):
    servers: list[ScriptedS3] = []

    def make(answer):
        s = ScriptedS3(answer)
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.close()


def _direct_backend(server, timeout: float = 10):
    from artfs.backends.s3 import S3Backend

    b = S3Backend("s3://bucket/prefix", endpoint_url=server.url, timeout=timeout)
    d = b._direct()
    assert d is not None and d.on
    return b, d


def test_s3_direct_get_reuses_its_connection(scripted):
    """Complete answers keep the connection for the next GET; an answer that says
    ``Connection: close`` (or an HTTP/1.0 one) is not reused. The signed request names the key."""
    body = os.urandom(150_000)  # more than one read's worth
    closing = {2, 4}

    def answer(n):
        if n == 4:
            return b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, "close"
        return _ok(body, *(["Connection: close"] if n in closing else [])), "close" if n in closing else "keep"

    s = scripted(answer)
    b, d = _direct_backend(s)
    for _ in range(6):
        assert d.get("prefix/some/key") == body
    assert s.requests == 6
    assert s.connections == 3  # requests 0-2 on the first, 3-4 on the second, 5 on the third
    head = s.heads[0].decode()
    assert head.startswith("GET /bucket/prefix/some/key HTTP/1.1\r\n")
    assert "Authorization: AWS4-HMAC-SHA256 Credential=testing/" in head
    b.close()


@pytest.mark.parametrize("case", ["chunked", "short", "extra", "malformed", "503", "403", "closed"])
def test_s3_direct_get_refuses_answers_it_cannot_take(scripted, case):
    """Whatever is not a complete 200 framed by Content-Length gives no bytes from the direct
    GET, and the connection is not used again; get_blob then answers through botocore (the same
    bytes, or botocore's error). The direct path stays on unless the answer says that this server
    needs botocore's path (chunked framing, a refused request)."""
    body = b"the blob's bytes" * 100
    denied = b'<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>'
    bad = {
        "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        "short": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(body) + 10) + body,
        "extra": _ok(body) + b"HTTP/1.1 200 OK\r\n",
        "malformed": b"HTTP/1.1 200 OK\r\nContent-Length %d\r\n\r\n" % len(body) + body,
        "503": b"HTTP/1.1 503 Slow Down\r\nContent-Length: 0\r\n\r\n",
        "403": b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s" % (
            len(denied), denied),
        "closed": b"",
    }[case]

    def answer(n):
        if n == 0:
            return bad, "close" if case in ("short", "closed") else "keep"
        return _ok(body), "keep"

    s = scripted(answer)
    b, d = _direct_backend(s)
    assert d.get("prefix/k") is None
    assert d.on == (case not in ("chunked", "403"))
    conns = s.connections
    if case == "403":
        from artfs._errors import PermissionDenied

        with pytest.raises(PermissionDenied):  # botocore's path: what a 403 means (once more a 200 here)
            s.answer = lambda n: (bad, "keep")
            b.get_blob("k")
    else:
        assert b.get_blob("k") == body  # the direct GET again (or botocore's), on a new connection
        assert s.connections > conns
    b.close()


@pytest.mark.timeout(30)
def test_s3_direct_get_stall_ends_within_the_budget(scripted):
    """A server that stops in the middle of a body: the direct GET gives up by its deadline
    (not the socket's longer timeout), and get_blob raises StoreUnavailable within the budget."""
    body = os.urandom(100_000)

    def answer(n):
        return _ok(body)[:50_000], "stall"

    s = scripted(answer)
    b, d = _direct_backend(s, timeout=2)
    t0 = time.monotonic()
    assert d.get("prefix/k", time.monotonic() + 0.5) is None
    assert time.monotonic() - t0 < 1.5
    assert d.on
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        b.get_blob("k")
    assert time.monotonic() - t0 < 5
    b.close()
