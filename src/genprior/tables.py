"""Tables of results as CSV and Markdown text, for ``genprior bench`` and ``genprior theory``.

Both write their files through :func:`write_csv` / :func:`markdown_table` (atomically, with
:mod:`genprior.io`), so a table looks the same whichever command made it.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def csv_text(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    cell: Callable[[Any], Any] | None = None,
) -> str:
    """CSV with a header of ``columns`` and one line per row (missing keys and None are empty;
    a list is written as JSON unless ``cell`` formats values itself)."""
    fmt = cell or _cell
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: fmt(r.get(k)) for k in columns})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    return json.dumps(v) if isinstance(v, list) else v


def write_csv(
    path: str | os.PathLike,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    cell: Callable[[Any], Any] | None = None,
) -> None:
    from .io import write_text_atomic

    write_text_atomic(path, csv_text(rows, columns, cell))


def columns_of(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every key of ``rows``, in first-seen order."""
    return list(dict.fromkeys(k for r in rows for k in r))


def fmt(v: Any, digits: int = 4) -> str:
    """A number to ``digits`` significant digits; None and non-finite values as ``-``."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    """A Markdown table of already formatted cells (anything else goes through ``str``)."""
    out = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(map(str, line)) + " |" for line in lines]
    return "\n".join(out) + "\n"
