"""The bulk check of large manifests (artfs._manifest._bulk_entries) accepts exactly what the
entry-by-entry check accepts, builds the same entries, and lets the same errors through."""

from __future__ import annotations

import json
import random

import pytest

from artfs import ArtfsError, Entry, Manifest, digest_bytes
from artfs import _manifest
from artfs._manifest import version_digest
from artfs._names import check_path, check_paths

N = 80  # above _BULK_MIN
BAD_PATHS = [
    "", "../x", "a/../b", "a/..", "..", ".", "./a", "a/./b", "/abs", "/etc/passwd", "a//b", "a/", "/",
    "a\x00b", "\x00", "bad-\udcff-surrogate", "x" * 256, "a/" + "y" * 256, "é" * 128, "d/" + "é" * 128 + "/f",
    None, 5, ["a"], {"a": 1}, True,
]
GOOD_ODD_PATHS = ["...", "a/.hidden", "a b/c d", "back\\slash", "x" * 255, "é" * 127, "日本/" + "ファ" * 42,
                  "/".join(["d"] * 50) + "/f", "a/b..c", "..a", "a..", "line\nfeed", "tab\tx", "emoji-😀.bin"]
BAD_DIGESTS = [None, "", "xxh128:" + "A" * 32, "xxh128:" + "0" * 31, "xxh128:" + "0" * 33, "md5:" + "0" * 35,
               "xxh128:" + "g" * 32, "xxh128;" + "0" * 32, "xxh128:" + "0" * 31 + "\n", "xxh128:" + "é" * 32,
               "Xxh128:" + "0" * 32, 5, ["xxh128:" + "0" * 32], "xxh128:" + "0" * 31 + "xxh128:"[:1]]
BAD_SIZES = [-1, "3", 3.0, True, False, None, [1]]


def base_doc(rng: random.Random, n: int = N) -> dict:
    entries = []
    for i in range(n):
        p = f"d{i % 7}/sub{i % 3}/f{i:04d}.bin" if i % 5 else f"top{i:04d}"
        e = {"path": p, "digest": digest_bytes(str(i).encode()), "size": rng.randrange(0, 1 << 40)}
        if i % 11 == 0:
            e["executable"] = True
        entries.append(e)
    entries.sort(key=lambda e: e["path"])
    return {"format": 1, "project": "proj", "artifact": "art", "version": 3, "type": "dataset",
            "digest": digest_bytes(b"v"), "created": "2024-01-01T00:00:00.000Z", "description": None,
            "metadata": {}, "run": None, "commit_id": None, "entries": entries}


def outcome(data: bytes, bulk: bool, monkeypatch) -> object:
    monkeypatch.setattr(_manifest, "_BULK_MIN", 1 if bulk else 10**9)
    try:
        m = Manifest.from_bytes(data)
    except ArtfsError as e:
        return (type(e), str(e))
    return [tuple(e) for e in m.entries]


def mutations(rng: random.Random):
    def at(doc):
        return rng.randrange(len(doc["entries"]))

    def set_field(field, values):
        def f(doc):
            doc["entries"][at(doc)][field] = rng.choice(values)
        return f

    def drop_field(field):
        def f(doc):
            doc["entries"][at(doc)].pop(field, None)
        return f

    def dup(doc):
        i = at(doc)
        doc["entries"].insert(i, dict(doc["entries"][i]))

    def file_under_file(doc):
        e = doc["entries"][at(doc)]
        doc["entries"].append({"path": e["path"] + "/" + rng.choice(["x", "y/z"]), "digest": e["digest"], "size": 1})
        doc["entries"].sort(key=lambda e: str(e["path"]))

    def dir_is_file(doc):
        doc["entries"].append({"path": rng.choice(["d1", "d2/sub1", "d0/sub2"]), "digest": digest_bytes(b"x"),
                               "size": 1})
        doc["entries"].sort(key=lambda e: str(e["path"]))

    def swap(doc):
        i, j = at(doc), at(doc)
        doc["entries"][i], doc["entries"][j] = doc["entries"][j], doc["entries"][i]

    def reference(doc):
        e = doc["entries"][at(doc)]
        e["ref"] = rng.choice(["s3://b/k", "https://h/x", 5, None])
        if rng.random() < 0.5:
            e["digest"] = None
        if rng.random() < 0.5:
            e["size"] = rng.choice([None, 3, -2])
        if rng.random() < 0.5:
            e["ref_info"] = rng.choice([{"etag": "x"}, [1], None, {}])

    def ref_info_only(doc):
        doc["entries"][at(doc)]["ref_info"] = rng.choice([{"etag": "x"}, "s", 0])

    def not_object(doc):
        doc["entries"][at(doc)] = rng.choice(["a", 1, None, [1, 2]])

    def odd_good_path(doc):
        doc["entries"][at(doc)]["path"] = rng.choice(GOOD_ODD_PATHS)
        doc["entries"].sort(key=lambda e: str(e["path"]))

    def executable(doc):
        doc["entries"][at(doc)]["executable"] = rng.choice([0, 1, "", "yes", None, [], False, True])

    return [set_field("path", BAD_PATHS), set_field("digest", BAD_DIGESTS), set_field("size", BAD_SIZES),
            drop_field("path"), drop_field("digest"), drop_field("size"), dup, file_under_file, dir_is_file,
            swap, reference, ref_info_only, not_object, odd_good_path, executable]


