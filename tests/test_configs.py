"""Solver settings check themselves: a bad value is a one-line UserError naming the setting."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from toy_generator import ToyGenerator

from genprior.errors import UserError
from genprior.solvers.common import PosteriorSamples, apply_overrides, latent_groups
from genprior.solvers.csgm import CSGM, CSGMConfig
from genprior.solvers.dip import DeepImagePrior, DIPConfig
from genprior.solvers.ilo import ILO, ILOConfig
from genprior.solvers.peers import DeepinvCSGMConfig
from genprior.solvers.projector import ProjectorConfig
from genprior.solvers.pulse import PULSEConfig
from genprior.solvers.sparse import Lasso, LassoConfig

CONFIGS = (ILOConfig, CSGMConfig, PULSEConfig, ProjectorConfig, LassoConfig, DIPConfig, DeepinvCSGMConfig)

# (config class, setting, bad value): one of each kind a setting can be wrong in
BAD = [
    (ILOConfig, "stages", (2, 1)),
    (ILOConfig, "stages", (0, 1)),
    (ILOConfig, "stages", (1, 2.0)),
    (ILOConfig, "stages", 3),
    (ILOConfig, "steps", -1),
    (ILOConfig, "steps", True),
    (ILOConfig, "steps", ()),
    (ILOConfig, "steps", [10, 2.5]),
    (ILOConfig, "steps", "100"),
    (ILOConfig, "lr", -0.1),
    (ILOConfig, "lr", "0.1"),
    (ILOConfig, "lr", math.nan),
    (ILOConfig, "state_lr", math.inf),
    (ILOConfig, "radius", -0.4),
    (ILOConfig, "radius", []),
    (ILOConfig, "radius", [0.2, math.nan]),
    (ILOConfig, "optimize_noise", 1),
    (ILOConfig, "spherical", "yes"),
    (ILOConfig, "fidelity", "huber"),
    (ILOConfig, "deadzone", -1.0),
    (ILOConfig, "perceptual", "lpips"),
    (ILOConfig, "perceptual_weight", -1),
    (ILOConfig, "geocross_weight", None),
    (ILOConfig, "noise_floor", -0.1),
    (ILOConfig, "noise_floor", "automatic"),
    (ILOConfig, "noise_floor", math.nan),
    (ILOConfig, "rampup", -0.05),
    (ILOConfig, "rampdown", math.inf),
    (ILOConfig, "seed", 1.5),
    (ILOConfig, "seed", True),
    (CSGMConfig, "steps", -1),
    (CSGMConfig, "steps", 10.0),
    (CSGMConfig, "lr", -1),
    (CSGMConfig, "restarts", 0),
    (CSGMConfig, "restarts", False),
    (CSGMConfig, "prior_weight", -0.1),
    (CSGMConfig, "reduction", "max"),
    (CSGMConfig, "optimize_noise", None),
    (CSGMConfig, "lr_schedule", "cosine"),
    (CSGMConfig, "init", "zeros"),
    (CSGMConfig, "seed", None),
    (DeepinvCSGMConfig, "steps", 0),
    (DeepinvCSGMConfig, "steps", 2.5),
    (DeepinvCSGMConfig, "lr", 0.0),
    (DeepinvCSGMConfig, "tol", -1e-4),
    (DeepinvCSGMConfig, "seed", None),
    (PULSEConfig, "steps", -1),
    (PULSEConfig, "lr", -0.4),
    (PULSEConfig, "lr_schedule", "cosine"),
    (PULSEConfig, "weight_l2", -1.0),
    (PULSEConfig, "weight_geocross", math.nan),
    (PULSEConfig, "eps", -1e-3),
    (PULSEConfig, "trainable_noise", -1),
    (PULSEConfig, "trainable_noise", 2.5),
    (PULSEConfig, "seed", "0"),
    (ProjectorConfig, "steps", 0),
    (ProjectorConfig, "lr", -0.1),
    (ProjectorConfig, "rampup", -1),
    (ProjectorConfig, "rampdown", math.nan),
    (ProjectorConfig, "initial_noise_factor", -0.05),
    (ProjectorConfig, "noise_ramp_length", -0.75),
    (ProjectorConfig, "regularize_noise_weight", -1.0),
    (ProjectorConfig, "w_avg_samples", 1),
    (ProjectorConfig, "distance", "ssim"),
    (ProjectorConfig, "lpips_net", "squeeze"),
    (ProjectorConfig, "output", "first"),
    (ProjectorConfig, "seed", 0.5),
    (LassoConfig, "basis", "fourier"),
    (LassoConfig, "alpha", 0),
    (LassoConfig, "alpha", -1.0),
    (LassoConfig, "alpha", math.inf),
    (LassoConfig, "wavelet", 4),
    (LassoConfig, "level", 0),
    (LassoConfig, "max_iter", 0),
    (LassoConfig, "tol", -1e-4),
    (LassoConfig, "max_pixels", 0),
    (LassoConfig, "max_entries", 1.5),
    (LassoConfig, "chunk", 0),
    (DIPConfig, "steps", 0),
    (DIPConfig, "steps", True),
    (DIPConfig, "lr", -0.01),
    (DIPConfig, "layers", 1),
    (DIPConfig, "channels", 0),
    (DIPConfig, "in_size", 4),
    (DIPConfig, "in_size", (4, 4, 4)),
    (DIPConfig, "in_size", (4, 0)),
    (DIPConfig, "input_noise_std", -1.0),
    (DIPConfig, "output", "first"),
    (DIPConfig, "seed", None),
]


def _ids(case):
    cls, name, value = case
    return f"{cls.__name__}-{name}-{value!r}"


@pytest.mark.parametrize("case", BAD, ids=[_ids(c) for c in BAD])
def test_a_bad_setting_is_a_one_line_user_error_naming_it(case):
    cls, name, value = case
    with pytest.raises(UserError) as e:
        cls(**{name: value})
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert msg.startswith(f"{cls.__name__}: {name} = ")
    # the same check through an override of a valid config (dataclasses.replace runs __post_init__)
    with pytest.raises(UserError, match=f"^{cls.__name__}: {name} = "):
        apply_overrides(cls(), {name: value})


def test_every_setting_has_a_bad_value_in_the_table():
    covered = {(cls, name) for cls, name, _ in BAD}
    for cls in CONFIGS:
        for f in dataclasses.fields(cls):
            assert (cls, f.name) in covered, f"no bad value tested for {cls.__name__}.{f.name}"


@pytest.mark.parametrize("cls", CONFIGS)
def test_the_defaults_are_valid(cls):
    cls()


VALID = [
    (ILOConfig, {"lr": 1, "state_lr": 0, "deadzone": 0, "seed": -3}),
    (ILOConfig, {"steps": 0, "stages": ()}),
    (ILOConfig, {"steps": [100, 50], "stages": [1, 2], "radius": [0.2, 0.5]}),
    (ILOConfig, {"steps": (100, 50), "stages": (1, 3), "radius": (0.2, math.inf)}),
    (ILOConfig, {"steps": np.int64(7), "radius": np.float32(0.3), "stages": range(1, 3)}),
    (ILOConfig, {"radius": math.inf}),
    (ILOConfig, {"radius": 0}),
    (ILOConfig, {"noise_floor": None}),
    (ILOConfig, {"noise_floor": "auto"}),
    (ILOConfig, {"noise_floor": 0}),
    (ILOConfig, {"noise_floor": 1e-3}),
    (ILOConfig, {"noise_floor": "1e-3"}),
    (ILOConfig, {"perceptual": lambda ax, y: (ax - y).abs().flatten(1).mean(1), "perceptual_weight": 1}),
    (ILOConfig, {"fidelity": "l1", "optimize_noise": True, "spherical": False}),
    (CSGMConfig, {"lr": 1, "steps": 0, "restarts": 3, "prior_weight": 0.1, "reduction": "sum"}),
    (CSGMConfig, {"lr_schedule": True, "optimize_noise": True, "seed": 2**63, "init": "uniform"}),
    (DeepinvCSGMConfig, {"steps": 1, "lr": 1e-3, "tol": 1e-4, "seed": 5}),
    (PULSEConfig, {"steps": 0, "eps": 0, "trainable_noise": None, "lr_schedule": "fixed"}),
    (PULSEConfig, {"eps": math.inf, "trainable_noise": 0, "weight_l2": 1}),
    (ProjectorConfig, {"steps": 1, "w_avg_samples": 2, "distance": "mse", "lpips_net": "VGG16"}),
    (ProjectorConfig, {"noise_ramp_length": 0, "output": "best", "lpips_net": "alex"}),
    (LassoConfig, {"alpha": 1, "basis": "dct", "level": 2, "tol": 0}),
    (LassoConfig, {"basis": "wavelet", "wavelet": "haar", "level": None}),
    (DIPConfig, {"in_size": [4, 4], "lr": 1, "steps": 1, "layers": 2}),
    (DIPConfig, {"in_size": (2, 3), "input_noise_std": 1 / 30, "output": "best"}),
]


@pytest.mark.parametrize("case", VALID, ids=[f"{c.__name__}-{i}" for i, (c, _) in enumerate(VALID)])
def test_values_valid_today_still_work(case):
    cls, kw = case
    cfg = cls(**kw)
    for k, v in kw.items():
        assert getattr(cfg, k) is v  # stored as given, not converted


def test_unknown_override_names_the_allowed_settings():
    with pytest.raises(UserError) as e:
        apply_overrides(CSGMConfig(), {"restart": 2})
    msg = str(e.value)
    assert len(msg.splitlines()) == 1
    assert "'restart'" in msg and "restarts" in msg and "seed" in msg
    G = ToyGenerator()
    with pytest.raises(UserError, match="restart"):
        CSGM(G, restart=2)
    with pytest.raises(UserError, match="^ILOConfig: lr = -1: give a number >= 0$"):
        ILO(G, lr=-1)


def test_a_setting_changed_after_construction_is_checked_when_the_solver_is_built():
    # the CLI and the demo set fields of a config after making it
    cfg = CSGMConfig()
    cfg.restarts = 0
    with pytest.raises(UserError, match="^CSGMConfig: restarts = 0: give an integer >= 1$"):
        CSGM(ToyGenerator(), cfg)
    cfg = ILOConfig()
    cfg.stages = [2, 1]
    with pytest.raises(UserError, match="^ILOConfig: stages = "):
        ILO(ToyGenerator(), cfg)
    cfg = DIPConfig()
    cfg.steps = 0
    with pytest.raises(UserError, match="^DIPConfig: steps = 0"):
        DeepImagePrior((1, 8, 8), cfg)


def test_non_finite_measurements_are_user_errors():
    G = ToyGenerator()
    y = torch.zeros(1, 1, 8, 8)
    y[0, 0, 2, 3] = math.nan
    import deepinv as dinv

    physics = dinv.physics.Denoising()
    with pytest.raises(UserError, match="NaN"):
        CSGM(G, steps=1)(y, physics)
    with pytest.raises(UserError, match="NaN"):
        Lasso((1, 8, 8))(y, physics)


def test_latent_groups():
    assert latent_groups(ToyGenerator()) == {"wplus": ["w0", "w1", "w2"]}  # the noise map is left out


def test_posterior_samples_mean_and_unbiased_std():
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(5, 2, 1, 4, 4, generator=g, dtype=torch.float64)
    post = PosteriorSamples.from_samples(samples)
    assert post.num_samples == 5
    assert post.mean.shape == post.std.shape == (2, 1, 4, 4)
    torch.testing.assert_close(post.mean, samples.sum(0) / 5)
    var = ((samples - post.mean) ** 2).sum(0) / 4  # unbiased: S - 1
    torch.testing.assert_close(post.std, var.sqrt())
    assert post.samples is samples


def test_posterior_samples_of_one_sample_have_nan_std():
    samples = torch.rand(1, 3, 1, 2, 2)
    post = PosteriorSamples.from_samples(samples)
    assert torch.equal(post.mean, samples[0])
    assert torch.isnan(post.std).all()
    with pytest.raises(ValueError):
        PosteriorSamples.from_samples(torch.zeros(0, 3, 1, 2, 2))
    with pytest.raises(ValueError):
        PosteriorSamples(samples, samples[0], samples[0, :2])


def test_a_scaled_std_map_is_capped_at_half_the_pixel_range_and_keeps_the_raw_one():
    """`holdout`'s factor can be large (12.9 with two samples at super-resolution): the map it
    scales stays within the 0.5 no distribution on [0, 1] exceeds, scales the rest exactly, and
    the spread as the samples drew it stays readable (the bench's `calibration_raw`)."""
    samples = torch.stack([torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 0.2)])
    samples[1, 0, 0, 0, 0] = 1.0  # one pixel with samples 0 and 1: std 0.71
    post = PosteriorSamples.from_samples(samples)
    scaled = post.std_scaled(torch.tensor([10.0, 2.0]))
    assert float(scaled.std.max()) == 0.5  # image 0: 10 x 0.14 and 10 x 0.71, both capped
    torch.testing.assert_close(scaled.std[1], post.std[1] * 2)  # 2 x 0.14: unchanged by the cap
    torch.testing.assert_close(scaled.std_raw, post.std)
    assert scaled.mean is post.mean and scaled.samples is post.samples
