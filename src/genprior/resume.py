"""Resuming long runs: a folder of finished units, and the fingerprint of the code behind them.

``genprior bench`` (a unit: one cell of the grid) and ``genprior theory`` (a unit: one trial of
one cell) store every finished unit as its own JSON file, written atomically, the moment it is
done. A rerun with the same configuration reads the folder and runs only the units that are
missing, unreadable, from another configuration, or computed by code that has changed since.

"The code" of a unit is every module of genprior its computation can run: the modules it starts
from (the solver's, the generator's, the cell runner's) and, transitively, every genprior module
they import, found by reading their ``import`` statements (:func:`module_closure`), including
the imports inside functions. Nothing that only formats reports is imported by the computation,
so editing a table or a plot leaves finished units valid.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PACKAGE = "genprior"


# ---- the code behind a unit --------------------------------------------------------------------
@cache
def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imports_of(name: str, path: Path) -> frozenset[str]:
    """The genprior modules that ``name`` (at ``path``) imports anywhere in its source; parsed
    again only when the file changes (every cell of a bench asks)."""
    st = path.stat()
    return _parsed_imports(name, path, st.st_mtime_ns, st.st_size)


@cache
def _parsed_imports(name: str, path: Path, mtime_ns: int, size: int) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # "from . import metrics" / "from .solvers import ilo": the names may be modules
            found.update(f"{mod}.{a.name}" for a in node.names)
    return frozenset(m for m in found if (m == PACKAGE or m.startswith(PACKAGE + ".")) and _module_file(m))


def module_closure(roots: Iterable[str]) -> list[str]:
    """Every genprior module reachable from ``roots`` through import statements, sorted.

    A package's ``__init__`` counts only where it is imported by name: the package ``__init__``
    files of genprior re-export (``genprior.bench`` re-exports its report code, which a cell never
    runs) or import lazily, and decide no result."""
    todo = [r for r in roots if _module_file(r)]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = _module_file(name)
        if path is not None:
            todo.extend(_imports_of(name, path) - seen)
    return sorted(seen)


def code_fingerprint(roots: Iterable[str]) -> str:
    """sha256 of the source of :func:`module_closure` of ``roots`` (module names and bytes)."""
    h = hashlib.sha256()
    for name in module_closure(roots):
        path = _module_file(name)
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() if path is not None else b"-")
        h.update(b"\0")
    return h.hexdigest()


# ---- the folder of finished units --------------------------------------------------------------
@dataclass(frozen=True)
class Unit:
    """A finished unit as read back: its key, what it produced, and the code that produced it."""

    key: str
    data: dict[str, Any]
    code: str | None


class UnitStore:
    """``folder/<sha1(key)>.json`` per finished unit of the run whose configuration hashes to
    ``config_hash``; each file holds ``{"config_hash", "key", "code", **data}``."""

    def __init__(self, folder: str | Path, config_hash: str):
        self.folder = Path(folder)
        self.config_hash = config_hash

    @staticmethod
    def file_name(key: str) -> str:
        return hashlib.sha1(key.encode()).hexdigest()[:20] + ".json"

    def save(self, key: str, data: dict[str, Any], code: str | None) -> None:
        from .io import write_json_atomic

        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.folder / self.file_name(key),
            {"config_hash": self.config_hash, "code": code, "key": key, **data},
        )

    def __iter__(self) -> Iterator[Unit]:
        """The readable units of this configuration (others, and damaged files, are skipped:
        their units run again)."""
        if not self.folder.is_dir():
            return
        for p in sorted(self.folder.glob("*.json")):
            try:
                d = json.loads(p.read_text())
                if d.get("config_hash") != self.config_hash or self.file_name(d["key"]) != p.name:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                continue
            code = d.pop("code", None)
            key = d.pop("key")
            d.pop("config_hash")
            yield Unit(key, d, code)

    def clear(self) -> None:
        for p in self.folder.glob("*.json"):
            p.unlink()
