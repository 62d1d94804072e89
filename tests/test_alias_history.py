"""The history of aliases (``artfs alias log``) and the store as of a time (``ls``/``get --as-of``).

Every move is one object of its own: racing movers on S3 (threads and processes, on the moto
server) lose none. Times for ``--as-of`` are taken from what the store recorded (a move's
record, a manifest's ``created``), never from sleeps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import artfs
from artfs import Artifact, Cache, NotFound, Store
from artfs import _layout as L
from artfs._aliaslog import iso_ns, moves
from artfs._asof import parse_time, timeline


def log_version(store: Store, tmp: Path, text: str, *, name: str = "ds", aliases: tuple[str, ...] | list[str] = ()
                ) -> int:
    src = tmp / f"src-{name}-{text}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "data.txt").write_text(text)
    art = Artifact(name, type="dataset")
    art.add_dir(str(src))
    return store.log_artifact(art, project="p", aliases=list(aliases)).version  # type: ignore[return-value]


def artfs_cli(store: Store, tmp: Path, *args: str, code: int = 0, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("ARTFS_", "XDG_"))}
    e.update(ARTFS_STORE=store.url, ARTFS_CACHE_DIR=str(tmp / "cli-cache"), HOME=str(tmp), **(env or {}))
    p = subprocess.run([sys.executable, "-m", "artfs.cli", *args], env=e, capture_output=True, text=True,
                       timeout=120, cwd=tmp)
    assert p.returncode == code, (p.stdout, p.stderr)
    return p


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(str(tmp_path / "store"), cache=Cache(str(tmp_path / "cache")))


def test_every_move_is_recorded_with_who_and_which_run(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero", aliases=["prod"])
    log_version(store, tmp_path, "one")
    artfs_cli(store, tmp_path, "alias", "set", "p/ds:v1", "prod", env={"ARTFS_RUN_ID": "p/deploy01"})
    run = artfs.init(project="p", store=store)
    try:
        a = store.artifact("p/ds:v0")
        a.aliases.append("best")
        a.save()
    finally:
        artfs.finish()
    store.rename_alias("p", "ds", "best", "good")
    store.remove_alias("p", "ds", "prod")
    got = [(m.alias, m.action, m.from_, m.to, m.run) for m in moves(store, "p", "ds")]
    assert got == [("prod", "set", None, 0, None), ("prod", "set", 0, 1, "p/deploy01"),
                   ("best", "set", None, 0, run.path), ("good", "set", None, 0, None),
                   ("best", "remove", 0, None, None), ("prod", "remove", 1, None, None)]
    m = moves(store, "p", "ds", "prod")[1]
    assert m.host and m.user and m.pid and m.time.endswith("Z") and parse_time(m.time) // 1000 == m.time_ns // 1000
    # the command shows the same, and the automatic moves of latest
    docs = json.loads(artfs_cli(store, tmp_path, "alias", "log", "p/ds", "--json").stdout)
    assert [(d["alias"], d["from"], d["to"], d["automatic"]) for d in docs if d["alias"] == "latest"] == [
        ("latest", None, 0, True), ("latest", 0, 1, True)]
    text = artfs_cli(store, tmp_path, "alias", "log", "p/ds", "prod").stdout
    assert text.splitlines()[0].split() == ["TIME", "ALIAS", "MOVE", "USER", "HOST", "RUN", "NOTE"]
    assert "v0 -> v1" in text and "p/deploy01" in text and "removed, was v1" in text and "latest" not in text


def test_deleted_versions_stay_in_the_history_marked_deleted(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero", aliases=["prod"])
    log_version(store, tmp_path, "one")
    store.delete_version("p", "ds", 0, delete_aliases=True)
    docs = json.loads(artfs_cli(store, tmp_path, "alias", "log", "p/ds", "prod", "--json").stdout)
    assert [(d["action"], d["from"], d["to"], d["reason"]) for d in docs] == [
        ("set", None, 0, None), ("remove", 0, None, "v0 deleted")]
    assert docs[0]["to_deleted"] and docs[1]["from_deleted"]
    text = artfs_cli(store, tmp_path, "alias", "log", "p/ds").stdout
    assert "- -> v0 (deleted)" in text and "removed, was v0 (deleted)" in text


def test_records_are_untrusted_input(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero", aliases=["prod"])
    (m,) = moves(store, "p", "ds")
    doc = m.to_json()
    t = m.time_ns
    store.backend.put(L.alias_log_key("p", "ds", "prod", t + 1, "aaa"), json.dumps(doc).encode())  # time != key's
    store.backend.put(L.alias_log_key("p", "ds", "prod", t + 2, "bbb"),
                      json.dumps({**doc, "time_ns": t + 2, "to": "../x"}).encode())
    store.backend.put(L.alias_log_key("p", "ds", "other", t + 3, "ccc"),
                      json.dumps({**doc, "time_ns": t + 3}).encode())  # names another alias than its key
    store.backend.put(L.alias_log_key("p", "ds", "prod", t + 4, "ddd"), b"not json")
    store.backend.put(L.alias_log_prefix("p", "ds", "prod") + "notakey.json", json.dumps(doc).encode())
    assert [(m.alias, m.to) for m in moves(store, "p", "ds")] == [("prod", 0)]


def test_errors(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero")
    assert "no such artifact" in artfs_cli(store, tmp_path, "alias", "log", "p/nope", code=3).stderr
    artfs_cli(store, tmp_path, "alias", "log", "p/ds:v0", code=2)
    artfs_cli(store, tmp_path, "alias", "log", "p/ds", "../x", code=2)
    assert "no recorded alias moves of prod" in artfs_cli(store, tmp_path, "alias", "log", "p/ds", "prod").stderr


# -- racing movers on S3 -----------------------------------------------------------------------------
MOVER = textwrap.dedent('''
    import sys, threading
    from artfs import Cache, Store
    url, cache, who, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    def mover(t):
        store = Store(url, cache=Cache(f"{cache}-{t}"))
        for i in range(count):
            store.set_alias("p", "ds", "prod", (i + t) % 3, run=f"p/{who}t{t}i{i}")
    threads = [threading.Thread(target=mover, args=(t,)) for t in range(2)]
    for th in threads: th.start()
    for th in threads: th.join()
''')


def test_racing_movers_on_s3_lose_no_move(s3_url: str, tmp_path: Path) -> None:
    store = Store(s3_url, cache=Cache(str(tmp_path / "cache")))
    for text in ("a", "b", "c"):
        log_version(store, tmp_path, text)
    count = 8
    procs = [subprocess.Popen([sys.executable, "-c", MOVER, s3_url, str(tmp_path / f"c{k}"), f"proc{k}", str(count)])
             for k in range(3)]

    def local_mover(t: int) -> None:
        s = Store(s3_url, cache=Cache(str(tmp_path / f"local-{t}")))
        for i in range(count):
            s.set_alias("p", "ds", "prod", (i + t) % 3, run=f"p/localt{t}i{i}")

    threads = [threading.Thread(target=local_mover, args=(t,)) for t in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    got = moves(store, "p", "ds", "prod")
    expected = {f"p/proc{k}t{t}i{i}" for k in range(3) for t in range(2) for i in range(count)}
    expected |= {f"p/localt{t}i{i}" for t in range(2) for i in range(count)}
    assert sorted(m.run or "" for m in got) == sorted(expected)  # every move, once
    assert [m.time_ns for m in got] == sorted(m.time_ns for m in got)
    assert store.aliases("p", "ds")["prod"] in {m.to for m in got}


# -- as of a time ------------------------------------------------------------------------------------
def _created_ns(store: Store, n: int) -> int:
    return parse_time(store.manifest("p", "ds", n).created)


def test_ls_and_get_as_of_before_and_after_a_move(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero", aliases=["prod"])
    log_version(store, tmp_path, "one")
    store.set_alias("p", "ds", "prod", 1)
    c0, c1 = _created_ns(store, 0), _created_ns(store, 1)
    assert c0 < c1  # two commits, one after the other (the manifests' times have milliseconds)
    moved = moves(store, "p", "ds", "prod")[-1].time_ns
    before_v1, before_move, after = iso_ns(c1 - 1000), iso_ns(moved - 1000), iso_ns(moved + 1000)  # µs: the next one

    def ls(t: str) -> dict[int, list[str]]:
        return {d["version"]: d["aliases"] for d in json.loads(
            artfs_cli(store, tmp_path, "ls", "p/ds", "--as-of", t, "--json").stdout)}

    assert ls(before_v1) == {0: ["latest", "prod"]}  # v1 did not exist yet
    assert ls(before_move) == {0: ["prod"], 1: ["latest"]}
    assert ls(after) == {0: [], 1: ["latest", "prod"]}
    root = artfs_cli(store, tmp_path, "get", "p/ds:prod", "--as-of", before_move, "--root",
                     str(tmp_path / "then")).stdout
    assert (Path(root.strip()) / "data.txt").read_text() == "zero"
    artfs_cli(store, tmp_path, "get", "p/ds:prod", "--as-of", after, "--root", str(tmp_path / "now"))
    assert (tmp_path / "now" / "data.txt").read_text() == "one"
    assert "did not exist at" in artfs_cli(store, tmp_path, "get", "p/ds:v1", "--as-of", before_v1, code=3).stderr
    assert "no such alias" in artfs_cli(store, tmp_path, "get", "p/ds:prod", "--as-of", iso_ns(c0 - 10**9),
                                        code=3).stderr
    docs = json.loads(artfs_cli(store, tmp_path, "ls", "p", "--as-of", before_v1, "--json").stdout)
    assert docs == [{"artifact": "ds", "type": "dataset", "versions": 1, "latest": 0}]
    artfs_cli(store, tmp_path, "ls", "p/ds", "--as-of", "last tuesday", code=2)


def test_as_of_an_explicit_latest_and_a_deleted_version(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero")
    log_version(store, tmp_path, "one")
    store.set_alias("p", "ds", "latest", 0)  # pinned back
    pinned = moves(store, "p", "ds", "latest")[-1].time_ns
    log_version(store, tmp_path, "two")  # logging a version clears an explicit latest
    c2 = _created_ns(store, 2)
    tl = timeline(store, "p", "ds")
    assert tl.latest_at(pinned - 1000) == 1 and tl.latest_at(pinned) == 0
    assert tl.latest_at(c2) == 2 and store.aliases("p", "ds")["latest"] == 2
    store.delete_version("p", "ds", 1)
    tl = timeline(store, "p", "ds")
    assert tl.spans[1].deleted_ns is not None and tl.versions_at(pinned) == [0, 1]
    assert tl.versions_at(tl.spans[1].deleted_ns) == [0, 2]
    docs = json.loads(artfs_cli(store, tmp_path, "ls", "p/ds", "--as-of", iso_ns(pinned - 1000), "--json").stdout)
    assert [(d["version"], d["aliases"], bool(d["deleted"])) for d in docs] == [(0, [], False), (1, ["latest"], True)]
    err = artfs_cli(store, tmp_path, "get", "p/ds:latest", "--as-of", iso_ns(pinned - 1000), code=3).stderr
    assert "was p/ds:v1" in err and "deleted since" in err
    with pytest.raises(NotFound):
        tl.resolve(artfs.parse_spec("p/ds:v1"), pinned)


def test_parse_time() -> None:
    assert parse_time("1970-01-01T00:00Z") == 0
    assert parse_time("1970-01-01T01:00:00.5+01:00") == 500_000_000
    assert parse_time("2026-11-30T12:00Z") == parse_time("2026-11-30T12:00:00.000000+00:00")
    with pytest.raises(artfs.InvalidName):
        parse_time("")


def test_a_mount_as_of_a_time_shows_the_versions_and_aliases_of_then(store: Store, tmp_path: Path) -> None:
    from artfsd.testing import MountProcess

    log_version(store, tmp_path, "zero", aliases=["prod"])
    log_version(store, tmp_path, "one")
    store.set_alias("p", "ds", "prod", 1)
    log_version(store, tmp_path, "two")
    c1 = _created_ns(store, 1)
    moved = moves(store, "p", "ds", "prod")[-1].time_ns
    for when, listing, links, text in [
        (iso_ns(c1 - 1000), {"v0", "latest", "prod"}, {"latest": "v0", "prod": "v0"}, "zero"),
        (iso_ns(moved - 1000), {"v0", "v1", "latest", "prod"}, {"latest": "v1", "prod": "v0"}, "zero"),
    ]:
        with MountProcess(store.url, tmp_path / "mnt", cache_dir=tmp_path / "mount-cache",
                          args=["--as-of", when]) as m:
            art = Path(m.path("p/ds"))
            assert set(os.listdir(art)) == listing  # no v2, no draft/: the past is read-only
            assert {k: os.readlink(art / k) for k in links} == links
            assert (art / "prod" / "data.txt").read_text() == text
            with pytest.raises(OSError):
                (art / "v0" / "new.txt").write_text("x")


def test_mount_as_of_refuses_a_time_it_cannot_read(store: Store, tmp_path: Path) -> None:
    log_version(store, tmp_path, "zero")
    (tmp_path / "mnt").mkdir()
    p = artfs_cli(store, tmp_path, "mount", str(tmp_path / "mnt"), "--as-of", "noon", code=2)
    assert "not an ISO 8601 time" in p.stderr


def test_the_python_api_has_the_history_and_the_past(store: Store, tmp_path: Path) -> None:
    import datetime as dt

    log_version(store, tmp_path, "zero", aliases=["prod"])
    log_version(store, tmp_path, "one")
    store.set_alias("p", "ds", "prod", 1)
    api = artfs.Api(store=store)
    history = api.alias_history("p/ds", "prod")
    assert [(m.from_, m.to) for m in history] == [(None, 0), (0, 1)]
    before = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=history[-1].time_ns // 1000 - 1)
    assert api.artifact("p/ds:prod", as_of=before).version == "v0"
    assert api.artifact("p/ds:prod", as_of=iso_ns(history[-1].time_ns + 1000)).version == "v1"
    assert api.artifact("p/ds:prod").version == "v1"
