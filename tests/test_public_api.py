"""The public surface documents itself: ``help(artfs.X)`` is what a user reads before the README.

Every name in ``artfs.__all__`` has its own docstring, and so does every public method and property
a public class defines (pydoc shows a comment above an undocumented method as if it were its
docstring, so a section comment like ``# -- listing --`` would otherwise become the help text).
No public signature shows a private parameter (``_exact``).
"""

from __future__ import annotations

import inspect
import pydoc

import artfs


def _public_members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if callable(value) or isinstance(value, property):
            out.append((name, value))
    return out


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for name in artfs.__all__:
        obj = getattr(artfs, name)
        doc = (vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__) or ""
        # a dataclass without a docstring gets its signature as one: that says nothing
        if not doc.strip() or doc.startswith(f"{name}("):
            missing.append(name)
    assert missing == []


def test_every_public_method_has_a_docstring() -> None:
    missing = []
    for name in artfs.__all__:
        obj = getattr(artfs, name)
        if not inspect.isclass(obj) or issubclass(obj, BaseException):
            continue
        for member, value in _public_members(obj):
            doc = value.__doc__ if isinstance(value, property) else getattr(value, "__doc__", None)
            if not (doc or "").strip():
                missing.append(f"{name}.{member}")
    assert missing == []


def test_no_private_parameters_in_public_signatures() -> None:
    private = []
    for name in artfs.__all__:
        obj = getattr(artfs, name)
        callables = [(name, obj)] if callable(obj) else []
        if inspect.isclass(obj):
            callables += [(f"{name}.{m}", v) for m, v in _public_members(obj) if not isinstance(v, property)]
        for qual, fn in callables:
            try:
                sig = inspect.signature(fn)
            except (TypeError, ValueError):
                continue
            private += [f"{qual}({p})" for p in sig.parameters if p.startswith("_")]
    assert private == []


def test_help_of_store_shows_no_section_comments() -> None:
    text = pydoc.render_doc(artfs.Store, renderer=pydoc.plaintext)
    assert "# --" not in text
    assert "_exact" not in pydoc.render_doc(artfs.Artifact, renderer=pydoc.plaintext)
