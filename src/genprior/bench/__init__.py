"""``genprior bench``: run a grid of (task x level x method x image batch x seed) cells and compare.

A benchmark is described by a config file (TOML, or JSON with the same structure)::

    name = "bora_mnist"             # optional, for titles
    generator = "mnist-vae-20"      # zoo name or checkpoint path (relative to the config file)
    seeds = [0]                     # every cell is run once per seed
    batch_size = 50                 # images solved together in one cell
    device = "cpu"                  # cpu | cuda | auto
    lpips = false                   # add an LPIPS column (net: lpips_net = "alex" | "vgg")
    classifier = "auto"             # "auto", "none", "mnist", "fmnist" or a classifier file
    plot_metrics = ["mse"]          # one PNG per metric, error bars = standard error
    xscale = "linear"               # or "log"; yscale likewise (name and plot settings can change
                                    # between runs: they are not part of the config's identity)

    [images]
    source = "heldout"              # "heldout" (dataset = "mnist" | "fmnist"), "samples", "files",
                                    # or "astronaut" (scikit-image's astronaut face, RGB generators)
    dataset = "mnist"
    count = 300
    skip = 0                        # held-out sets: leave out the first `skip` images
    # samples: count = 16, seed = 1 (images G(z), z ~ N(0, I))
    # files:   paths = ["a.png", "b.png"], resize = false

    [[tasks]]
    type = "cs"                     # inpaint | superres | denoise | cs | colorize
    name = "cs"                     # label (default: the type); must be unique
    vary = "measurements"           # the level parameter (default per type, see LEVEL_PARAM)
    levels = [10, 25, 50]
    noise_std = 0.1                 # any fixed make_physics() argument
    cs_operator = "gaussian"
    cs_scale = "unscaled"           # "deepinv" (A ~ N(0, 1/m), default) or "unscaled" (N(0, 1))

    [[methods]]
    name = "csgm"                   # a row of the method table (`genprior methods`)
    label = "CSGM"                  # optional (default: the name); must be unique
    tasks = ["cs"]                  # optional: run on these task labels only
    model = "dcgan-faces-64"        # optional: the method's own model, when not the grid's
                                    # generator (same image shape; same images, same measurements)
    steps = 1000                    # everything else: the method's settings
    restarts = 10

Cells and determinism. A cell is ``(task, level, method, image batch, seed)``. Its measurement
operator and noise are drawn from a seed derived from ``(seed, task, level, batch)`` -- so every
method sees the *same* measurements of the same images (a paired comparison) -- and the solver's
initialisation from ``(seed, method, task, level, batch)``. Every cell runs with a fixed number of
torch threads (1 by default), in any process: the table is bit-for-bit the same with any
``--workers`` (the ``time_s`` column aside).

Results. ``OUT/cells/<hash>.json`` holds each finished cell (written atomically, a
:class:`genprior.resume.UnitStore`), which is what resuming reads, with a fingerprint of the code
it depends on (:func:`~genprior.bench.cell.code_fingerprint`: every genprior module the cell's
computation imports): a stored cell whose code has changed since is run again. ``OUT/config.json`` holds the
normalised config and its hash. At the end, ``results.csv``
and ``results.json`` hold one row per image and cell, ``summary.csv`` / ``summary.md`` the mean and
standard error per (task, level, method), ``plot_<metric>.png`` one panel per task, one line
per method, and ``gallery.png`` the grid's first image: the truth, the measurement and each
method's reconstruction, per task and level (every row keeps its reconstruction, 8-bit and at
most 128 pixels a side, in ``recon_png``: :mod:`~genprior.bench.gallery` and ``benchmarks/gallery.py`` draw any of them).

The package: :mod:`~genprior.bench.config` (the file format and its checks), :mod:`~genprior.bench.cell`
(one cell's computation), :mod:`~genprior.bench.cache` (what cells of one process share),
:mod:`~genprior.bench.run` (the grid, workers, resuming), :mod:`~genprior.bench.report` (tables
and plots) and :mod:`~genprior.bench.gallery` (pictures).
"""

from .cache import get_classifier, get_generator, get_images
from .cell import Cell, build_physics, cells_of, code_fingerprint, derive_seed, method_model, run_cell
from .config import (
    LEVEL_PARAM,
    METRIC_COLUMNS,
    ROW_COLUMNS,
    TIMING_COLUMNS,
    BenchConfig,
    ImageSpec,
    MethodSpec,
    TaskSpec,
    load_config,
    parse_config,
)
from .report import (
    LOWER_IS_BETTER,
    METRIC_LABELS,
    best_of_summary,
    comparable_rows,
    mean_se,
    paired_differences,
    plot_summary,
    summarize,
    summary_markdown,
    write_outputs,
)
from .run import BenchResult, run_bench

__all__ = [
    "BenchConfig",
    "BenchResult",
    "Cell",
    "ImageSpec",
    "LEVEL_PARAM",
    "LOWER_IS_BETTER",
    "METRIC_COLUMNS",
    "METRIC_LABELS",
    "MethodSpec",
    "ROW_COLUMNS",
    "TIMING_COLUMNS",
    "TaskSpec",
    "best_of_summary",
    "build_physics",
    "cells_of",
    "code_fingerprint",
    "comparable_rows",
    "derive_seed",
    "get_classifier",
    "get_generator",
    "get_images",
    "load_config",
    "method_model",
    "parse_config",
    "plot_summary",
    "run_bench",
    "run_cell",
    "mean_se",
    "paired_differences",
    "summarize",
    "summary_markdown",
    "write_outputs",
]
