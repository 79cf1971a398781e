"""Argument helpers shared by the sub-commands (torch is imported only when a device is resolved)."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import UserError


def int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or any(v < 0 for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: give non-negative integers, e.g. 100,50")
    return vals


def float_list(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None
    if not vals or any(not (v >= 0) for v in vals):
        raise argparse.ArgumentTypeError(f"{text!r}: give non-negative numbers (inf allowed)")
    return vals


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def resolve_device(name: str) -> Any:
    """The ``torch.device`` of ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}: use auto, cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for but CUDA is not available: use --device cpu")
    return dev


def check_output(path: Path, flag: str, folder: bool = False) -> None:
    """Before any work: ``path`` can be written, a file (or with ``folder``, a folder): it is not
    a folder (a file), and the nearest folder above it that exists is one this process can write
    in (tried with a file created and removed there). A one-line :class:`UserError` naming the
    option otherwise, so that no run fails after its work for want of a place to put it."""
    if path.exists() and path.is_dir() != folder:
        raise UserError(
            f"{flag} {path} is a {'file' if folder else 'folder'}: give a {'folder' if folder else 'file'} path"
        )
    base = (path if folder else path.parent).absolute()
    while not base.exists():
        base = base.parent
    if not base.is_dir():
        raise UserError(f"{flag} {path}: {base} is a file, not a folder: give another path")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".genprior-probe-")
    except OSError as e:
        raise UserError(
            f"{flag} {path}: cannot write in {base} ({e.strerror}): give a writable place"
        ) from None
    os.close(fd)
    os.unlink(probe)
