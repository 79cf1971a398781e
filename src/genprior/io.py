"""Image and file I/O: every output is written atomically (temporary file, then rename)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path``.

    On error the temporary file is removed, so ``path`` is either the old file or the complete
    new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.detach().cpu().tolist()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C,H,W) or (1,C,H,W) tensor in [0,1] -> HxWxC (or HxW) uint8 array."""
    if img.dim() == 4:
        if img.shape[0] != 1:
            raise ValueError("to_uint8 takes one image")
        img = img[0]
    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    arr = np.transpose(arr, (1, 2, 0))
    return arr[..., 0] if arr.shape[2] == 1 else arr


def save_image(path: str | os.PathLike, img: torch.Tensor) -> None:
    """Save an image tensor in [0,1] as PNG, atomically."""
    arr = to_uint8(img)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def load_image(
    path: str | os.PathLike,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    resize: bool = False,
) -> torch.Tensor:
    """Read an image file as a (1, C, H, W) float tensor in [0, 1].

    Args:
        channels: 1 or 3 to convert; None keeps the file's (grey stays 1, colour 3).
        size: required (H, W). A different size is an error unless ``resize`` is set.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input image {path} does not exist: give the path of a PNG or JPEG file")
    try:
        with Image.open(path) as im:
            im.load()
            mode = {1: "L", 3: "RGB"}.get(channels or 0)
            if mode is None:
                mode = "L" if im.mode in ("L", "1", "I", "I;16", "F", "LA") else "RGB"
            im = im.convert(mode)
            if size is not None and (im.height, im.width) != tuple(size):
                if not resize:
                    raise UserError(
                        f"{path} is {im.width}x{im.height} but the generator makes "
                        f"{size[1]}x{size[0]} images: pass --resize or give an image of that size"
                    )
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(
            f"{path} is not a readable image ({e.__class__.__name__}): give a PNG or JPEG file"
        ) from None
    if arr.ndim == 2:
        arr = arr[..., None]
    t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    if not torch.isfinite(t).all():
        raise UserError(f"{path} holds NaN or infinite values: give a finite image")
    return t
