"""The pixel diffusion model: its DDIM sampler and deepinv denoiser against a Gaussian data set
with the exact noise predictor, and its trainer resuming bit for bit."""

from __future__ import annotations

import pytest
import torch

from genprior.diffusion.pixel import PixelDiffusion, UNetConfig
from genprior.errors import UserError
from genprior.training.ddpm import DDPMTrainConfig, export_ddpm, train_ddpm

MU, S = 0.1, 0.25  # the data: every pixel of 2 x - 1 i.i.d. N(MU, S^2)


def _exact(model: PixelDiffusion) -> PixelDiffusion:
    """``model`` with the exact noise predictor of the Gaussian data: with
    ``z = sqrt(a) x + sqrt(1 - a) e``, ``E[e | z] = sqrt(1 - a) (z - sqrt(a) MU) / (a S^2 + 1 - a)``."""

    def eps(z, t):
        a = model.alphas_cumprod[t].view(-1, 1, 1, 1).to(z.dtype)
        return (1 - a).sqrt() * (z - a.sqrt() * MU) / (a * S**2 + 1 - a)

    model.eps = eps
    return model


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return PixelDiffusion(UNetConfig(size=8, channels=1, widths=(8, 16), attention=(False, False))).eval()


def test_ddim_with_the_exact_score_recovers_the_data_mean_and_variance(tiny):
    """DDIM (eta 0) follows the probability-flow ODE: with the exact score and all 1000 steps it
    maps N(0, I) onto the data (with 50 steps its discretisation loses 10 % of the std)."""
    x = _exact(tiny).sample(1000, steps=1000, seed=3) * 2 - 1  # back to the model's space
    n = x.numel()
    assert abs(float(x.mean()) - MU) < 4 * S / n**0.5
    assert abs(float(x.std()) / S - 1) < 0.02


def test_deepinv_denoiser_is_the_posterior_mean_of_the_data(tiny):
    """deepinv's wrapper of the model, on ``y = x0 + sigma n`` with ``x0`` in [0, 1], returns
    ``E[x0 | y]``: for the Gaussian data, a linear shrinkage towards the mean."""
    D = _exact(tiny).denoiser()
    m, s = (MU + 1) / 2, S / 2  # the data in [0, 1]
    g = torch.Generator().manual_seed(0)
    x0 = m + s * torch.randn(4, 1, 8, 8, generator=g)
    for sigma in (0.05, 0.2, 0.5):
        y = x0 + sigma * torch.randn(x0.shape, generator=g)
        want = m + s**2 / (s**2 + sigma**2) * (y - m)
        got = D(y, sigma)
        # deepinv picks the nearest of the 1000 discrete steps: a fraction of a percent in sigma
        torch.testing.assert_close(got, want.clamp(0, 1), atol=0.02 * sigma + 1e-3, rtol=0)


def test_training_resumes_bit_for_bit_and_exports(tmp_path):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(40, 1, 8, 8, generator=g)
    cfg = DDPMTrainConfig(steps=6, batch=8, warmup=2, ckpt_every=2, widths=(8, 16), attention=(False, True))
    full = train_ddpm(tmp_path / "a", cfg, images=images, progress=False)
    train_ddpm(tmp_path / "b", cfg, images=images, max_steps=3, progress=False)
    resumed = train_ddpm(tmp_path / "b", cfg, images=images, resume=True, progress=False)
    assert full["step"] == resumed["step"] == 6
    assert full["history"] == resumed["history"] and [h["step"] for h in full["history"]] == [6]
    for key in ("model", "ema"):
        for name, t in full[key]["state_dict"].items():
            assert torch.equal(t, resumed[key]["state_dict"][name]), (key, name)
    export_ddpm(tmp_path / "a" / "checkpoint.pt", tmp_path / "m.pt")
    m = PixelDiffusion.load(tmp_path / "m.pt")
    assert m.image_shape == (1, 8, 8) and m.info["steps"] == 6
    assert torch.load(tmp_path / "m.pt", weights_only=True)["format"] == "genprior-ddpm-1"
    with pytest.raises(UserError, match="already exists"):
        train_ddpm(tmp_path / "a", cfg, images=images, progress=False)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="multiple of groups"):
        UNetConfig(widths=(8, 12), attention=(False, False))
    with pytest.raises(UserError, match="lr"):
        DDPMTrainConfig(lr=0)
    with pytest.raises(UserError, match="one entry per level"):
        DDPMTrainConfig(widths=(8, 16), attention=(False,))
    from genprior.solvers.diffusion import DiffPIRConfig

    DiffPIRConfig(steps=1000)
    with pytest.raises(
        UserError, match=r"^DiffPIRConfig: steps = 1001: give at most 1000, the model's timesteps"
    ):
        DiffPIRConfig(steps=1001)


