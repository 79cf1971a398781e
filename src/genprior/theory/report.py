"""The tables and figures of ``genprior theory``: a text table of a summary, and one PNG per
experiment (nothing here runs a trial, so editing it leaves finished trials valid)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..generators.random_relu import expansive_widths
from ..io import atomic_path
from .experiments import GD_EXACT, LP_EXACT


def format_summary(summary: list[dict[str, Any]], keys: Sequence[str]) -> str:
    """A fixed-width text table of a summary (for the terminal and the docs)."""
    cols = [*keys, "method", "trials", "exact_rate", "err_median", "time_median_s"]
    extra = [
        k for k in ("post_spread_mean", "coverage_mean", "accept_rate_mean") if any(k in s for s in summary)
    ]
    cols += extra
    lines = [" | ".join(cols)]
    for s in summary:
        vals = []
        for c in cols:
            v = s.get(c, "")
            if isinstance(v, float):
                v = f"{v:.3g}"
            elif isinstance(v, (tuple, list)):
                v = "-".join(map(str, v))
            vals.append(str(v))
        lines.append(" | ".join(vals))
    return "\n".join(lines)


# ==================================================================================================
# figures
# ==================================================================================================
def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def _figure(ncols: int):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(5.2 * ncols, 4.0))
    return fig, np.atleast_1d(axes)


_MARK = {
    "lp": "o",
    "gd": "s",
    "gd-noflip": "x",
    "lp-inpaint": "o",
    "gd+lp": "^",
    "gd+plp": "P",
    "lp-linf": "o",
    "lp-l1": "D",
    "lp-linf-3s": "<",
    "lp-l1-3s": ">",
    "langevin": "v",
    "mala": "*",
}


def _plain_log_ticks(ax, values, zero_at: float | None = None) -> None:
    """Log-scaled x axis with plain tick labels at ``values`` (and "0" at ``zero_at``)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    vals = sorted(set(float(v) for v in values if v > 0))
    ticks = ([zero_at] if zero_at is not None else []) + vals
    labels = (["0"] if zero_at is not None else []) + [f"{v:g}" for v in vals]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.set_xticklabels(labels)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _plot_expansion(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        for sched, ls in (("constant", "-"), ("log", ":")):
            ss = sorted(
                [s for s in summary if s["method"] == m and s["schedule"] == sched],
                key=lambda s: s["eff_factor"],
            )
            if not ss:
                continue
            x = [s["eff_factor"] for s in ss]
            lab = f"{m}, {'constant factor' if sched == 'constant' else 'c n log n'}"
            a.plot(x, [s["exact_rate"] for s in ss], ls, marker=_MARK.get(m, "o"), label=lab)
            b.plot(x, [s["time_median_s"] for s in ss], ls, marker=_MARK.get(m, "o"), label=lab)
            if sched == "log":
                for s in ss:
                    a.annotate(
                        f"c={s['param']:g}",
                        (s["eff_factor"], s["exact_rate"]),
                        fontsize=7,
                        xytext=(3, -9),
                        textcoords="offset points",
                    )
    a.set(
        xscale="log",
        xlabel="effective expansion factor (n / k)^(1/d)",
        ylabel="exact-recovery rate",
        title=f"k={cfg['k']}, depth {cfg['depth']}, {cfg['trials']} trials/cell",
        ylim=(-0.03, 1.03),
    )
    b.set(
        xscale="log", yscale="log", xlabel="effective expansion factor", ylabel="median time per instance [s]"
    )
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, [1.5, 2, 3, 4, 6, 8])
    a.legend(fontsize=8)
    fig.suptitle(f"Exact recovery (LP: rel. error < {LP_EXACT:g}, GD: < {GD_EXACT:g}) vs expansion")
    _save(fig, path)


