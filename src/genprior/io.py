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


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict that ``torch.load(weights_only=True)`` reads back
    (tuples become lists); :func:`config_from` inverts it."""
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def config_from(cls: type, d: dict[str, Any]) -> Any:
    """``cls(**d)`` with the lists of :func:`config_dict` back as tuples."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


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


def thumbnail(img: torch.Tensor, max_side: int = 128) -> torch.Tensor:
    """A (C,H,W) image shrunk by the least whole factor that brings its larger side to at most
    ``max_side`` (area averages); a smaller image as it is."""
    f = -(-max(img.shape[-2:]) // max_side)
    if f <= 1:
        return img
    import torch.nn.functional as F

    return F.interpolate(img[None].float(), size=(img.shape[-2] // f, img.shape[-1] // f), mode="area")[0]


def png_b64(img: torch.Tensor, max_side: int = 128) -> str:
    """A (C,H,W) image in [0,1] as the base64 text of its 8-bit PNG, shrunk to at most
    ``max_side`` pixels a side (:func:`thumbnail`): what a bench row keeps of its reconstruction,
    a picture, not the data (a 1024-pixel image would take megabytes a row);
    :func:`from_png_b64` reads it back."""
    import base64
    import io

    buf = io.BytesIO()
    Image.fromarray(to_uint8(thumbnail(img, max_side))).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def from_png_b64(text: str) -> torch.Tensor:
    """The (C,H,W) float image in [0,1] of :func:`png_b64`'s text."""
    import base64
    import io

    with Image.open(io.BytesIO(base64.b64decode(text, validate=True))) as im:
        arr = np.asarray(im.convert("L" if im.mode in ("L", "1") else "RGB"), dtype=np.float32) / 255.0
    arr = arr[..., None] if arr.ndim == 2 else arr
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def save_image(path: str | os.PathLike, img: torch.Tensor) -> None:
    """Save an image tensor in [0,1] as PNG, atomically."""
    arr = to_uint8(img)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")


def save_std_map(path: str | os.PathLike, std: torch.Tensor) -> dict[str, float | str]:
    """Save a per-pixel std map ``(C, H, W)`` as PNG (white = its largest std), atomically, and
    return its summary for a record: ``std_mean``, ``std_max`` and the PNG's scale."""
    peak = float(std.max())
    save_image(path, (std / max(peak, 1e-12)).clamp(0, 1))
    return {
        "std_mean": float(std.mean()),
        "std_max": peak,
        "std_png_scale": f"white = the largest std, {peak:.4g}",
    }


def comparison_image(panels: list[tuple[str, torch.Tensor]], min_side: int = 256) -> np.ndarray:
    """Side-by-side panels ``[(label, (C, H, W) image in [0, 1]), ...]`` as an RGB uint8 array: each
    image scaled up by a whole factor (nearest neighbour, no smoothing) to at least ``min_side``
    pixels, its label written above it, white gaps between them."""
    from PIL import ImageDraw, ImageFont

    h, w = (int(v) for v in panels[0][1].shape[-2:])
    k = max(1, -(-min_side // max(h, w)))
    font = ImageFont.load_default(size=max(12, min(20, w * k // 12)))
    label_h, gap = font.size + 10, 8
    canvas = Image.new("RGB", (len(panels) * (w * k + gap) - gap, h * k + label_h), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (label, img) in enumerate(panels):
        tile = Image.fromarray(to_uint8(img.expand(3, -1, -1) if img.shape[0] == 1 else img))
        x0 = i * (w * k + gap)
        canvas.paste(tile.convert("RGB").resize((w * k, h * k), Image.NEAREST), (x0, label_h))
        draw.text((x0 + 4, 5), label, fill="black", font=font)
    return np.asarray(canvas)


def save_comparison(
    path: str | os.PathLike, panels: list[tuple[str, torch.Tensor]], min_side: int = 256
) -> None:
    """:func:`comparison_image` saved as PNG, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(comparison_image(panels, min_side)).save(tmp, format="PNG")


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


def read_image_file(
    path: str | os.PathLike, channels: int | None, size: tuple[int, int] | None, resize: bool
) -> torch.Tensor:
    """The image (PNG, JPEG, ...) or ``.npy`` array at ``path`` as a (1, C, H, W) tensor;
    ``channels``/``size`` None keep the file's. Errors are one-line UserErrors."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UserError(
                f"{path} is not a readable .npy array ({e.__class__.__name__}): save it with numpy.save"
            ) from None
        t = torch.as_tensor(np.asarray(arr, dtype=np.float32))
        if not torch.isfinite(t).all():
            raise UserError(f"{path} holds NaN or infinite values: give a finite image")
        if t.numel() and float(t.abs().max()) > 2:  # noisy measurements stray a little past [0, 1]
            raise UserError(
                f"{path} holds values up to {float(t.abs().max()):g}: give an image in [0, 1] "
                "(8-bit values divided by 255)"
            )
        if t.dim() == 2:
            t = t[None]
        if t.dim() == 3 and t.shape[-1] in (1, 3) and t.shape[0] not in (1, 3):
            t = t.permute(2, 0, 1)
        if t.dim() != 3 or t.shape[0] not in (1, 3):
            raise UserError(f"{path} has shape {tuple(arr.shape)}: give an (H,W), (C,H,W) or (H,W,C) array")
        t = t[None]
        if channels is not None and t.shape[1] != channels:
            t = t.mean(1, keepdim=True) if channels == 1 else t.expand(-1, 3, -1, -1)
        if size is not None and tuple(t.shape[-2:]) != tuple(size):
            if not resize:
                raise UserError(
                    f"{path} is {t.shape[-1]}x{t.shape[-2]} but the generator makes {size[1]}x{size[0]} "
                    "images: pass --resize or give an image of that size"
                )
            t = torch.nn.functional.interpolate(t, size=size, mode="bicubic", align_corners=False)
        return t.contiguous()
    return load_image(path, channels=channels, size=size, resize=resize)