@pytest.mark.parametrize(
    "name, settings", [("diffpir", {"steps": 100}), ("dps", {"steps": 1000, "weight": 300.0})]
)
def test_dps_and_diffpir_sample_the_exact_posterior_of_gaussian_data(tiny, name, settings):
    """i.i.d. Gaussian pixels, half of them observed without noise: the posterior of a missing
    pixel is its prior, an observed one is its measurement. deepinv's samplers, driven through
    genprior's solver rows with the exact noise predictor, give both."""
    from genprior.physics import make_physics
    from genprior.solvers.registry import make_solver

    physics = make_physics("inpaint", (1, 8, 8), mask_ratio=0.5, seed=0)
    g = torch.Generator().manual_seed(1)
    x0 = (MU + S * torch.randn(2, 1, 8, 8, generator=g) + 1) / 2
    y = physics(x0)
    solver = make_solver(name, _exact(tiny), **settings, chains=64, holdout=0)  # the sampler by itself
    x_hat = solver(y, physics)
    post = solver.last_record.posterior
    assert post.samples.shape == (64, 2, 1, 8, 8) and x_hat.shape == x0.shape
    seen = physics.mask.bool().expand_as(x0)
    assert abs(float(post.mean[~seen].mean()) - (MU + 1) / 2) < 0.01
    assert abs(float(post.std[~seen].mean()) / (S / 2) - 1) < 0.1
    assert float((x_hat - x0)[seen].abs().max()) < 0.02 and float(post.std[seen].mean()) < 0.03
    assert solver.last_record.best_meas_err[0] < 1e-3


def test_stochastic_resampling_draws_from_its_formula():
    from genprior.diffusion.resample import stochastic_resample

    z0_y, z_prime = torch.tensor([0.8, -0.3]), torch.tensor([-0.5, 0.4])
    a, s2 = torch.tensor(0.6), torch.tensor(0.3)
    noise = torch.randn(200_000, 2, generator=torch.Generator().manual_seed(0))
    draws = stochastic_resample(z0_y, z_prime, a, s2, noise)
    mean = (s2 * a.sqrt() * z0_y + (1 - a) * z_prime) / (s2 + 1 - a)
    var = s2 * (1 - a) / (s2 + 1 - a)
    torch.testing.assert_close(draws.mean(0), mean, atol=4 * (var / 200_000) ** 0.5, rtol=0)
    torch.testing.assert_close(draws.var(0), var.expand(2), atol=0.01 * var, rtol=0)
    # no trust in the data term: the DDIM step; full trust: the data-consistent latent, rescaled
    zero = torch.zeros(2)
    torch.testing.assert_close(stochastic_resample(z0_y, z_prime, a, torch.tensor(1e-12), zero), z_prime)
    torch.testing.assert_close(
        stochastic_resample(z0_y, z_prime, a, torch.tensor(1e12), zero), a.sqrt() * z0_y
    )


