"""The latent diffusion model: its autoencoder and UNet trainers resuming bit for bit, Latent-DPS
and PSLD against Gaussian data with the exact score, and the latent solver rows."""

from __future__ import annotations

import types

import pytest
import torch

from genprior.diffusion.latent import AEConfig, Autoencoder, LatentDiffusion, scaled_linear_alphas_cumprod
from genprior.diffusion.pixel import UNetConfig
from genprior.errors import UserError
from genprior.physics import make_physics
from genprior.training.latent import (
    AETrainConfig,
    LDMTrainConfig,
    export_autoencoder,
    export_ldm,
    train_autoencoder,
    train_ldm,
)

MU, S = 0.1, 0.25  # Gaussian latents: every entry i.i.d. N(MU, S^2)


def _same_weights(a: dict, b: dict) -> None:
    for key in ("model", "ema"):
        for name, t in a[key]["state_dict"].items():
            assert torch.equal(t, b[key]["state_dict"][name]), (key, name)


def test_autoencoder_and_ldm_training_resume_bit_for_bit_and_export(tmp_path):
    images = torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ae_cfg = AETrainConfig(steps=6, batch=8, warmup=2, ckpt_every=2, widths=(8, 8), latent_channels=2)
    full = train_autoencoder(tmp_path / "a", ae_cfg, images=images, progress=False)
    train_autoencoder(tmp_path / "b", ae_cfg, images=images, max_steps=3, progress=False)
    resumed = train_autoencoder(tmp_path / "b", ae_cfg, images=images, resume=True, progress=False)
    assert full["step"] == resumed["step"] == 6
    _same_weights(full, resumed)
    with pytest.raises(UserError, match="is at step 6, past steps = 4: give --steps 6 or more"):
        train_autoencoder(
            tmp_path / "b", AETrainConfig(**{**vars(ae_cfg), "steps": 4}), images=images, resume=True
        )
    export_autoencoder(tmp_path / "a" / "checkpoint.pt", tmp_path / "ae.pt")
    ae = Autoencoder.load(tmp_path / "ae.pt")
    assert ae.latent_shape == (2, 4, 4) and ae.info["steps"] == 6

    ldm_cfg = LDMTrainConfig(
        steps=6, batch=8, warmup=2, ckpt_every=2, widths=(8, 16), attention=(False, True)
    )
    full = train_ldm(tmp_path / "c", tmp_path / "ae.pt", ldm_cfg, images=images, progress=False)
    train_ldm(tmp_path / "d", tmp_path / "ae.pt", ldm_cfg, images=images, max_steps=3, progress=False)
    resumed = train_ldm(tmp_path / "d", None, ldm_cfg, images=images, resume=True, progress=False)
    _same_weights(full, resumed)
    export_ldm(tmp_path / "c" / "checkpoint.pt", tmp_path / "ldm.pt", images=images, error_images=30)
    m = LatentDiffusion.load(tmp_path / "ldm.pt")
    # the file keeps its autoencoder's errors (of the float16 weights it stores) on 30 images
    with torch.no_grad():
        err = m.decode(m.encode(images[:30])).clamp(0, 1) - images[:30]
    assert m.recon_errors.shape == (30, 1, 8, 8)
    assert torch.allclose(m.recon_errors, err, atol=1e-3) and float(err.abs().max()) > 1e-2
    # their floor under a physics: the median image's mean squared error under A, less the share
    # a latent of d = 32 entries absorbs from m = 48 observed pixels (least squares: (m - d) / m)
    physics = make_physics("inpaint", (1, 8, 8), seed=0, mask_ratio=0.25)
    per_image = (m.recon_errors * physics.mask).pow(2).flatten(1).mean(1)
    assert m.recon_floor(physics) == pytest.approx(float(per_image.median()) * (1 - 32 / 48))
    # no floor where the latent has as many entries as the measurements
    assert m.recon_floor(make_physics("inpaint", (1, 8, 8), seed=0, mask_ratio=0.5)) == 0
    assert torch.load(tmp_path / "ldm.pt", weights_only=True)["format"] == "genprior-ldm-1"
    # the latents are scaled to unit std on the training set
    means = torch.cat([ae.posterior(images)[0]])
    assert abs(float((m.scale * means).std()) - 1) < 1e-4
    assert m.sample(3, steps=4).shape == (3, 1, 8, 8)
    with pytest.raises(UserError, match="needs --autoencoder"):
        train_ldm(tmp_path / "e", None, ldm_cfg, images=images, progress=False)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(UserError, match="kl_weight"):
        AETrainConfig(kl_weight=-1.0)
    with pytest.raises(UserError, match="divisible"):
        AEConfig(size=30)
    from genprior.diffusion.resample import ReSampleConfig

    for bad in (-1e-4, float("nan"), "auto"):
        with pytest.raises(UserError, match="^ReSampleConfig: model_error = "):
            ReSampleConfig(model_error=bad)
    with pytest.raises(UserError, match="^ReSampleConfig: gluing = "):
        ReSampleConfig(gluing=-0.1)
    with pytest.raises(UserError, match="^ReSampleConfig: floor_share = "):
        ReSampleConfig(floor_share=-0.5)
    with pytest.raises(UserError, match="^ReSampleConfig: gluing = 0.1 .* dps_weight = 0"):
        ReSampleConfig(dps_weight=0.0)  # the default gluing rides on the step it turns off
    ReSampleConfig(dps_weight=0.0, gluing=0.0)
    ae = Autoencoder(AEConfig(size=8, widths=(8, 8), latent_channels=2))
    with pytest.raises(UserError, match="latents"):
        LatentDiffusion(ae, UNetConfig(size=4, channels=3, widths=(8,), attention=(False,)))


