"""The shape of the code: what the daemon may import, and the lower-level surface it imports.

The layers (README, "Code layout"): the library (``artfs``) never imports the daemon or its CLI
from below; the daemon (``artfsd``) and the CLI sit on top. The daemon reaches library internals
only through :mod:`artfs.lowlevel`, whose names are listed here so that a change to that surface
is a decision (as trio checks ``trio.lowlevel`` in ``_tests/test_exports.py``).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import artfs.lowlevel

ROOT = Path(__file__).resolve().parent.parent

LOWLEVEL = {
    "ROOT", "Attr", "Draft", "DraftBusy", "Drafts",
    "LazyBlobs", "stamp_ok", "blob_key",
    "check_alias", "check_name", "is_version", "parse_version", "is_pinned",
    "gc_paused", "list_projects",
    "RUN_ENV", "RunRecord", "logger_of_version", "new_run_id", "now_iso", "parse_run_path", "record_edge",
    "version_ref", "write_record",
    "FSTYPE", "add_mount_arguments", "apply_mount_options", "default_log_path", "find_mount", "pidfile_path",
    "results_path", "default_store_url",
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file, at any depth (function-level ones too)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module, [a.name for a in node.names]))
    return out


def test_lowlevel_exports_exactly_its_list() -> None:
    assert set(artfs.lowlevel.__all__) == LOWLEVEL
    assert len(artfs.lowlevel.__all__) == len(LOWLEVEL)
    for name in LOWLEVEL:
        assert getattr(artfs.lowlevel, name) is not None


def test_the_daemon_imports_only_public_names_of_the_library() -> None:
    bad = []
    for path in sorted((ROOT / "daemon").glob("*.py")):
        for line, module, names in _imports(path):
            if module != "artfs" and not module.startswith("artfs."):
                continue
            parts = module.split(".")[1:]
            if any(p.startswith("_") or p == "cli" for p in parts):
                bad.append(f"{path.name}:{line}: {module}")
            bad += [f"{path.name}:{line}: {module}.{n}" for n in names if n.startswith("_")]
    assert bad == []


def test_the_library_never_imports_the_daemon() -> None:
    bad = [f"{p.relative_to(ROOT)}:{line}: {module}"
           for p in sorted((ROOT / "artfs").rglob("*.py"))
           for line, module, _ in _imports(p) if module.split(".")[0] == "artfsd"]
    assert bad == []


def test_lowlevel_imports_no_cli_module() -> None:
    code = ("import sys, artfs.lowlevel; "
            "print(sorted(m for m in sys.modules if m == 'artfs.cli' or m.startswith('artfs._cli')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"


def test_version_imports_neither_httpx_nor_boto3() -> None:
    """``artfs --version`` (and ``import artfs``) stay light: the store's libraries load on use."""
    code = ("import sys; from artfs.cli import main; main(['--version']); "
            "print(sorted(m for m in ('httpx', 'boto3', 'botocore', 'artfs._store') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.splitlines() == ["artfs 0.1.0", "[]"]
    # touching a name imports what it needs: the class itself, with what other modules attach to it
    code = "import artfs; print(artfs.Store.__module__, hasattr(artfs.Run, 'upsert_artifact'), artfs.run)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.split() == ["artfs._store", "True", "None"]


# -- the store's keys are spelled in one module -------------------------------------------------------
#: a key segment of the store layout (see artfs/_layout.py) in a string literal or an f-string's
#: literal part: ``"blobs/"``, ``f"{project}/runs/{id}"``, ``akey + "versions/"``, ``"finished.json"``.
#: ``./artifacts/...`` (a local directory relative to the working directory) is not a key.
_KEY = re.compile(r"(?:^|(?<!\.)/)(?:blobs|artifacts|versions|info|aliases|digests|deleted|intents|deleting"
                  r"|groups|parts|finish|runs|lineage)/|(?:^|/)(?:index|finished|run)\.json$")

#: files being reworked by other engineers at the time of the key-layout change (issue 11): the
#: integrator removes each entry once the branch that reworks the file is merged and its keys go
#: through artfs._layout (daemon/fs.py spells an alias key; artfs/_cli_groups.py a groups prefix).
_KEY_EXEMPT = ("artfs/_draft.py", "artfs/_draft/", "daemon/fs.py", "daemon/drafts.py",
               "artfs/_cli_groups.py", "artfs/cli/")


def _literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of a file except docstrings (they may draw the layout)."""
    tree = ast.parse(path.read_text(), str(path))
    docs = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docs.add(id(first.value))
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def test_only_the_layout_module_spells_store_keys() -> None:
    bad = []
    for p in sorted([*(ROOT / "artfs").rglob("*.py"), *(ROOT / "daemon").rglob("*.py")]):
        rel = p.relative_to(ROOT).as_posix()
        if rel == "artfs/_layout.py" or rel.startswith(_KEY_EXEMPT):
            continue
        bad += [f"{rel}:{line}: {text!r}" for line, text in _literals(p) if _KEY.search(text)]
    assert bad == []


def test_the_key_pattern_finds_spelled_keys() -> None:
    """The check above can fail: each way a key used to be spelled is caught."""
    code = ('''k = f"{project}/runs/{run_id}/run.json"\nv = akey + "versions/"\nf = gkey + "finished.json"\n'''
            '''i = "index.json"\nhelp = "default: ./artifacts/NAME"\n''')
    tree = ast.parse(code)
    hits = sorted({n.lineno for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and isinstance(n.value, str) and _KEY.search(n.value)})
    assert hits == [1, 2, 3, 4]