def test_resample_explains_the_observed_pixels_as_well_as_the_autoencoder_can():
    """A lossy autoencoder (2x2 means) and the exact latent score of Gaussian pixels: on noiseless
    inpainting, ReSample's residual on the observed pixels is no larger than the autoencoder's
    own reconstruction error of the clean image there (the floor a latent method reaches), and
    at most the stated noise variance when the image is in the autoencoder's range."""
    import torch.nn.functional as F

    from genprior.diffusion.pixel import linear_alphas_cumprod
    from genprior.diffusion.resample import ReSampleConfig, resample
    from genprior.physics import make_physics

    ac = linear_alphas_cumprod().float()
    s_lat = S / 2  # a 2x2 mean of i.i.d. pixels

    def eps_model(z, t):
        a = ac[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (z - a.sqrt() * MU) / (a * s_lat**2 + 1 - a)

    def decode(z):
        return (F.interpolate(z, scale_factor=2, mode="nearest") + 1) / 2

    def encode(x):
        return F.avg_pool2d(2 * x - 1, 2)

    physics = make_physics("inpaint", (1, 8, 8), mask_ratio=0.5, seed=0)
    g = torch.Generator().manual_seed(1)
    cfg = ReSampleConfig(steps=100, noise_sigma=0.01)
    for x0, in_range in (
        (decode(MU + s_lat * torch.randn(4, 1, 4, 4, generator=g)), True),
        ((MU + S * torch.randn(4, 1, 8, 8, generator=g) + 1) / 2, False),
    ):
        y = physics(x0)
        x = resample(y, physics, eps_model, decode, encode, (1, 4, 4), ac, cfg)
        # per measurement entry, as the stopping rule counts (the unobserved entries are 0 in both)
        residual = float((physics.A(x) - y).pow(2).mean())
        ae = float((physics.A(decode(encode(x0))) - y).pow(2).mean())
        assert residual <= (cfg.noise_sigma**2 if in_range else ae), (residual, ae)


@pytest.mark.parametrize("steps", [20, 1])
def test_resample_fits_noisy_inpainting_down_to_the_noise_on_the_observed_pixels(steps):
    """deepinv's inpainting zeroes the masked entries of ``y``, its noise included, so the truth
    leaves the noise variance on the observed entries and half of it over all entries at half
    of the pixels observed. ReSample's fits stop there, not at the variance over all entries
    (twice the noise on the observed pixels); and its last step fits ``y`` at any step count,
    one step included. Exact Gaussian latents, the decoder ``(z + 1) / 2``."""
    from genprior.diffusion.latent import scaled_linear_alphas_cumprod
    from genprior.diffusion.resample import ReSampleConfig, resample
    from genprior.physics import make_physics

    ac = scaled_linear_alphas_cumprod().float()

    def eps_model(z, t):
        a = ac[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (z - a.sqrt() * MU) / (a * S**2 + 1 - a)

    def decode(z):
        return (z + 1) / 2

    g = torch.Generator().manual_seed(1)
    x0 = decode(MU + S * torch.randn(4, 1, 8, 8, generator=g))
    physics = make_physics("inpaint", (1, 8, 8), mask_ratio=0.5, noise_std=0.1, seed=0)
    y = physics(x0)
    seen = physics.mask.bool().expand_as(x0)
    x = resample(
        y, physics, eps_model, decode, lambda v: 2 * v - 1, (1, 8, 8), ac, ReSampleConfig(steps=steps)
    )
    per_seen = (physics.A(x) - y)[seen].pow(2).reshape(4, -1).mean(1) / 0.1**2
    assert bool((per_seen <= 1.01).all()), per_seen


HOLDOUT_TASKS = {
    "inpaint": dict(mask_ratio=0.5),
    "superres": dict(scale=2),
    "denoise": dict(noise_std=0.1),
    "cs": dict(measurements=20, noise_std=0.01),
}


@pytest.mark.parametrize("task", HOLDOUT_TASKS)
def test_holdout_scales_the_std_map_of_the_same_solve(tiny, task):
    """``holdout``: a first solve without some measurement entries sets a factor for the std map;
    the answer and the samples are those of the solve without ``holdout``, to every digit. On
    every task: inpainting holds out observed pixels, the others entries of their measurements."""
    from genprior.physics import make_physics
    from genprior.solvers.registry import make_solver

    physics = make_physics(task, (1, 8, 8), seed=0, **HOLDOUT_TASKS[task])
    x0 = (MU + S * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1)) + 1) / 2
    y = physics(x0)
    plain = make_solver("diffpir", _exact(tiny), steps=8, chains=4, holdout=0)
    held = make_solver("diffpir", _exact(tiny), steps=8, chains=4, holdout=0.3)
    x_plain, x_held = plain(y, physics), held(y, physics)
    a, b = plain.last_record.posterior, held.last_record.posterior
    assert torch.equal(x_plain, x_held) and torch.equal(a.samples, b.samples)
    scale = torch.tensor(held.last_record.extra["holdout_scale"])
    assert scale.shape == (2,) and bool((scale >= 1).all()) and bool((scale > 1).any())
    torch.testing.assert_close(b.std, a.std * scale.view(2, 1, 1, 1))


def test_holdout_settings_and_physics_it_cannot_hold_out(tiny):
    from deepinv.physics import Inpainting, Physics

    from genprior.solvers.registry import make_solver

    held = make_solver("diffpir", tiny, steps=8, chains=2, holdout=0.3)
    y = torch.rand(2, 1, 8, 8)
    masks = (torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    with pytest.raises(UserError, match="one inpainting mask for the whole batch"):
        held(y * masks, Inpainting(img_size=(1, 8, 8), mask=masks))
    with pytest.raises(UserError, match="needs a linear physics .* not Physics: give holdout = 0"):
        held(y, Physics(A=lambda x: x.abs()))
    with pytest.raises(UserError, match=r"holdout = 1.0: give a share in \[0, 1\)"):
        make_solver("dps", tiny, holdout=1.0, chains=2)
    with pytest.raises(UserError, match="chains >= 2"):
        make_solver("dps", tiny, holdout=0.1)


def test_holdout_first_solve_never_sees_the_held_out_entries(tiny):
    """The first solve gets the measurements with the held-out entries zeroed and a physics whose
    ``A`` is 0 there (compressed sensing: entries of ``y``, not pixels); the second, all of them."""
    from genprior.physics import make_physics
    from genprior.physics.heldout import HeldOut
    from genprior.solvers.diffusion import DiffPIR, DiffPIRConfig

    seen = []

    class Recording(DiffPIR):
        def _sample(self, y, physics, progress):
            seen.append((y.clone(), physics))
            return torch.rand(y.shape[0], 1, 8, 8, generator=torch.Generator().manual_seed(len(seen)))

    physics = make_physics("cs", (1, 8, 8), measurements=60, noise_std=0.01, seed=0)
    y = physics(torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2)))
    Recording(tiny, DiffPIRConfig(chains=2, holdout=0.25))(y, physics)
    (y1, p1), (y2, p2) = seen
    assert isinstance(p1, HeldOut) and p2 is physics and torch.equal(y2, y.repeat(2, 1))
    held = (y1 == 0) & (y.repeat(2, 1) != 0)
    assert 0.1 < float(held.float().mean()) < 0.45
    assert bool((held == held[:1]).all())  # one draw for the batch: the same entries for every image
    ax = p1.A(torch.rand(5, 1, 8, 8))  # any batch size, as the latent solvers' floor asks
    assert bool((ax[:, held[0]] == 0).all()) and bool((ax[:, ~held[0]] != 0).all())