def _gaussian_latent_model(side: int = 8) -> types.SimpleNamespace:
    """Gaussian latents with the exact noise predictor, and the decoder ``x = (z + 1) / 2``."""
    ac = scaled_linear_alphas_cumprod().float()

    def eps(z, t):
        a = ac[t].view(-1, 1, 1, 1)
        return (1 - a).sqrt() * (z - a.sqrt() * MU) / (a * S**2 + 1 - a)

    return types.SimpleNamespace(
        alphas_cumprod=ac,
        latent_shape=(1, side, side),
        eps=eps,
        decode=lambda z: (z + 1) / 2,
        encode=lambda x: 2 * x - 1,
    )


@pytest.mark.parametrize("gluing", [0.0, 0.1])
def test_latent_dps_and_psld_fit_the_observed_pixels_and_keep_the_prior_elsewhere(gluing):
    """Half of the pixels observed without noise: guidance brings the observed pixels to the
    measurements (unguided sampling misses them by the prior's spread), and leaves the missing
    ones distributed as the prior."""
    from genprior.diffusion.guided import guided_latent_sampling
    from genprior.physics import make_physics

    model = _gaussian_latent_model()
    physics = make_physics("inpaint", (1, 8, 8), mask_ratio=0.5, seed=0)
    x0 = (MU + S * torch.randn(64, 1, 8, 8, generator=torch.Generator().manual_seed(1)) + 1) / 2
    y = physics(x0)
    seen = physics.mask.bool().expand_as(x0)

    def rms(x):
        return float((x - x0)[seen].pow(2).mean().sqrt())

    free = guided_latent_sampling(y, physics, model, steps=200, weight=0.0, seed=0)
    x = guided_latent_sampling(y, physics, model, steps=200, weight=1.0, gluing=gluing, seed=0)
    assert rms(free) > 0.15 and rms(x) < 0.04, (rms(free), rms(x))
    assert abs(float(x[~seen].mean()) - (MU + 1) / 2) < 0.01
    assert abs(float(x[~seen].std()) / (S / 2) - 1) < 0.15


def test_gluing_term_vanishes_on_consistent_latents_and_measures_the_misfit_otherwise():
    """PSLD's gluing term (shared by PSLD and ReSample's `gluing`) with the decoder ``(z + 1) / 2``
    and its inverse as encoder: 0 where ``D(z0)`` agrees with ``y`` on the observed pixels, and
    ``weight * 2 * ||mask * (y - D(z0))||`` otherwise (the adjoint puts the misfit back on the
    observed pixels only)."""
    from genprior.diffusion.resample import gluing_term
    from genprior.physics import make_physics

    model = _gaussian_latent_model()
    physics = make_physics("inpaint", (1, 8, 8), mask_ratio=0.5, seed=0)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = physics(x)
    glue = gluing_term(y, physics, model.encode, 0.3)
    z_true = model.encode(x)
    assert float(glue(z_true, model.decode(z_true)).abs().max()) < 1e-5
    z = z_true + torch.randn(z_true.shape, generator=torch.Generator().manual_seed(3))
    misfit = (physics.mask * (y - model.decode(z))).flatten(1).norm(dim=1)
    torch.testing.assert_close(glue(z, model.decode(z)), 0.3 * 2 * misfit)


