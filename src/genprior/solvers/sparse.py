"""Sparsity baselines without a generator: Lasso in a pixel, DCT or wavelet basis.

Bora, Jalal, Price & Dimakis (ICML 2017, "Compressed Sensing using Generative Models") compare
CSGM with Lasso: MNIST in the pixel basis, CelebA in the 2-D DCT and wavelet bases, each solved
with scikit-learn's ``Lasso(alpha=0.1)`` on the explicit measurement matrix and clipped to the
image range. :class:`Lasso` does the same on any deepinv physics, per image,

    c_hat = argmin_c  ||y - A Psi c||^2 / (2 m)  +  alpha ||c||_1,      x_hat = clip(Psi c_hat, 0, 1),

which is scikit-learn's objective (``m`` = number of measurements; the ``1 / (2 m)`` scaling is
why ``alpha`` must shrink as images grow: on the identity with ``alpha = 0.1`` every pixel of a
64-pixel image is soft-thresholded by ``6.4`` and vanishes). ``Psi`` is an orthonormal synthesis
operator applied per channel: the identity (``"pixel"``), the orthonormal 2-D DCT-II (``"dct"``,
``scipy.fft``), or an orthonormal periodised discrete wavelet transform (``"wavelet"``,
PyWavelets, ``db4`` by default).

Where genprior differs from Bora et al.'s code: they leave scikit-learn's ``fit_intercept=True``
on and then discard the fitted intercept, so their estimate solves a slightly different problem
than the one they write; here no intercept is fitted (the objective above, exactly). Rows of ``A``
that are identically zero (the unobserved pixels of deepinv's ``Inpainting``) carry no
information and are dropped, so ``m`` counts the actual measurements.

``A Psi`` is materialised by applying ``physics.A`` to the synthesised basis images in batches,
which is meant for small images: more than :attr:`LassoConfig.max_pixels` unknowns or more than
:attr:`LassoConfig.max_entries` matrix entries raise a :class:`~genprior.errors.UserError`. The
physics must be linear (an affine offset ``A(0)`` is subtracted) and shared by all images of the
batch (deepinv operators whose parameters have batch size 1).

The base of the baselines that have no generator (this one and
:class:`~genprior.solvers.dip.DeepImagePrior`), :class:`GeneratorFreeSolver`, lives in
:mod:`genprior.solvers.common` (it is still importable from here).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..errors import UserError
from ..losses import fidelity
from ..physics.tasks import image_shape3
from .common import (
    Best,
    GeneratorFreeSolver,
    RunRecord,
    SolverConfig,
    Timer,
    apply_overrides,
    check_choice,
    check_int,
    check_number,
    finish_run,
    setting_error,
)

__all__ = [
    "GeneratorFreeSolver",
    "Lasso",
    "LassoConfig",
    "BASES",
    "analysis_operator",
    "basis_operators",
    "synthesis_operator",
]

BASES: tuple[str, ...] = ("pixel", "dct", "wavelet")


# ----------------------------------------------------------------------------------------------
# Orthonormal bases
# ----------------------------------------------------------------------------------------------


def _wavelet_plan(h: int, w: int, wavelet: str, level: int | None) -> tuple[Any, int, list]:
    try:
        import pywt
    except ImportError:  # pragma: no cover - depends on the environment
        raise UserError("the wavelet basis needs PyWavelets: pip install PyWavelets") from None
    try:
        wav = pywt.Wavelet(wavelet)
    except ValueError:
        raise UserError(
            f"unknown wavelet {wavelet!r}: use an orthogonal one such as 'db4' or 'haar'"
        ) from None
    if not wav.orthogonal:
        raise UserError(f"wavelet {wavelet!r} is not orthogonal: use e.g. 'db4', 'haar' or 'sym4'")
    twos = 0
    while h % 2 ** (twos + 1) == 0 and w % 2 ** (twos + 1) == 0:
        twos += 1
    if twos == 0:
        raise UserError(f"the wavelet basis needs even image sides (periodisation): got {h}x{w}")
    if level is None:
        level = max(1, min(twos, pywt.dwt_max_level(min(h, w), wav.dec_len)))
    elif not 1 <= int(level) <= twos:
        raise UserError(
            f"wavelet level {level} does not fit a {h}x{w} image: use 1..{twos} (2^level must divide both sides)"
        )
    level = int(level)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pywt warns about boundary effects at deep levels
        coeffs = pywt.wavedec2(np.zeros((h, w)), wav, mode="periodization", level=level)
        _, slices = pywt.coeffs_to_array(coeffs)
    return wav, level, slices


def basis_operators(
    image_shape: Sequence[int], basis: str, wavelet: str = "db4", level: int | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]:
    """The orthonormal synthesis ``Psi`` of a basis (coefficients ``(k, C, H, W)`` -> images) and
    its inverse, the analysis ``Psi^T`` (images -> coefficients in the same layout).

    ``"pixel"``: the identity; ``"dct"``: the orthonormal 2-D DCT-II per channel (synthesis: its
    inverse); ``"wavelet"``: the orthonormal periodised 2-D DWT per channel, coefficients laid out
    as ``pywt.coeffs_to_array`` does (approximation in the top-left corner).
    """
    c, h, w = image_shape3(image_shape)
    if basis == "pixel":
        return (lambda a: a), (lambda a: a)
    if basis == "dct":
        from scipy.fft import dctn, idctn

        return (lambda a: idctn(a, type=2, axes=(-2, -1), norm="ortho")), (
            lambda a: dctn(a, type=2, axes=(-2, -1), norm="ortho")
        )
    if basis == "wavelet":
        import pywt

        wav, level, slices = _wavelet_plan(h, w, wavelet, level)

        def synth(a: np.ndarray) -> np.ndarray:
            coeffs: list[Any] = [a[(Ellipsis, *slices[0])]]
            for d in slices[1:]:
                coeffs.append(
                    tuple(a[(Ellipsis, *d[k])] for k in ("da", "ad", "dd"))
                )  # (cH, cV, cD), pywt.dwt2 order
            return pywt.waverec2(coeffs, wav, mode="periodization", axes=(-2, -1))

        def analyse(a: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # boundary-effect warning at deep levels
                coeffs = pywt.wavedec2(a, wav, mode="periodization", level=level, axes=(-2, -1))
            return pywt.coeffs_to_array(coeffs, axes=(-2, -1))[0]

        return synth, analyse
    raise UserError(f"unknown basis {basis!r}: use one of {', '.join(BASES)}")


def synthesis_operator(
    image_shape: Sequence[int], basis: str, wavelet: str = "db4", level: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """``Psi`` of :func:`basis_operators`: coefficients ``(k, C, H, W)`` -> images."""
    return basis_operators(image_shape, basis, wavelet, level)[0]


def analysis_operator(
    image_shape: Sequence[int], basis: str, wavelet: str = "db4", level: int | None = None
) -> Callable[[np.ndarray], np.ndarray]:
    """``Psi^T`` of :func:`basis_operators`, the inverse of :func:`synthesis_operator`: images
    ``(k, C, H, W)`` -> coefficients in the same layout."""
    return basis_operators(image_shape, basis, wavelet, level)[1]


# ----------------------------------------------------------------------------------------------
# Lasso
# ----------------------------------------------------------------------------------------------


@dataclass
class LassoConfig(SolverConfig):
    """Settings of :class:`Lasso`.

    Attributes:
        basis: ``"pixel"`` (Bora et al.'s MNIST baseline), ``"dct"`` or ``"wavelet"`` (their
            CelebA baselines).
        alpha: weight of ``||c||_1`` in scikit-learn's scaling (``1 / (2 m)`` on the squared
            residual); Bora et al. use 0.1.
        wavelet: PyWavelets name of an orthogonal wavelet for ``basis="wavelet"``.
        level: decomposition levels of the wavelet basis; ``None``: PyWavelets' maximum useful
            level, limited so that ``2^level`` divides both sides.
        max_iter, tol: scikit-learn's coordinate-descent limits (its defaults).
        max_pixels: largest number of unknowns ``C * H * W`` (the matrix has one column each).
        max_entries: largest number of entries of the materialised ``A Psi`` (float64: 8 bytes each).
        chunk: basis images pushed through ``physics.A`` per call.
    """

    basis: str = "pixel"
    alpha: float = 0.1
    wavelet: str = "db4"
    level: int | None = None
    max_iter: int = 1000
    tol: float = 1e-4
    max_pixels: int = 65536
    max_entries: int = 100_000_000
    chunk: int = 256

    def validate(self) -> None:
        check_choice(self, "basis", BASES)
        check_number(self, "alpha", above=True)
        if not isinstance(self.wavelet, str):  # PyWavelets checks the name when the basis is built
            raise setting_error(self, "wavelet", "give the name of an orthogonal wavelet, such as 'db4'")
        check_int(self, "level", 1, none=True)
        check_int(self, "max_iter", 1)
        check_number(self, "tol")
        for name in ("max_pixels", "max_entries", "chunk"):
            check_int(self, name, 1)


class _Fit(NamedTuple):
    """One Lasso fit of a batch: coefficients ``(B, n)``, their synthesis ``Psi c`` (unclipped,
    ``(B, C, H, W)``), the residuals ``(B, m)`` on the kept measurement rows, and what the record
    reports."""

    coef: np.ndarray
    x64: np.ndarray
    resid: np.ndarray
    m: int
    alpha_max: np.ndarray
    n_iter: list[int]
    converged: bool
    closed_form: bool


class Lasso(GeneratorFreeSolver):
    """Lasso in a fixed orthonormal basis as a deepinv ``Reconstructor``.

    ``x_hat = Lasso((C, H, W), basis="dct", alpha=1e-3)(y, physics)``; ``solver.last_record``
    holds the objective, the measurement error and, in ``extra``, per image the number of nonzero
    coefficients and ``alpha_max``, the smallest ``alpha`` for which the solution is all zeros
    (``max |(A Psi)^T y| / m``): useful ``alpha`` values lie well below it.
    """

    method = "lasso"

    def __init__(
        self,
        image_shape: Sequence[int],
        config: LassoConfig | None = None,
        device: torch.device | str = "cpu",
        **overrides: Any,
    ):
        config = apply_overrides(config or LassoConfig(), overrides)
        super().__init__(image_shape, config, device)
        self.method = f"lasso-{config.basis}"

    # the matrix ------------------------------------------------------------------------------
    @torch.no_grad()
    def matrix(
        self, physics: Any, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(A Psi, kept_rows, A(0))``: the materialised operator on the measurement rows that are
        not identically zero, as a Fortran-ordered float64 array ``(m, n)``; ``physics.A`` runs on
        ``device`` in ``dtype``."""
        cfg: LassoConfig = self.config
        c, h, w = self.image_shape
        n = c * h * w
        if n > cfg.max_pixels:
            raise UserError(
                f"Lasso materialises A as a matrix with one column per unknown: {c}x{h}x{w} = {n} "
                f"unknowns exceed the limit max_pixels={cfg.max_pixels}; use a smaller image"
            )
        synth = synthesis_operator(self.image_shape, cfg.basis, cfg.wavelet, cfg.level)
        dev = torch.device(device)

        def apply(x: np.ndarray) -> Tensor:
            t = torch.from_numpy(np.ascontiguousarray(x)).to(device=dev, dtype=dtype)
            return physics.A(t).reshape(t.shape[0], -1).double().cpu()

        a0 = apply(np.zeros((1, c, h, w)))[0]
        # a row of A is zero iff its output on a generic (Gaussian) input is exactly zero
        probe = np.random.default_rng(0).standard_normal((1, c, h, w))
        kept = torch.nonzero(apply(probe)[0] - a0).flatten().numpy()
        m = int(kept.size)
        if m == 0:
            raise UserError("the measurement operator is identically zero: nothing to reconstruct")
        if m * n > cfg.max_entries:
            raise UserError(
                f"Lasso would materialise a {m}x{n} matrix ({m * n} entries), over the limit "
                f"max_entries={cfg.max_entries}; use a smaller image or fewer measurements"
            )
        mat = np.empty((m, n), dtype=np.float64, order="F")
        step = max(1, int(cfg.chunk))
        for j0 in range(0, n, step):
            j1 = min(n, j0 + step)
            coef = np.zeros((j1 - j0, n))
            coef[np.arange(j1 - j0), np.arange(j0, j1)] = 1.0
            cols = apply(synth(coef.reshape(-1, c, h, w))) - a0
            mat[:, j0:j1] = cols[:, kept].numpy().T
        return mat, kept, a0.numpy()

    @torch.no_grad()
    def elementwise_mask(
        self, physics: Any, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
    ) -> np.ndarray | None:
        """The 0/1 mask ``M`` (``(C, H, W)``, bool) when ``physics.A(x) = M * x`` exactly (denoising,
        pixel inpainting), else None. Two random probes decide it."""
        c, h, w = self.image_shape
        rng = np.random.default_rng(1)
        probe = torch.from_numpy(rng.standard_normal((2, c, h, w))).to(device=device, dtype=dtype)
        try:
            out = physics.A(probe)
        except Exception:
            return None
        if tuple(out.shape) != tuple(probe.shape):
            return None
        keep = out[0] != 0
        if not torch.equal(out, probe * keep):
            return None
        return keep.cpu().numpy()

    def _fit_decoupled(self, y: Tensor, mask: np.ndarray) -> _Fit:
        """The exact Lasso solution when ``A Psi`` has orthonormal or zero columns (``A`` a 0/1
        mask and the pixel basis, or ``A`` the identity and any orthonormal basis): the problem
        decouples per coefficient, ``c = soft(Psi^T A^T y, m alpha)``; no matrix, no iterations."""
        cfg: LassoConfig = self.config
        c, h, w = self.image_shape
        batch = y.shape[0]
        m = int(mask.sum())
        if m == 0:
            raise UserError("the measurement operator is identically zero: nothing to reconstruct")
        z = y.reshape(batch, c, h, w).double().cpu().numpy() * mask  # A^T y
        synth, analyse = basis_operators(self.image_shape, cfg.basis, cfg.wavelet, cfg.level)
        u = analyse(z)
        coef = np.sign(u) * np.maximum(np.abs(u) - m * float(cfg.alpha), 0.0)
        x64 = synth(coef)
        resid = (z - x64 * mask).reshape(batch, -1)
        return _Fit(
            coef=coef.reshape(batch, -1),
            x64=x64,
            resid=resid,
            m=m,
            alpha_max=np.abs(u).reshape(batch, -1).max(1) / m,
            n_iter=[0] * batch,
            converged=True,
            closed_form=True,
        )

    def _fit_matrix(self, y: Tensor, physics: Any, dtype: torch.dtype) -> _Fit:
        """scikit-learn's coordinate descent on the materialised ``A Psi`` (:meth:`matrix`)."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import Lasso as SkLasso

        cfg: LassoConfig = self.config
        c, h, w = self.image_shape
        batch = y.shape[0]
        mat, kept, a0 = self.matrix(physics, dtype=dtype, device=y.device)
        yy = y.reshape(batch, -1).double().cpu().numpy()
        if yy.shape[1] != a0.size:
            raise UserError(
                f"measurements of shape {tuple(y.shape)} do not match the physics "
                f"({a0.size} values per image for a {c}x{h}x{w} image)"
            )
        target = np.asfortranarray((yy - a0)[:, kept].T)  # (m, B)
        est = SkLasso(
            alpha=float(cfg.alpha), fit_intercept=False, max_iter=int(cfg.max_iter), tol=float(cfg.tol)
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            est.fit(mat, target if batch > 1 else target[:, 0])
        coef = np.asarray(est.coef_).reshape(batch, -1)
        synth = synthesis_operator(self.image_shape, cfg.basis, cfg.wavelet, cfg.level)
        return _Fit(
            coef=coef,
            x64=synth(coef.reshape(batch, c, h, w)),
            resid=target.T - coef @ mat.T,
            m=int(mat.shape[0]),
            alpha_max=np.abs(mat.T @ target).max(0) / mat.shape[0],
            n_iter=[int(v) for v in np.atleast_1d(est.n_iter_)],
            converged=not any(issubclass(wi.category, ConvergenceWarning) for wi in caught),
            closed_form=False,
        )

    def solve(self, y: Tensor, physics: Any, progress: bool = False) -> tuple[Tensor, RunRecord]:
        cfg: LassoConfig = self.config
        self._check_y(y)
        batch = y.shape[0]
        rec = RunRecord(method=self.method)
        with Timer() as timer:
            dtype = y.dtype if y.is_floating_point() else torch.float32
            mask = self.elementwise_mask(physics, dtype=dtype, device=y.device)
            if mask is not None and (cfg.basis == "pixel" or bool(mask.all())):
                fit = self._fit_decoupled(y, mask)
            else:
                fit = self._fit_matrix(y, physics, dtype)
            x = torch.from_numpy(fit.x64).to(device=y.device, dtype=dtype).clamp(0, 1)
            objective = (fit.resid**2).sum(1) / (2 * fit.m) + cfg.alpha * np.abs(fit.coef).sum(1)
            with torch.no_grad():
                err = fidelity(physics.A(x), y, "mse").float().cpu()
        rec.log_step(torch.from_numpy(objective), err, batch, 0)
        return finish_run(  # x is in [0, 1] already
            rec,
            Best(x, err, torch.zeros(batch, dtype=torch.long)),
            timer,
            round_steps=max(fit.n_iter),
            basis=cfg.basis,
            alpha=float(cfg.alpha),
            measurements=fit.m,
            alpha_max=[float(v) for v in fit.alpha_max],
            nonzero=[int(v) for v in (fit.coef != 0).sum(1)],
            n_iter=fit.n_iter,
            converged=fit.converged,
            **({"closed_form": True} if fit.closed_form else {}),
        )