def test_holdout_calibrates_an_overconfident_sampler(tiny):
    """Split conformal calibration: a sampler whose samples agree on 0.5 at every missing pixel
    (std 0.001) while the truth there is uniform covers almost none of it; scaled on held-out
    observed pixels (the same distribution), its std map covers about 95 % of the missing ones."""
    from genprior import metrics
    from genprior.physics import make_physics
    from genprior.solvers.diffusion import DiffPIR, DiffPIRConfig

    class Overconfident(DiffPIR):
        def _sample(self, y, physics, progress):
            seen = physics.mask.to(y).expand_as(y)
            return seen * y + (1 - seen) * (0.5 + 0.001 * torch.randn_like(y))

    physics = make_physics("inpaint", (1, 32, 32), mask_ratio=0.5, seed=0)
    x0 = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    y = physics(x0)
    where = metrics.unobserved(physics, tuple(x0.shape))
    cover = {}
    for h in (0.0, 0.2):
        solver = Overconfident(tiny, DiffPIRConfig(chains=8, holdout=h))
        solver(y, physics)
        post = solver.last_record.posterior
        cover[h] = float(metrics.coverage(x0, post.mean, post.std, where).mean())
    assert cover[0.0] < 0.05
    assert 0.9 <= cover[0.2] <= 1.0


def test_holdout_calibrates_an_overconfident_denoiser(tiny):
    """The same on denoising, where every pixel is measured: samples agreeing on 0.5 (std 0.001)
    cover none of a uniform truth; the factor from held-out noisy pixels (their noise counted by
    the rule) makes ``mean +- 2 std`` cover about 95 % of the true pixels."""
    from genprior import metrics
    from genprior.physics import make_physics
    from genprior.solvers.diffusion import DiffPIR, DiffPIRConfig

    class Overconfident(DiffPIR):
        def _sample(self, y, physics, progress):
            return 0.5 + 0.001 * torch.randn_like(y)

    physics = make_physics("denoise", (1, 32, 32), noise_std=0.05, seed=0)
    x0 = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    y = physics(x0)
    cover = {}
    for h in (0.0, 0.2):
        solver = Overconfident(tiny, DiffPIRConfig(chains=8, holdout=h))
        solver(y, physics)
        post = solver.last_record.posterior
        cover[h] = float(metrics.coverage(x0, post.mean, post.std).mean())
    assert cover[0.0] < 0.05
    assert 0.9 <= cover[0.2] <= 1.0


def test_holdout_is_on_by_default_with_two_chains_or_more(tiny):
    """The default (``None``) holds out 10 % with ``chains >= 2`` (SGILO's default), none with one
    chain."""
    from genprior.physics import make_physics
    from genprior.solvers.diffusion import DPSConfig
    from genprior.solvers.registry import make_solver

    assert DPSConfig(chains=2).holdout is None
    physics = make_physics("superres", (1, 8, 8), scale=2, seed=0)
    y = physics(torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    runs = {}
    for name, kw in {"default": {}, "off": dict(holdout=0), "given": dict(holdout=0.1)}.items():
        solver = make_solver("diffpir", _exact(tiny), steps=4, chains=3, **kw)
        solver(y, physics)
        runs[name] = solver.last_record
    assert runs["default"].extra["holdout_scale"] == runs["given"].extra["holdout_scale"]
    assert "holdout_scale" not in runs["off"].extra
    one = make_solver("diffpir", _exact(tiny), steps=4)
    one(y, physics)
    assert "holdout_scale" not in one.last_record.extra
