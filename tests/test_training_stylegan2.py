"""StyleGAN2 training (tiny config): bit-for-bit resume, export, and the bundled Fashion-MNIST model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genprior.errors import UserError
from genprior.generators.stylegan2 import StyleGAN2Layered, load_stylegan2
from genprior.generators.stylegan2_disc import StyleGAN2Discriminator
from genprior.training.stylegan2 import SG2TrainConfig, export_model, load_checkpoint, train_stylegan2

BUNDLED = (
    Path(__file__).resolve().parents[1] / "src" / "genprior" / "assets" / "models" / "fmnist-stylegan2-32.pt"
)


def tiny_config(steps: int) -> SG2TrainConfig:
    return SG2TrainConfig(
        steps=steps, batch=4, seed=3, size=8, style_dim=8, n_mlp=2,
        g_channels="4:8,8:8", d_channels="4:8,8:8", r1_gamma=1.0, d_reg_every=2,
        ckpt_every=0, keep_every=0, sample_every=0, log_every=1,
    )  # fmt: skip


def tiny_images() -> torch.Tensor:
    # 10 images, batch 4: 2 batches per epoch, so 4 steps cross two epoch boundaries
    return torch.randint(
        0, 256, (10, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.int64
    ).to(torch.uint8)


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], torch.Tensor):
            assert torch.equal(a[k], b[k]), k
        elif isinstance(a[k], dict):
            _same_state(a[k], b[k])
        elif isinstance(a[k], (list, tuple)):
            assert len(a[k]) == len(b[k])
            for x, y in zip(a[k], b[k]):
                _same_state({"_": x}, {"_": y})
        else:
            assert a[k] == b[k], k


def test_resume_is_bit_for_bit(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    images = tiny_images()
    straight = train_stylegan2(tmp_path / "a", tiny_config(4), images=images, progress=False)
    train_stylegan2(tmp_path / "b", tiny_config(2), images=images, progress=False)
    ck2 = load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert ck2["step"] == 2 and set(ck2["args"]) >= {"batch", "seed", "r1_gamma"}
    resumed = train_stylegan2(tmp_path / "b", tiny_config(4), images=images, progress=False, resume=True)
    assert straight["step"] == resumed["step"] == 4
    for key in ("g", "d", "g_ema", "g_optim", "d_optim"):
        _same_state(straight[key], resumed[key])
    _same_state(straight["rng"], resumed["rng"])
    # training moved the weights and kept them finite
    fresh = train_stylegan2(tmp_path / "c", tiny_config(0), images=images, progress=False)
    assert not torch.equal(fresh["g"]["conv1.conv.weight"], straight["g"]["conv1.conv.weight"])
    assert all(torch.isfinite(v).all() for v in straight["g"].values())
    # the on-disk checkpoint is the rosinality layout and loads weights_only
    on_disk = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)
    assert {"g", "d", "g_ema", "g_optim", "d_optim", "args", "step"} <= set(on_disk)
    _same_state(on_disk["g_ema"], straight["g_ema"])


def test_fresh_run_refuses_existing_and_resume_needs_checkpoint(tmp_path: Path) -> None:
    images = tiny_images()
    with pytest.raises(UserError, match="does not exist"):
        train_stylegan2(tmp_path / "x", tiny_config(1), images=images, progress=False, resume=True)
    train_stylegan2(tmp_path / "x", tiny_config(1), images=images, progress=False)
    with pytest.raises(UserError, match="already exists"):
        train_stylegan2(tmp_path / "x", tiny_config(1), images=images, progress=False)


def test_export_loads_through_stylegan2_module(tmp_path: Path) -> None:
    ck = train_stylegan2(tmp_path / "r", tiny_config(1), images=tiny_images(), progress=False)
    blob = export_model(ck, tmp_path / "m.pt", n_fit=500)
    assert set(blob) == {"g_ema", "latent_avg", "gaussian_fit", "config"}
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    gen, latent_avg = load_stylegan2(tmp_path / "m.pt")
    assert gen.img_channels == 1 and gen.size == 8 and latent_avg.shape == (8,)
    lay = StyleGAN2Layered(gen, gaussian_fit=saved["gaussian_fit"])
    assert lay.sample(2, seed=0).shape == (2, 1, 8, 8)


def test_discriminator_shapes() -> None:
    d = StyleGAN2Discriminator(size=16, channels={4: 8, 8: 8, 16: 4}, img_channels=1)
    assert d(torch.randn(6, 1, 16, 16)).shape == (6, 1)  # 6 is not a multiple of the group 4


@pytest.mark.skipif(not BUNDLED.is_file(), reason="bundled fmnist-stylegan2-32.pt not exported yet")
def test_bundled_fmnist_stylegan2() -> None:
    blob = torch.load(BUNDLED, weights_only=True)
    assert set(blob) >= {"g_ema", "latent_avg", "gaussian_fit", "config"}
    assert BUNDLED.stat().st_size < 20e6
    gen, latent_avg = load_stylegan2(BUNDLED)
    assert latent_avg is not None and latent_avg.shape == (gen.style_dim,)
    g = StyleGAN2Layered(gen, gaussian_fit=blob["gaussian_fit"])
    assert g.image_shape == (1, 32, 32)
    x = g.sample(16, seed=0)
    assert x.shape == (16, 1, 32, 32)
    assert torch.isfinite(x).all()
    assert -1.0 < float(x.min()) and float(x.max()) < 2.0  # about [0, 1] (not clamped)
    # the generator's own samples overshoot white a little (seed 0: 97.6 % of pixels inside)
    assert float(((x > -0.1) & (x < 1.1)).float().mean()) > 0.97
    assert float(x.std()) > 0.1  # not constant
    assert float((x - x.mean(0)).abs().mean()) > 0.03  # samples differ from each other
    # Fashion-MNIST images are zero-padded: the 2-px border is (almost) black
    border = torch.cat([x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1)], 1)
    assert float(border.clamp(0, 1).mean()) < 0.15
