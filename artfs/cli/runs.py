"""Runs and lineage on the command line: ``run``, ``runs ls|show``, ``lineage``.

The library side is :mod:`artfs._run` (a run and its record), :mod:`artfs._lineage` (records and
edges in the store) and :mod:`artfs._graph` (the graph around a version and its pictures).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from typing import Any

from .._errors import ArtfsError
from .._graph import lineage, render_dot, render_mermaid, render_tree
from .._history import read_history, read_summary_doc
from .._lineage import list_runs, parse_run_path, read_record, version_ref
from .._names import check_name, parse_spec
from .._run import RUN_ENV, Run, default_project, start_run
from .._wandb_shim import make_shim
from .context import Context, UsageError, json_option
from .output import table, when


def cmd_run(ctx: Context) -> int:
    args = ctx.args
    cmd = list(args.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("usage: artfs run [-p PROJECT] [--job-type T] [--name N] -- CMD ...")
    project = check_name(args.project or default_project(), "project")
    run = start_run(ctx.store, project, name=args.name, job_type=args.job_type, group=args.group,
                    run_id=args.run_id, source="cli", command=cmd)
    ctx.note(f"artfs: run {run.path}")
    env = dict(os.environ, **{RUN_ENV: run.path, "ARTFS_PROJECT": project})
    if args.store:
        env["ARTFS_STORE"] = args.store
    shim = None
    if args.wandb or os.environ.get("ARTFS_WANDB", "") not in ("", "0"):
        shim = make_shim()  # CMD's `import wandb` gets artfs; removed below
        env["PYTHONPATH"] = os.pathsep.join(p for p in (shim, env.get("PYTHONPATH")) if p)
        env["WANDB_PROJECT"] = project  # integrations pass it to wandb.init: the run is joined
    try:
        try:
            proc = subprocess.Popen(cmd, env=env)
        except OSError as e:  # like a shell: 127 for a command that cannot be started
            run.close_record(127)
            ctx.note(f"artfs: error: {cmd[0]}: {e.strerror or e}")
            return 127
        # Ctrl-C reaches CMD (same process group); we wait for it to end and record how it ended.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            rc = proc.wait()
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        if shim is not None:
            shutil.rmtree(shim, ignore_errors=True)
    code = rc if rc >= 0 else 128 - rc
    run.close_record(code)
    return code


def _run_doc(run: Run, *, edges: bool) -> dict[str, Any]:
    rec = run.record
    doc: dict[str, Any] = {k: v for k, v in rec.__dict__.items() if k not in ("inputs", "outputs")}
    if edges:
        doc["used"] = run.edges("used")
        doc["logged"] = run.edges("logged")
    else:
        doc["inputs"], doc["outputs"] = rec.inputs, rec.outputs
    return doc


def cmd_runs_ls(ctx: Context) -> None:
    project = check_name(ctx.args.project, "project")
    docs = []
    for rid in list_runs(ctx.store, project):
        run = Run(ctx.store, project, rid)
        try:
            docs.append(_run_doc(run, edges=False))
        except ArtfsError as e:  # one damaged record does not hide the others
            docs.append({"id": rid, "project": project, "error": str(e)})
    docs.sort(key=lambda d: d.get("started") or "")
    rows = [(d["id"], d.get("name") or "", d.get("job_type") or "", d.get("state") or "damaged",
             when(d["started"]) if d.get("started") else "", len(d.get("inputs", [])), len(d.get("outputs", [])))
            for d in docs]
    ctx.emit(docs, table(("RUN", "NAME", "JOB TYPE", "STATE", "STARTED", "USED", "LOGGED"), rows) if rows
             else f"{project}: no runs")


def cmd_runs_show(ctx: Context) -> None:
    project, rid = parse_run_path(ctx.args.run)
    run = Run(ctx.store, project, rid, record=read_record(ctx.store, project, rid))
    doc = _run_doc(run, edges=True)
    rec = run.record
    sdoc = read_summary_doc(ctx.store, project, rid)
    doc["config"] = run.config
    doc["summary"] = dict(sdoc.get("summary") or {}) if sdoc else {}
    if ctx.json:
        doc["history"] = read_history(ctx.store, project, rid)
    lines = [f"run       {run.path}" + (f" ({rec.name})" if rec.name else "")]
    for label, value in (("job type", rec.job_type), ("group", rec.group), ("source", rec.source),
                         ("command", " ".join(rec.command) if rec.command else None), ("cwd", rec.cwd),
                         ("host", rec.host), ("user", rec.user), ("started", when(rec.started) if rec.started else None),
                         ("ended", when(rec.ended) if rec.ended else None), ("state", rec.state),
                         ("exit", rec.exit_status), ("replays", rec.replay_of)):
        if value is not None and value != "":
            lines.append(f"{label:<9} {value}")
    if doc["config"]:
        lines.append(f"config    {doc['config']}")
    if doc["summary"]:
        lines.append("summary:")
        for k, v in sorted(doc["summary"].items()):
            if not k.startswith("_") or k == "_step":
                lines.append(f"  {k:<24} {_short(v)}")
    for kind in ("used", "logged"):
        lines.append(f"{kind}:" if doc[kind] else f"{kind}:    nothing")
        for e in doc[kind]:
            role = f" [{e['role']}]" if e.get("role") and e["role"] != "logger" else ""
            lines.append(f"  {e['artifact']}{role}{' (deleted)' if e['deleted'] else ''}")
    ctx.emit(doc, "\n".join(lines))


def _short(v: Any) -> str:
    """A summary value on one line: media by what they are, numbers as logged."""
    if isinstance(v, dict) and v.get("_type") == "table-file":
        return f"table ({v.get('nrows')} rows) in {v.get('artifact_path')}"
    if isinstance(v, dict) and v.get("_type") == "image-file":
        return f"image {v.get('path')}"
    text = repr(v) if isinstance(v, str) else str(v)
    return text if len(text) <= 100 else text[:97] + "..."


def cmd_lineage(ctx: Context) -> None:
    args = ctx.args
    if args.depth < 1:
        raise UsageError("--depth must be at least 1")
    spec = parse_spec(args.spec, need_ref=True)
    if spec.version is not None:
        ref = version_ref(spec.project, spec.artifact, spec.version)  # may be deleted: lineage stays
    else:
        ref = version_ref(*ctx.store.resolve(spec))
    up, down = not args.down, not args.up
    g = lineage(ctx.store, ref, up=up, down=down, depth=args.depth)
    if ctx.json:
        ctx.emit(g.to_json(), None)
    elif args.format == "dot":
        print(render_dot(g))
    elif args.format == "mermaid":
        print(render_mermaid(g))
    else:
        print(render_tree(g, up=up, down=down))


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run a command as a named run (its lineage is recorded)",
                       description="Run CMD as one run: reads through a mount and artfs.init() inside CMD are "
                                   "filed under this run. Exits with CMD's exit code.")
    p.add_argument("-p", "--project", help="the run's project (default: $ARTFS_PROJECT or 'uncategorized')")
    p.add_argument("--job-type", help="e.g. train, eval, preprocess")
    p.add_argument("--name", help="a display name")
    p.add_argument("--group", help="a group of runs")
    p.add_argument("--id", dest="run_id", help="the run id (default: a new random one)")
    p.add_argument("--wandb", action="store_true",
                   help="CMD's own 'import wandb' gets artfs (Lightning, Transformers, ... integrations): a shim "
                        "package first on CMD's PYTHONPATH, nothing installed; also with ARTFS_WANDB=1")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", parents=[common], help="list and show runs")
    rsub = p.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    q = rsub.add_parser("ls", parents=[common], help="the runs of a project")
    q.add_argument("project", metavar="PROJECT")
    json_option(q)
    q.set_defaults(func=cmd_runs_ls)
    q = rsub.add_parser("show", parents=[common], help="one run: its record, summary, what it used and logged")
    q.add_argument("run", metavar="PROJECT/RUN_ID")
    json_option(q, "the record, summary and every logged row (history) as JSON")
    q.set_defaults(func=cmd_runs_show)

    p = sub.add_parser("lineage", parents=[common], help="where a version came from and where it went",
                       description="The artifact graph around a version: the runs that logged it and what they "
                                   "used (--up), the runs that used it and what they logged (--down).")
    p.add_argument("spec", metavar="PROJECT/ARTIFACT:VERSION")
    d = p.add_mutually_exclusive_group()
    d.add_argument("--up", action="store_true", help="only upstream (what it was made from)")
    d.add_argument("--down", action="store_true", help="only downstream (what was made from it)")
    p.add_argument("--depth", type=int, default=5, metavar="N", help="runs to follow along a path (default 5)")
    p.add_argument("--format", choices=("tree", "dot", "mermaid"), default="tree",
                   help="tree (default), or a picture: Graphviz dot, Mermaid")
    json_option(p, "nodes and edges as JSON")
    p.set_defaults(func=cmd_lineage)
