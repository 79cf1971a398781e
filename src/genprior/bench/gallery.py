"""Pictures of a bench run: for each task and level, the true image, what the methods saw of it
and each method's reconstruction with its PSNR, one row per (task, level, image).

The reconstructions come from the rows (``recon_png``: every cell keeps its images, 8-bit, at
most 128 pixels a side), the truth and the measurements from the config, as the cell drew them
(shrunk alike); nothing here solves anything.
``genprior bench`` writes ``gallery.png`` (the grid's first image); ``benchmarks/gallery.py``
draws other images, tasks and methods of a finished run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..io import atomic_path, from_png_b64, thumbnail, to_uint8
from .cache import get_generator, get_images
from .cell import Cell, cell_measurements
from .config import BenchConfig


def _level_key(level: Any) -> str:
    return json.dumps(level)


def gallery_image(
    cfg: BenchConfig,
    rows: Sequence[dict[str, Any]],
    images: Sequence[int] | None = None,
    tasks: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    side: int = 96,
) -> np.ndarray:
    """The gallery of ``rows`` (one run of ``cfg``, its first seed) as an RGB uint8 array.

    Args:
        images: the grid's image indexes to show (default: the first image of the grid).
        tasks: task labels, in this order (default: all of the config's).
        methods: method labels, in this order (default: all of the config's).
        side: each picture is scaled up by a whole factor (nearest neighbour) to at least this.
    """
    from PIL import Image, ImageDraw, ImageFont

    task_labels = [t.label for t in cfg.tasks]
    method_labels = [m.label for m in cfg.methods]
    for kind, asked, known in (("task", tasks, task_labels), ("method", methods, method_labels)):
        bad = [a for a in asked or () if a not in known]
        if bad:
            raise UserError(f"the run has no {kind} {bad[0]!r}: choose from {', '.join(known)}")
    tasks = list(tasks or task_labels)
    methods = list(methods or method_labels)
    n_images = cfg.image_count()
    images = list(images) if images is not None else [0]
    bad_i = [i for i in images if not 0 <= i < n_images]
    if bad_i:
        raise UserError(f"image {bad_i[0]} is not in the run: give an index from 0 to {n_images - 1}")
    seed = cfg.seeds[0]
    by_key: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for r in rows:
        if r["seed"] == seed:
            by_key[(r["task"], _level_key(r["level"]), r["method"], r["image"])] = r
    if by_key and not any("recon_png" in r for r in by_key.values()):
        raise UserError(
            "these results keep no reconstructions (runs before 2026-12-06 did not): "
            "run the bench again into a new --out folder"
        )

    G = get_generator(cfg)
    x_all, _, _ = get_images(cfg, G)
    c, H, W = (int(v) for v in G.image_shape)
    h, w = thumbnail(torch.zeros(1, H, W)).shape[-2:]  # the rows keep their pictures at this size
    k = max(1, -(-side // max(h, w)))
    pw, ph = w * k, h * k
    font = ImageFont.load_default(size=12)
    line, gap, pad = 16, 6, 4
    cols = 2 + len(methods)
    width = cols * (pw + gap) - gap + 2 * pad

    from ..physics.tasks import measurement_preview

    blocks = []
    for t in cfg.tasks:
        if t.label not in tasks:
            continue
        for lv in t.levels:
            previews: dict[int, torch.Tensor] = {}  # per image batch: what every method saw
            for i in images:
                b = i // cfg.batch_size
                if b not in previews:
                    _, y, physics = cell_measurements(cfg, Cell(t.label, lv, methods[0], b, seed))
                    previews[b] = measurement_preview(y, physics, (c, H, W))
                seen = previews[b][i % cfg.batch_size]
                panels: list[tuple[str, str, torch.Tensor | None]] = [
                    ("truth", "", thumbnail(x_all[i])),
                    ("measurement", "", thumbnail(seen)),
                ]
                for m in methods:
                    r = by_key.get((t.label, _level_key(lv), m, i))
                    if r is None:
                        panels.append((m, "not run", None))
                        continue
                    if "recon_png" not in r:
                        raise UserError(
                            f"the row of {m!r} on {t.label} keeps no reconstruction: run it again"
                        )
                    psnr = r.get("psnr")
                    panels.append((m, "" if psnr is None else f"{psnr:.2f} dB", from_png_b64(r["recon_png"])))
                block = Image.new("RGB", (width, line + 2 * line + ph + pad), "white")
                draw = ImageDraw.Draw(block)
                draw.text(
                    (pad, 2), f"{t.label}, {t.vary} = {json.dumps(lv)}: image {i}", fill="black", font=font
                )
                for n, (name, note, img) in enumerate(panels):
                    x0 = pad + n * (pw + gap)
                    draw.text((x0, line + 1), _fit(draw, name, font, pw), fill="black", font=font)
                    draw.text((x0, 2 * line), note, fill="dimgray", font=font)
                    if img is None:
                        draw.rectangle((x0, 3 * line, x0 + pw - 1, 3 * line + ph - 1), outline="lightgray")
                        continue
                    tile = Image.fromarray(to_uint8(img.expand(3, -1, -1) if img.shape[0] == 1 else img))
                    block.paste(tile.convert("RGB").resize((pw, ph), Image.NEAREST), (x0, 3 * line))
                blocks.append(block)
    canvas = Image.new("RGB", (width, sum(b.height for b in blocks)), "white")
    top = 0
    for b in blocks:
        canvas.paste(b, (0, top))
        top += b.height
    return np.asarray(canvas)


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` cut (with an ellipsis) to ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def save_gallery(
    path: str | os.PathLike, cfg: BenchConfig, rows: Sequence[dict[str, Any]], **kwargs: Any
) -> None:
    """:func:`gallery_image` saved as PNG, atomically."""
    from PIL import Image

    arr = gallery_image(cfg, rows, **kwargs)
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