@pytest.mark.parametrize("method", ["resample", "latent-dps", "psld"])
def test_latent_rows_repeat_with_a_seed_and_return_posterior_samples(method, tiny_ldm_path):
    from genprior.physics import make_physics
    from genprior.solvers.registry import make_solver
    from genprior.zoo import load_diffusion

    model = load_diffusion(tiny_ldm_path)
    physics = make_physics("superres", (3, 32, 32), scale=4, noise_std=0.05, seed=0)
    y = physics(torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    quick = (
        {"steps": 6, "every": 2, "pixel_iters": 2, "latent_iters": 2, "final_iters": 2}
        if method == "resample"
        else {"steps": 4}
    )
    a = make_solver(method, model, **quick, chains=2, seed=1)(y, physics)
    solver = make_solver(method, model, **quick, chains=2, seed=1)
    b = solver(y, physics)
    c = make_solver(method, model, **quick, chains=2, seed=2)(y, physics)
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    post = solver.last_record.posterior
    assert post.samples.shape == (2, 2, 3, 32, 32)
    # two chains: the std map calibrated on held-out low-resolution pixels by default
    assert len(solver.last_record.extra["holdout_scale"]) == 2
    torch.testing.assert_close(post.mean, b)
    if method == "resample":  # PSLD's gluing term in its Latent-DPS step reaches the samples
        glued = make_solver(method, model, **quick, chains=2, seed=1, gluing=0.5)(y, physics)
        assert glued.shape == a.shape and not torch.equal(glued, a)


def test_latent_rows_refuse_a_pixel_model_and_pixel_rows_a_latent_one(tiny_ldm_path, tiny_ddpm_path):
    from genprior.solvers.registry import make_solver
    from genprior.zoo import load_diffusion

    with pytest.raises(UserError, match="runs on a latent diffusion model"):
        make_solver("resample", load_diffusion(tiny_ddpm_path))
    with pytest.raises(UserError, match="runs on a pixel diffusion model"):
        make_solver("dps", load_diffusion(tiny_ldm_path))
    with pytest.raises(UserError, match="gamma"):
        make_solver("resample", load_diffusion(tiny_ldm_path), gamma=0.0)


def test_consistency_fit_stops_on_the_floor_not_past_it():
    """ReSample's consistency fit: an Adam step that takes an image's loss from above the floor
    to far below it (here the second step, from 0.49 to 0.16 against a floor of 0.3) is walked
    back along itself to where the loss meets the floor, for each image at its own step; an image
    that starts below the floor is left as it is, and one that never reaches it gets all steps."""
    from genprior.diffusion.resample import _fit

    start = torch.tensor([1.0, 0.1, 2.0, 50.0]).view(4, 1, 1).expand(4, 3, 2).contiguous()

    def loss_of(v):  # each image's own loss; the batch is passed whole
        return v.pow(2).flatten(1).mean(1)

    out = _fit(start, loss_of, floor=0.3, iters=20, lr=0.3)
    loss = loss_of(out)
    assert 0.3 * 0.995 <= float(loss[0]) <= 0.3 and 0.3 * 0.995 <= float(loss[2]) <= 0.3, loss
    torch.testing.assert_close(out[1], start[1])  # already below: untouched
    # out of steps: 20 Adam steps of about 0.3 each from 50 leave it far above the floor
    assert float(loss[3]) > 1000
    # the landed points lie on the path of the fit (every entry equal, between the steps' ends)
    assert float(out[0].std()) < 1e-6 and 0.4 < float(out[0, 0, 0]) < 0.7


def test_time_travel_steps_along_the_grid_with_matching_times_and_alphas():
    """With the noise predictor of one fixed latent ``z*`` (``eps = (z - sqrt(a_t) z*) /
    sqrt(1 - a_t)``), every DDIM step stays on that latent's path, so the look-ahead returns
    ``z*`` exactly, and only if each step uses the ``alpha_bar`` of the timestep it passes to the
    model (the reference code's slip breaks this)."""
    from genprior.diffusion.pixel import ddim_times
    from genprior.diffusion.resample import _look_ahead

    ac = scaled_linear_alphas_cumprod().float()
    target = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    seen: list[int] = []

    def eps_model(z, t):
        seen.append(int(t[0]))
        a = ac[t].view(-1, 1, 1, 1)
        return (z - a.sqrt() * target) / (1 - a).sqrt()

    ts = ddim_times(50)
    a = ac[ts[10]]
    z = a.sqrt() * target + (1 - a).sqrt() * torch.randn(
        target.shape, generator=torch.Generator().manual_seed(1)
    )
    out = _look_ahead(z, ts, 10, 5, ac, eps_model)
    assert seen == ts[10:16]
    torch.testing.assert_close(out, target, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("name", "missing"), [("fmnist-ldm-32", 0.5), ("fmnist-ldm8-32", 0.25)])
def test_bundled_ldm_resample_explains_observed_pixels_as_well_as_its_autoencoder(name, missing):
    """Each bundled latent model on two held-out Fashion-MNIST images with some pixels observed
    without noise (more of them than the latent has entries, so that the floor is not 0).
    Fitting down to the noise (``model_error = 0``): ReSample's residual on the observed pixels
    is no larger than the autoencoder's own reconstruction error of the clean image there (the
    floor a latent method can reach), and well below Latent-DPS's at the same number of steps.
    At its default, each image's fit stops at the floor the model's stored autoencoder errors
    give under this physics, not below it; with ``floor_share = 0.5``, closer to ``y`` and at
    most down to half of it."""
    from genprior.data import heldout
    from genprior.metrics import measurement_error
    from genprior.solvers.registry import make_solver
    from genprior.zoo import load_diffusion

    model = load_diffusion(name)
    x0 = heldout("fmnist", 2, size=32)[0]
    physics = make_physics("inpaint", (1, 32, 32), mask_ratio=missing, seed=0)
    y = physics(x0)
    seen = physics.mask.bool().expand_as(x0)

    def residual(x):
        return float((physics.A(x) - y)[seen].pow(2).mean())

    with torch.no_grad():
        floor = residual(model.decode(model.encode(x0)).clamp(0, 1))
    x = make_solver("resample", model, steps=30, every=3, seed=0, model_error=0.0)(y, physics)
    x_dps = make_solver("latent-dps", model, steps=30, seed=0)(y, physics)
    assert residual(x) <= floor, (residual(x), floor)
    assert residual(x) * 10 <= residual(x_dps), (residual(x), residual(x_dps))

    stop = model.recon_floor(physics)
    assert stop > 0
    per_image = measurement_error(
        make_solver("resample", model, steps=30, every=3, seed=0)(y, physics), y, physics
    )
    assert bool(((per_image <= stop) & (per_image >= 0.99 * stop)).all()), (per_image, stop)
    half = measurement_error(
        make_solver("resample", model, steps=30, every=3, seed=0, floor_share=0.5)(y, physics), y, physics
    )
    assert bool((half >= 0.99 * stop / 2).all() and (half <= per_image).all()), (half, per_image, stop)
    assert bool((half <= stop / 2).any()), (half, stop)  # at 30 steps not every fit gets there


def test_train_cli_errors_are_one_line(tmp_path, capsys):
    from genprior.cli import main

    (tmp_path / "file").write_text("not a folder")
    (tmp_path / "folder").mkdir()
    for argv, needle in (
        (["train", "ldm", "--out", str(tmp_path / "l"), "--steps", "2"], "needs --autoencoder"),
        (["train", "autoencoder", "--out", str(tmp_path / "a"), "--set", "kl_weight=-1"], "kl_weight"),
        (["train", "ldm", "--out", str(tmp_path / "l"), "--resume"], "cannot resume"),
        (["train", "ddpm", "--out", str(tmp_path / "d"), "--steps", "0"], "steps = 0: give an integer >= 1"),
        (["train", "ddpm", "--out", str(tmp_path / "d"), "--resume", "--set", "lr=1"], "drop --set lr=1"),
        (["train", "ddpm", "--out", str(tmp_path / "file")], "is a file: give a folder"),
        (
            ["train", "ddpm", "--out", str(tmp_path / "d"), "--export", str(tmp_path / "folder")],
            "is a folder",
        ),
        (["train", "ddpm", "--out", str(tmp_path / "file" / "d")], "is a file, not a folder"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "l").exists() and not (tmp_path / "a").exists() and not (tmp_path / "d").exists()


def test_gluing_glues_to_the_projection_at_super_resolution():
    """At super-resolution (``A A^T`` far from ``I``) the gluing term glues ``z0_hat``
    to the encoding of the projection of ``D(z0_hat)`` onto ``A x = y``: 0 where ``D(z0)`` is
    consistent with ``y``, and otherwise the distance to the encoded projection, which the paper's
    adjoint formula (``projection = "adjoint"``) misses."""
    from genprior.diffusion.resample import gluing_term
    from genprior.physics import make_physics, project_onto_measurements

    model = _gaussian_latent_model()
    physics = make_physics("superres", (1, 8, 8), scale=2, seed=0)
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    y = physics(x)
    z_true = model.encode(x)
    glue, adj = (
        gluing_term(y, physics, model.encode, 0.3),
        gluing_term(y, physics, model.encode, 0.3, "adjoint"),
    )
    assert float(glue(z_true, model.decode(z_true)).abs().max()) < 1e-4
    z = z_true + torch.randn(z_true.shape, generator=torch.Generator().manual_seed(3))
    xz = model.decode(z)
    want = 0.3 * (z - model.encode(project_onto_measurements(physics, xz, y))).flatten(1).norm(dim=1)
    torch.testing.assert_close(glue(z, xz), want)
    assert torch.all((adj(z, xz) - want).abs() > 0.1 * want)
    from genprior.solvers.latent import PSLDConfig, ReSampleConfig

    for config in (PSLDConfig, ReSampleConfig):
        with pytest.raises(UserError, match="gluing_projection"):
            config(gluing_projection="transpose")
