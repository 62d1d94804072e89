"""The shape of the code: what the daemon may import, and the lower-level surface it imports.

The layers (README, "Code layout"): the library (``artfs``) never imports the daemon or its CLI
from below; the daemon (``artfsd``) and the CLI sit on top. The daemon reaches library internals
only through :mod:`artfs.lowlevel`, whose names are listed here so that a change to that surface
is a decision (as trio checks ``trio.lowlevel`` in ``_tests/test_exports.py``).
"""

from __future__ import annotations

import ast
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


def _relative_imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a module of ``artfs``, relative ones resolved."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            out += [(node.lineno, f"{mod}.{a.name}" if node.module is None else mod) for a in node.names]
    return out


def test_the_cli_is_a_leaf_and_alone_speaks_argparse() -> None:
    """Nothing in the library imports ``artfs.cli`` (only the guided tour runs it), and argparse
    is the CLI's: the one exception is the mount's options, which the daemon parses too."""
    cli, bad = ROOT / "artfs" / "cli", []
    for path in sorted((ROOT / "artfs").rglob("*.py")):
        if path.is_relative_to(cli):
            continue
        for line, module in _relative_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}: {module}"
            if (module == "artfs.cli" or module.startswith("artfs.cli.")) and path.name != "demo.py":
                bad.append(where)
            if module == "argparse" and path.name != "_mounts.py":
                bad.append(where)
    assert bad == []


def test_lowlevel_imports_no_cli_module() -> None:
    code = ("import sys, artfs.lowlevel; "
            "print(sorted(m for m in sys.modules if m == 'artfs.cli' or m.startswith(('artfs.cli.', 'artfs._cli'))))")
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
