"""A guided tour: ``python -m artfs.demo``.

Runs the ``artfs`` CLI on the real default store (``$ARTFS_STORE``, else
``~/.local/share/artfs/store``) so what it logs is still there afterwards: a small sample dataset
is logged, inspected, changed and logged again (only the changed file is uploaded), aliased,
downloaded and checked byte for byte; then the store is mounted, a file is read through the
mount, a new file is copied into the artifact's ``draft/``, and the unmount commits it as the next
version. Each command is printed before it runs, like a tutorial.

The sample files are deterministic, so a second run finds the first version already logged
(identical content is never stored twice); the changed files carry the time of the run, so
every run adds exactly two versions, one new blob each.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

from . import cli
from ._cache import default_cache_dir
from .backends import default_store_url

PROJECT = "demo"
ARTIFACT = "bike-dataset"
NAME = f"{PROJECT}/{ARTIFACT}"


def say(text: str = "") -> None:
    print(text, flush=True)


def artfs(*args: str) -> str:
    """Run one ``artfs`` command in this process, echoing it and its output; return its stdout."""
    say(f"\n$ artfs {shlex.join(args)}")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = cli.main(list(args))
    out = buf.getvalue()
    sys.stdout.write(out)
    sys.stdout.flush()
    if rc != 0:
        raise SystemExit(f"demo: 'artfs {args[0]}' failed with exit code {rc}")
    return out


def make_dataset(root: str) -> dict[str, bytes]:
    """A few image-like binaries in nested directories, a CSV and a README; returns path -> bytes."""
    rng = random.Random(42)
    files: dict[str, bytes] = {}
    for split, count in (("train", 6), ("val", 3)):
        for i in range(1, count + 1):
            header = b"\x89PNG\r\n\x1a\n"  # looks like a PNG to `file`, is noise otherwise
            files[f"images/{split}/{i:04d}.png"] = header + rng.randbytes(rng.randint(20_000, 120_000))
    rows = ["file,label"] + [f"{p},{rng.choice(['bicycle', 'tandem', 'unicycle'])}" for p in sorted(files)]
    files["labels.csv"] = ("\n".join(rows) + "\n").encode()
    files["README.txt"] = b"Bicycle photos for the artfs demo. Labels are in labels.csv.\n"
    for rel, data in files.items():
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return files


def read_tree(root: str) -> dict[str, bytes]:
    out = {}
    for dirpath, _, filenames in os.walk(root):
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            with open(p, "rb") as f:
                out[os.path.relpath(p, root).replace(os.sep, "/")] = f.read()
    return out


def verify(root: str, expected: dict[str, bytes], what: str) -> None:
    got = read_tree(root)
    if got != expected:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        changed = sorted(p for p in set(got) & set(expected) if got[p] != expected[p])
        raise SystemExit(f"demo: {root} does not match {what}: missing {missing}, extra {extra}, changed {changed}")
    say(f"  verified: {len(got)} files in {root} are byte-identical to {what}")


def version_of(put_output: str) -> str:
    m = re.search(rf"{re.escape(NAME)}:(v\d+)", put_output)
    if not m:
        raise SystemExit(f"demo: cannot find the version in {put_output!r}")
    return m.group(1)


def mount_tour(tmp: str) -> None:
    """Read through a mount, write into draft/, and let the unmount commit the next version."""
    if not os.path.exists("/dev/fuse") or importlib.util.find_spec("artfsd") is None:
        say("  (skipped: this machine has no /dev/fuse, or the mount daemon is not installed)")
        return
    from ._mounts import find_mount

    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    say(f"\n$ artfs mount {mnt}")  # the mount command becomes the daemon: run it as its own process
    r = subprocess.run([sys.executable, "-m", "artfs.cli", "mount", mnt], stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    sys.stdout.write(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"demo: 'artfs mount' failed with exit code {r.returncode}")
    art = os.path.join(mnt, *NAME.split("/"))
    try:
        say(f"\n$ ls {art}")
        say("  " + "  ".join(sorted(os.listdir(art))))
        labels = os.path.join(art, "latest", "labels.csv")
        say(f"\n$ head -3 {labels}")
        with open(labels) as f:
            for line in f.readlines()[:3]:
                say("  " + line.rstrip())
        notes = os.path.join(tmp, "notes.txt")
        with open(notes, "w") as f:
            f.write(f"Notes of the demo run at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        draft = os.path.join(art, "draft")
        say(f"\n$ cp {notes} {draft}/")
        shutil.copy(notes, draft)
        say(f"$ ls {draft}")
        say("  " + "  ".join(sorted(os.listdir(draft))))
        artfs("umount", mnt)  # commits the draft, waits, prints the version it created
    finally:
        info = find_mount(mnt)
        if info is not None and info.fstype == "fuse.artfs":  # something failed above: never leave it mounted
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
    artfs("ls", NAME)


def main() -> None:
    say("artfs demo: version a small dataset with the artfs command")
    say(f"  store: {default_store_url()}   (set ARTFS_STORE or --store to use another, e.g. s3://bucket/prefix)")
    say(f"  cache: {default_cache_dir()}   (set ARTFS_CACHE_DIR to move it)")

    with tempfile.TemporaryDirectory(prefix="artfs-demo-") as tmp:
        data = os.path.join(tmp, ARTIFACT)
        original = make_dataset(data)
        say(f"\n1. A sample dataset of {len(original)} files in {data}, logged as a version:")
        out = artfs("put", "-n", NAME, "-t", "dataset", data,
                    "--description", "bicycle photos, first cut", "--metadata", "classes=3",
                    "--metadata", "source=demo")
        first = version_of(out)
        if "matched" in out:
            say("  (identical content was logged by an earlier run of the demo, so no new version was made)")

        say("\n2. What the store holds:")
        artfs("ls", PROJECT)
        artfs("show", f"{NAME}:{first}")

        say("\n3. Change one file and log again: only that file's bytes are uploaded.")
        with open(os.path.join(data, "labels.csv"), "ab") as f:
            f.write(f"images/val/0003.png,bicycle  # relabelled {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        changed = read_tree(data)
        out = artfs("put", "-n", NAME, data, "--description", "labels fixed")
        second = version_of(out)
        say("   What changed between the two, from their manifests alone:")
        artfs("diff", f"{NAME}:{first}", second)

        say("\n4. Name versions with aliases; 'latest' always follows the newest one.")
        artfs("alias", "set", f"{NAME}:{first}", "best")
        artfs("ls", NAME)

        say("\n5. Download versions by alias and check them byte for byte:")
        best = os.path.join(tmp, "best")
        artfs("get", f"{NAME}:best", "--root", best)
        verify(best, original, f"{NAME}:{first} (the first dataset)")
        latest = os.path.join(tmp, "latest")
        artfs("get", f"{NAME}:latest", "--root", latest)
        verify(latest, changed, f"{NAME}:{second} (the changed dataset)")

        say("\n6. Mount the store: versions are directories, and draft/ is written like a local one;")
        say("   the unmount commits it as the next version.")
        mount_tour(tmp)

    say("\nDone. The versions stay in the store; look at them again with")
    say(f"  artfs ls {NAME}        artfs show {NAME}:best --files")
    say(f"and remove them with 'artfs delete {NAME}:vN --delete-aliases' and 'artfs gc {PROJECT}'.")


if __name__ == "__main__":
    main()
