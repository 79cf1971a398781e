"""Reading third-party checkpoints safely: ``torch.load`` with ``weights_only=True`` only.

A ``.pt`` file is a pickle, and unpickling can run arbitrary code. genprior therefore never calls
``torch.load(..., weights_only=False)``: it uses PyTorch's restricted unpickler (tensors, plain
containers and numbers) with one explicit addition, ``argparse.Namespace``, which the training
scripts of rosinality's stylegan2-pytorch store under ``"args"``. Anything else is refused with a
one-line :class:`~genprior.errors.UserError`.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError

#: the globals (besides PyTorch's own weights-only set) a checkpoint may reference
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)


def safe_load(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` and the :data:`SAFE_GLOBALS` allow-list.

    Raises:
        UserError: the file is missing, is not a PyTorch checkpoint, or needs Python objects
            outside the allow-list (the message names the file, the object and the fix).
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint {p} does not exist: give the path of a PyTorch .pt/.pth checkpoint file")
    if not p.is_file():
        raise UserError(f"checkpoint {p} is not a file: give the path of a PyTorch .pt/.pth checkpoint file")
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        if "weights only" in msg.lower() or "weights_only" in msg.lower():
            what = _unsupported_global(msg)
            raise UserError(
                f"checkpoint {p} needs Python objects that genprior does not load for safety "
                f"({what}): re-save it with plain tensors only, e.g. torch.save({{'g_ema': G.state_dict()}}, path)"
            ) from None
        raise UserError(
            f"{p} is not a PyTorch checkpoint ({_first_line(msg)}): give a .pt/.pth file written by torch.save"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, AttributeError, KeyError, TypeError) as e:
        detail = _first_line(str(e)) if isinstance(e, (RuntimeError, OSError)) else ""
        why = f"{e.__class__.__name__}: {detail}" if detail else "truncated or not written by torch.save"
        raise UserError(
            f"{p} is not a readable PyTorch checkpoint ({why}): give a .pt/.pth file written by torch.save"
        ) from None


def _first_line(msg: str, limit: int = 120) -> str:
    line = next((s.strip() for s in msg.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _unsupported_global(msg: str) -> str:
    m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if m:
        return f"global {m.group(1)}"
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    return f"global {m.group(1)}" if m else "objects outside the allow-list"