def _plot_depth(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        for f in cfg["factors"]:
            ss = sorted(
                [s for s in summary if s["method"] == m and s["factor"] == f], key=lambda s: s["depth"]
            )
            if not ss:
                continue
            d = [s["depth"] for s in ss]
            a.plot(d, [s["exact_rate"] for s in ss], marker=_MARK.get(m, "o"), label=f"{m}, factor {f:g}")
            b.plot(d, [s["time_median_s"] for s in ss], marker=_MARK.get(m, "o"), label=f"{m}, factor {f:g}")
    a.set(
        xlabel="depth d",
        ylabel="exact-recovery rate",
        ylim=(-0.03, 1.03),
        title=f"k={cfg['k']}, {cfg['trials']} trials/cell",
    )
    b.set(yscale="log", xlabel="depth d", ylabel="median time per instance [s]")
    for ax in (a, b):
        ax.grid(True, alpha=0.3)
    a.legend(fontsize=8)
    fig.suptitle("Exact recovery vs depth at constant expansion")
    _save(fig, path)


def _plot_measurements(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["ratio"])
        if not ss:
            continue
        r = [s["ratio"] for s in ss]
        a.plot(r, [s["exact_rate"] for s in ss], marker=_MARK.get(m, "o"), label=m)
        b.errorbar(
            r,
            [max(s["err_median"], 1e-17) for s in ss],
            yerr=[
                [max(s["err_median"] - s["err_q25"], 0) for s in ss],
                [max(s["err_q75"] - s["err_median"], 0) for s in ss],
            ],
            marker=_MARK.get(m, "o"),
            capsize=2,
            label=m,
        )
    w = expansive_widths(cfg["k"], cfg["depth"], factor=cfg["factor"])
    a.set(
        xscale="log",
        xlabel="m / k",
        ylabel="exact-recovery rate",
        ylim=(-0.03, 1.03),
        title=f"widths {'-'.join(map(str, w))}, {cfg['trials']} trials/cell",
    )
    b.set(xscale="log", yscale="log", xlabel="m / k", ylabel="relative latent error (median, IQR)")
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, cfg["ratios"])
    a.legend(fontsize=8)
    fig.suptitle("Recovery from m measurements (inpainting for the layer-wise LP, Gaussian A otherwise)")
    _save(fig, path)


def _plot_noise(summary, path, cfg):
    fig, (a,) = _figure(1)
    pos = sorted({s["level"] for s in summary if s["level"] > 0})
    zero_x = (pos[0] / 10) if pos else 1e-5
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["level"])
        x = [s["level"] if s["level"] > 0 else zero_x for s in ss]
        a.errorbar(
            x,
            [max(s["err_median"], 1e-17) for s in ss],
            yerr=[
                [max(s["err_median"] - s["err_q25"], 0) for s in ss],
                [max(s["err_q75"] - s["err_median"], 0) for s in ss],
            ],
            marker=_MARK.get(m, "o"),
            capsize=2,
            label=m,
        )
    if pos:
        a.plot(pos, pos, "k--", lw=0.8, label="error = noise level")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="relative noise level nu",
        ylabel="relative latent error (median, IQR)",
        title=f"k={cfg['k']}, depth {cfg['depth']}, factor {cfg['factor']:g}, {cfg['trials']} trials/cell",
    )
    a.grid(True, which="both", alpha=0.3)
    _plain_log_ticks(a, pos, zero_x if any(s["level"] == 0 for s in summary) else None)
    a.legend(fontsize=8)
    _save(fig, path)


def _plot_langevin(summary, path, cfg):
    fig, (a, b) = _figure(2)
    for m in cfg["methods"]:
        ss = sorted([s for s in summary if s["method"] == m], key=lambda s: s["sigma"])
        x = [s["sigma"] for s in ss]
        a.plot(
            x,
            [s["err_median"] for s in ss],
            marker=_MARK.get(m, "o"),
            label=f"{m}: {'least squares' if m == 'gd' else 'posterior mean'} error",
        )
        if m != "gd":
            a.plot(
                x,
                [s.get("post_spread_mean", np.nan) for s in ss],
                "--",
                marker=".",
                label=f"{m}: posterior spread ||std|| / ||z*||",
            )
            b.plot(
                x,
                [s.get("coverage_mean", np.nan) for s in ss],
                marker=_MARK.get(m, "o"),
                label=f"{m}: coverage of z* by mean +- 2 std",
            )
    b.axhline(0.954, color="k", ls=":", lw=0.8, label="Gaussian 2-sigma: 0.954")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="noise sigma",
        ylabel="relative latent error / std",
        title=f"k={cfg['k']}, depth {cfg['depth']}, factor {cfg['factor']:g}, {cfg['trials']} trials/cell",
    )
    b.set(xscale="log", xlabel="noise sigma", ylabel="coverage", ylim=(0, 1.05))
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_ticks(ax, cfg["sigmas"])
        ax.legend(fontsize=8)
    fig.suptitle("Langevin posterior sampling on a random ReLU network")
    _save(fig, path)


#: the figure of each experiment: ``plot(summary, path, config)``
PLOTS = {
    "expansion": _plot_expansion,
    "depth": _plot_depth,
    "measurements": _plot_measurements,
    "noise": _plot_noise,
    "langevin": _plot_langevin,
}