@pytest.mark.parametrize("seed", range(400))
def test_bulk_and_entry_by_entry_agree(seed, monkeypatch):
    rng = random.Random(seed)
    doc = base_doc(rng, rng.choice([1, 2, 64, N, 200]))
    muts = mutations(rng)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        try:
            rng.choice(muts)(doc)
        except (AttributeError, TypeError, KeyError):  # an earlier mutation left an odd entry
            pass
    data = json.dumps(doc, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    assert outcome(data, True, monkeypatch) == outcome(data, False, monkeypatch)


def test_bulk_path_is_taken_and_round_trips(monkeypatch):
    entries = sorted((Entry(f"a/{i:05d}", digest_bytes(str(i).encode()), i, executable=i % 3 == 0)
                      for i in range(1000)), key=lambda e: e.path)
    entries.append(Entry("b", None, 0, ref="s3://bucket/b", ref_info={"etag": "e"}))
    m = Manifest("p", "a", 0, "dataset", entries, version_digest(entries), "2024-01-01T00:00:00.000Z")
    called = []
    orig = _manifest._bulk_entries
    monkeypatch.setattr(_manifest, "_bulk_entries", lambda raw: called.append(1) or orig(raw))
    back = Manifest.from_bytes(m.to_bytes())
    assert called and back == m and back.to_bytes() == m.to_bytes()


@pytest.mark.parametrize("path", BAD_PATHS)
def test_check_paths_raises_what_check_path_raises(path):
    paths = [f"ok/{i}" for i in range(50)] + [path] + ["zz"]
    with pytest.raises(ArtfsError) as one:
        check_path(path)
    with pytest.raises(type(one.value), match="^" + __import__("re").escape(str(one.value)) + "$"):
        check_paths(paths)


def test_check_paths_accepts_odd_good_paths():
    check_paths(GOOD_ODD_PATHS * 3)
    check_paths([])


# --------------------------------------------------------------------------------------------
# bulk writing: to_bytes and version_digest equal their plain definitions
# --------------------------------------------------------------------------------------------

def reference_to_bytes(m: Manifest) -> bytes:
    doc = {"format": 1, "project": m.project, "artifact": m.artifact, "version": m.version, "type": m.type,
           "digest": m.digest, "created": m.created, "description": m.description, "metadata": m.metadata,
           "run": m.run, "commit_id": m.commit_id, "entries": [e.to_json() for e in m.entries]}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def reference_version_digest(entries) -> str:
    import xxhash

    h = xxhash.xxh3_128()
    for e in sorted(entries, key=lambda e: e.path):
        rec_l = [e.path, e.digest, e.executable, e.ref]
        if e.ref is not None:
            info = e.ref_info or {}
            ident = {k: info[k] for k in _manifest.REF_IDENTITY if k in info}
            if e.digest is None:
                ident["size"] = e.size
            rec_l.append(ident)
        h.update(json.dumps(rec_l, ensure_ascii=False, sort_keys=True).encode("utf-8"))
        h.update(b"\n")
    return f"xxh128:{h.hexdigest()}"


ODD_CHARS = ["a", "é", '"', "\\", "\n", "\t", "\x01", "日", "😀", " ", "\u2028", "\x7f", "</"]


@pytest.mark.parametrize("seed", range(300))
def test_to_bytes_and_version_digest_equal_their_definitions(seed):
    rng = random.Random(seed)
    entries = {}
    for i in range(rng.randrange(0, 30)):
        p = "/".join("".join(rng.choice(ODD_CHARS) for _ in range(rng.randrange(1, 4))) for _ in range(rng.randrange(1, 3)))
        ref = rng.choice([None, None, None, "s3://b/k", "https://h/é"])
        digest = digest_bytes(str(i).encode()) if ref is None or rng.random() < 0.5 else None
        executable = rng.choice([True, False, False, 1, 0]) if rng.random() < 0.2 else rng.random() < 0.3
        info = rng.choice([None, {"etag": '"x"', "last_modified": "t"}, {"version_id": "v", "generation": 3}])
        entries[p] = Entry(p, digest, rng.randrange(0, 1 << 40), executable, ref, info if ref else None)
    es = sorted(entries.values(), key=lambda e: e.path)
    m = Manifest("p", "a", rng.randrange(5), "dataset", es, digest_bytes(b"v"), "2024-01-01T00:00:00.000Z",
                 rng.choice([None, "déjà \"vu\"\n"]), {"k": ["é", 1.5, None]}, rng.choice([None, "r"]), None)
    assert m.to_bytes() == reference_to_bytes(m)
    assert version_digest(es) == reference_version_digest(es)
    assert version_digest(list(reversed(es))) == version_digest(es)
