"""StyleGAN2: rosinality checkpoint compatibility, the layered split, the Gaussian fit cache and
safe checkpoint loading."""

from __future__ import annotations

import argparse

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURE_SETUP, FIXTURES

from genprior.errors import UserError
from genprior.generators import stylegan2 as sg
from genprior.generators.checkpoint import safe_load
from genprior.generators.stylegan2 import (
    StyleGAN2Generator,
    StyleGAN2Layered,
    cached_gaussian_fit,
    load_stylegan2,
    upfirdn2d,
)

FIXTURE = FIXTURES
CKPTS = ("stylegan2_tiny_g_ema.pt", "stylegan2_tiny_train_ckpt.pt")
needs_fixture = pytest.mark.skipif(
    not (FIXTURE / "stylegan2_tiny_reference.pt").is_file(),
    reason=f"third-party StyleGAN2 fixture not found at {FIXTURE}: {FIXTURE_SETUP}",
)
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return safe_load(FIXTURE / "stylegan2_tiny_reference.pt")


def _random_generator(size: int, channels: dict[int, int], style_dim: int, n_mlp: int, seed: int, **kw):
    torch.manual_seed(seed)
    g = StyleGAN2Generator(size, style_dim=style_dim, n_mlp=n_mlp, channels=channels, **kw)
    with torch.no_grad():  # move every zero/one-initialised parameter off its initial value
        for name, p in g.named_parameters():
            if name.endswith("bias") or name.endswith("noise.weight"):
                p.add_(0.3 * torch.randn_like(p) / (0.01 if name.startswith("style.") else 1.0))
    return g.eval()


def _layered_inputs(G: StyleGAN2Layered, batch: int, seed: int):
    return G.sample_inputs(batch, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# rosinality fixture
# ---------------------------------------------------------------------------------------------
@needs_fixture
@pytest.mark.parametrize("fname", CKPTS)
def test_fixture_reproduced(fname, ref):
    g, latent_avg = load_stylegan2(FIXTURE / fname)
    assert g.size == ref["size"] == 32 and g.style_dim == ref["style_dim"] and g.n_mlp == ref["n_mlp"]
    assert g.channels == ref["channels"]
    assert g.n_latent == 8 and g.num_layers == 7
    if fname == "stylegan2_tiny_g_ema.pt":
        torch.testing.assert_close(latent_avg, ref["latent_avg"], rtol=0, atol=0)
    else:
        assert latent_avg is None
    z, z2, noises = ref["z"], ref["z2"], ref["noises"]
    with torch.no_grad():
        torch.testing.assert_close(g.get_latent(z), ref["w"], rtol=0, atol=ATOL)
        img, lat = g([z], noise=noises, return_latents=True)
        torch.testing.assert_close(img, ref["img_z"], rtol=0, atol=ATOL)
        torch.testing.assert_close(lat, ref["w_plus_from_z"], rtol=0, atol=ATOL)
        img, lat = g([z], randomize_noise=False)
        assert lat is None
        torch.testing.assert_close(img, ref["img_stored_noise"], rtol=0, atol=ATOL)
        img, _ = g([ref["wplus_in"]], input_is_latent=True, noise=noises)
        torch.testing.assert_close(img, ref["img_wplus"], rtol=0, atol=ATOL)
        img, _ = g([z], truncation=0.7, truncation_latent=ref["latent_avg"], noise=noises)
        torch.testing.assert_close(img, ref["img_trunc_0.7"], rtol=0, atol=ATOL)
        img, _ = g([z, z2], inject_index=3, noise=noises)
        torch.testing.assert_close(img, ref["img_mix_inject3"], rtol=0, atol=ATOL)
        # random noise differs from the stored buffers, but only slightly changes the image
        img_r, _ = g([z])
        assert not torch.equal(img_r, ref["img_stored_noise"])


@needs_fixture
def test_fixture_training_ckpt_prefer_g_and_dict_input():
    ckpt = safe_load(FIXTURE / "stylegan2_tiny_train_ckpt.pt")
    assert isinstance(ckpt["args"], argparse.Namespace)
    g_raw, _ = load_stylegan2(ckpt, prefer="g")
    g_ema, _ = load_stylegan2(ckpt)
    for k, v in ckpt["g"].items():
        torch.testing.assert_close(g_raw.state_dict()[k], v, rtol=0, atol=0)
    for k, v in ckpt["g_ema"].items():
        torch.testing.assert_close(g_ema.state_dict()[k], v, rtol=0, atol=0)
    # a bare generator state dict is accepted too
    g_bare, la = load_stylegan2(ckpt["g_ema"])
    assert la is None and g_bare.config() == g_ema.config()


@needs_fixture
def test_layered_reproduces_fixture_in_w_and_gaussian_space(ref, tmp_path):
    g, latent_avg = load_stylegan2(FIXTURE / CKPTS[0])
    noises = {f"noise{c}": n[0] for c, n in enumerate(ref["noises"])}  # (1, r, r): batch 1, broadcast
    want = (ref["img_z"] + 1) / 2
    Gw = StyleGAN2Layered(g, latent_space="w", latent_avg=latent_avg)
    assert Gw.image_shape == (3, 32, 32) and Gw.num_stages == 7
    assert torch.equal(Gw.latent_avg, ref["latent_avg"])
    wplus = ref["w_plus_from_z"]
    inputs_w = {f"w{i}": wplus[:, i] for i in range(8)} | noises
    with torch.no_grad():
        torch.testing.assert_close(Gw(inputs_w), want, rtol=0, atol=ATOL)
    Gg = StyleGAN2Layered(g, latent_space="gaussian", cache_dir=tmp_path)
    fit = Gg.gaussian_fit
    assert fit["mean"].shape == fit["std"].shape == (32,) and bool((fit["std"] > 0).all())
    # v = (leaky_relu(w, 5) - mean) / std is mapped back to w
    inputs_v = {
        f"w{i}": (F.leaky_relu(wplus[:, i], 5.0) - fit["mean"]) / fit["std"] for i in range(8)
    } | noises
    with torch.no_grad():
        torch.testing.assert_close(Gg.wplus(inputs_v), wplus, rtol=0, atol=1e-5)
        torch.testing.assert_close(Gg(inputs_v), want, rtol=0, atol=ATOL)


@needs_fixture
def test_layered_resume_exact_fixture(tmp_path):
    g, _ = load_stylegan2(FIXTURE / CKPTS[1])
    G = StyleGAN2Layered(g, cache_dir=tmp_path, fit_samples=4096)
    _check_resume(G, batch=2)


# ---------------------------------------------------------------------------------------------
# the layered split on random models with odd channel tables
# ---------------------------------------------------------------------------------------------
def _check_resume(G: StyleGAN2Layered, batch: int) -> None:
    inputs = _layered_inputs(G, batch, seed=1)
    L = G.num_stages
    with torch.no_grad():
        full = G(inputs)
        assert full.shape == (batch, *G.image_shape)
        heads = [G.head(k, inputs) for k in range(L + 1)]
        assert heads[0] == ()
        for k in range(L + 1):
            state = heads[k]
            if k:
                assert len(state) == 2 and all(t.shape[0] == batch for t in state)
            out = G.tail(k, state, inputs)
            assert (out - full).abs().max().item() < 1e-5, k
            assert torch.equal(out, full), k
        # advance: on-range states reach head(k); off-range states give the same tail
        for j in range(1, L + 1):
            for k in range(j, L + 1):
                adv = G.advance(j, k, heads[j], inputs)
                assert all(torch.equal(a, b) for a, b in zip(adv, heads[k])), (j, k)
            off = tuple(t + 0.1 * torch.randn_like(t) for t in heads[j])
            k = min(j + 2, L)
            assert torch.equal(G.tail(k, G.advance(j, k, off, inputs), inputs), G.tail(j, off, inputs))
        # the generator's own forward gives the same image (up to float summation order: it
        # reads strided rows of one W+ tensor)
        img, _ = G.net([G.wplus(inputs)], input_is_latent=True, noise=[inputs[f"noise{c}"] for c in range(L)])
        torch.testing.assert_close((img + 1) / 2, full, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "size,channels,style_dim,n_mlp,kw",
    [
        (8, {4: 5, 8: 7}, 6, 2, {"blur_kernel": (1, 2, 1), "img_channels": 1}),
        (64, {4: 9, 8: 7, 16: 5, 32: 6, 64: 3}, 10, 4, {}),
    ],
)
def test_random_models_resume_and_roundtrip(size, channels, style_dim, n_mlp, kw, tmp_path):
    g = _random_generator(size, channels, style_dim, n_mlp, seed=size, **kw)
    g2 = StyleGAN2Generator.from_state_dict(g.state_dict())
    assert g2.config() == g.config()
    assert g2.channels == channels and g2.size == size and g2.n_mlp == n_mlp and g2.style_dim == style_dim
    z = torch.randn(2, style_dim)
    with torch.no_grad():
        a, _ = g([z], randomize_noise=False)
        b, _ = g2([z], randomize_noise=False)
    assert a.shape == (2, g.img_channels, size, size) and torch.equal(a, b)
    G = StyleGAN2Layered(g2, cache_dir=tmp_path, fit_samples=2048)
    assert G.num_stages == 1 + 2 * (int(size).bit_length() - 3)
    _check_resume(G, batch=2)
    Gw = StyleGAN2Layered(g2, latent_space="w")
    _check_resume(Gw, batch=1)


def test_lr_mlp_read_from_checkpoint_metadata():
    g = _random_generator(8, {4: 4, 8: 4}, 5, 2, seed=9, lr_mlp=0.1)
    z = torch.randn(2, 5)
    for ckpt in (
        {"g_ema": g.state_dict(), "config": {"lr_mlp": 0.1}},
        {"g_ema": g.state_dict(), "args": argparse.Namespace(lr_mlp=0.1)},
    ):
        g2, _ = load_stylegan2(ckpt)
        assert g2.lr_mlp == 0.1 and torch.equal(g2.get_latent(z), g.get_latent(z))
    g3, _ = load_stylegan2({"g_ema": g.state_dict()})
    assert g3.lr_mlp == 0.01


def test_tail_inputs_are_exactly_what_the_tail_reads(tmp_path):
    g = _random_generator(16, {4: 4, 8: 5, 16: 3}, 6, 2, seed=3)
    G = StyleGAN2Layered(g, cache_dir=tmp_path, fit_samples=1024)
    names = [s.name for s in G.input_specs]
    assert names == [f"w{i}" for i in range(6)] + [f"noise{c}" for c in range(5)]
    assert G.spec("noise3").shape == (1, 16, 16) and G.spec("w2").group == "wplus"
    assert G.tail_inputs(0) == tuple(names)
    assert G.tail_inputs(5) == ()
    base = _layered_inputs(G, 2, seed=0)
    for k in range(G.num_stages + 1):
        with torch.no_grad():
            state = G.head(k, base)
        state = tuple(t.clone().requires_grad_(True) for t in state)
        inputs = {n: t.clone().requires_grad_(True) for n, t in base.items()}
        G.tail(k, state, inputs).square().sum().backward()
        read = {n for n, t in inputs.items() if t.grad is not None and t.grad.abs().sum() > 0}
        assert read == set(G.tail_inputs(k)), k


def test_sample_inputs_and_w_space():
    g = _random_generator(8, {4: 4, 8: 4}, 5, 2, seed=4)
    Gw = StyleGAN2Layered(g, latent_space="w")
    x = Gw.sample_inputs(3, generator=torch.Generator().manual_seed(0))
    assert set(x) == {s.name for s in Gw.input_specs}
    assert x["w0"].shape == (3, 5) and x["noise2"].shape == (3, 1, 8, 8)
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        w = g.style(z)
    assert all(torch.equal(x[f"w{i}"], w) for i in range(Gw.n_latent))
    assert not any(p.requires_grad for p in Gw.parameters())
    assert g.mean_latent(100).shape == (1, 5)
    assert [n.shape[-1] for n in g.make_noise()] == [4, 8, 8]
    with pytest.raises(UserError, match="latent space"):
        StyleGAN2Layered(g, latent_space="z")
    with pytest.raises(UserError, match="stage"):
        Gw.head(Gw.num_stages + 1, x)


def test_native_inputs_are_the_generators_own_samples():
    """``sample_native_inputs`` (what SGILO's score models train on) gives the generator's own
    samples in both latent spaces: one ``w = style(z)`` in every W+ row, so the Gaussianised
    space gives the same image as the W space; ``sample_inputs`` in the Gaussianised space draws
    the rows independently (a wider prior) and the tail's rows are not independent of the state."""
    g = _random_generator(8, {4: 4, 8: 4}, 5, 2, seed=4)
    fit = {"mean": torch.linspace(-1, 1, 5), "std": torch.full((5,), 2.0)}
    Gw, Gg = StyleGAN2Layered(g, latent_space="w"), StyleGAN2Layered(g, gaussian_fit=fit)
    xw = Gw.sample_native_inputs(3, generator=torch.Generator().manual_seed(1))
    xg = Gg.sample_native_inputs(3, generator=torch.Generator().manual_seed(1))
    assert all(torch.allclose(Gg.to_w(xg[f"w{i}"]), xw["w0"], atol=1e-5) for i in range(Gg.n_latent))
    with torch.no_grad():
        assert torch.allclose(Gg(xg), Gw(xw), atol=1e-5)
    wide = Gg.sample_inputs(3, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(wide["w0"], wide["w1"])
    assert Gg.independent_tail_latents(1) == () and Gg.shared_tail_latents(1) == ("w1", "w2", "w3")


def test_upfirdn2d_matches_direct_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 5)
    k = torch.rand(4, 3)  # asymmetric, non-square: the kernel must be flipped (true convolution)
    y = upfirdn2d(x, k, up=2, down=1, pad=(2, -1))
    # direct: zero-insert, pad/crop, correlate with the flipped kernel
    u = torch.zeros(2, 3, 10, 10)
    u[:, :, ::2, ::2] = x
    u = F.pad(u, [2, 0, 2, 0])[:, :, :-1, :-1]
    want = torch.zeros(2, 3, u.shape[2] - 3, u.shape[3] - 2)
    kf = torch.flip(k, [0, 1])
    for i in range(want.shape[2]):
        for j in range(want.shape[3]):
            want[:, :, i, j] = (u[:, :, i : i + 4, j : j + 3] * kf).sum((-1, -2))
    torch.testing.assert_close(y, want)
    assert upfirdn2d(x, k, down=2, pad=(1, 1)).shape == (2, 3, 2, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(tmp_path):
    g = _random_generator(32, {4: 8, 8: 8, 16: 6, 32: 4}, 8, 2, seed=5)
    G = StyleGAN2Layered(g, cache_dir=tmp_path, fit_samples=1024)
    x = _layered_inputs(G, 2, seed=0)
    with torch.no_grad():
        cpu = G(x)
        G.cuda()
        gpu = G({k: v.cuda() for k, v in x.items()}).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# the Gaussian fit and its cache
# ---------------------------------------------------------------------------------------------
def test_gaussian_fit_cached_and_reused(tmp_path, monkeypatch):
    g = _random_generator(8, {4: 4, 8: 4}, 6, 3, seed=6)
    calls = []
    real_fit = sg.fit_gaussian

    def counting_fit(*a, **kw):
        calls.append(1)
        return real_fit(*a, **kw)

    monkeypatch.setattr(sg, "fit_gaussian", counting_fit)
    monkeypatch.setenv("GENPRIOR_CACHE", str(tmp_path / "envcache"))
    G1 = StyleGAN2Layered(g, fit_samples=3000)
    files = list((tmp_path / "envcache" / "gaussian_fit").iterdir())
    assert len(calls) == 1 and len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    G2 = StyleGAN2Layered(g, fit_samples=3000)
    assert len(calls) == 1 and files[0].stat().st_mtime_ns == mtime
    assert torch.equal(G1.gauss_mean, G2.gauss_mean) and torch.equal(G1.gauss_std, G2.gauss_std)
    # the fit is what fit_gaussian computes (seeded), and matches a direct estimate
    direct = real_fit(g, n=3000, seed=0)
    assert torch.equal(direct["mean"], G1.gauss_mean) and torch.equal(direct["std"], G1.gauss_std)
    z = torch.randn(3000, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = F.leaky_relu(g.style(z), 5.0)
    torch.testing.assert_close(G1.gauss_mean, x.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(G1.gauss_std, x.std(0), rtol=1e-4, atol=1e-5)
    # another cache_dir or other weights: computed again
    StyleGAN2Layered(g, fit_samples=3000, cache_dir=tmp_path / "other")
    assert len(calls) == 2
    with torch.no_grad():
        g.style[1].bias.add_(1.0)
    StyleGAN2Layered(g, fit_samples=3000)
    assert len(calls) == 3 and len(list((tmp_path / "envcache" / "gaussian_fit").iterdir())) == 2
    # a corrupt cache entry is recomputed, not an error
    files[0].write_bytes(b"garbage")
    with torch.no_grad():
        g.style[1].bias.sub_(1.0)
    fit = cached_gaussian_fit(g, n=3000, cache_dir=tmp_path / "envcache")
    assert len(calls) == 4 and torch.equal(fit["mean"], direct["mean"])


def test_precomputed_gaussian_fit_is_used(monkeypatch):
    g = _random_generator(8, {4: 4, 8: 4}, 6, 2, seed=7)

    def no_fit(*a, **kw):
        raise AssertionError("fit_gaussian must not run when a fit is given")

    monkeypatch.setattr(sg, "fit_gaussian", no_fit)
    fit = {"mean": torch.linspace(-1, 1, 6), "std": torch.full((6,), 2.0)}
    G = StyleGAN2Layered(g, gaussian_fit=fit)
    v = torch.randn(2, 6)
    torch.testing.assert_close(G.to_w(v), F.leaky_relu(v * 2.0 + fit["mean"], 0.2))
    with pytest.raises(UserError, match="dimensions"):
        StyleGAN2Layered(g, gaussian_fit={"mean": torch.zeros(5), "std": torch.ones(5)})


# ---------------------------------------------------------------------------------------------
# safe loading and bad checkpoints
# ---------------------------------------------------------------------------------------------
class _Evil:
    def __init__(self) -> None:
        self.x = 1


def test_safe_load_rejects_unlisted_globals(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "obj": _Evil()}, p)
    with pytest.raises(UserError, match="evil.pt") as e:
        safe_load(p)
    assert "_Evil" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(UserError):
        load_stylegan2(p)
    # argparse.Namespace is allowed
    q = tmp_path / "ns.pt"
    torch.save({"args": argparse.Namespace(size=8), "t": torch.ones(2)}, q)
    assert safe_load(q)["args"].size == 8


def test_safe_load_missing_and_not_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        safe_load(tmp_path / "nope.pt")
    bad = tmp_path / "notes.pt"
    bad.write_text("hello, not a pickle\n")
    with pytest.raises(UserError, match="notes.pt") as e:
        safe_load(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="not a file"):
        safe_load(tmp_path)


def test_bad_layouts(tmp_path):
    p = tmp_path / "odd.pt"
    torch.save({"model": {"a": torch.zeros(1)}, "step": 3}, p)
    with pytest.raises(UserError, match="unknown checkpoint layout"):
        load_stylegan2(p)
    with pytest.raises(UserError, match="unknown checkpoint layout"):
        load_stylegan2({"weights": torch.zeros(2)})
    q = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], q)
    with pytest.raises(UserError, match="unknown checkpoint layout"):
        load_stylegan2(q)
    with pytest.raises(UserError, match="not a StyleGAN2 generator"):
        load_stylegan2({"g_ema": {"main.0.weight": torch.zeros(1)}})
    sd = _random_generator(8, {4: 4, 8: 4}, 5, 2, seed=8).state_dict()
    sd.pop("convs.1.noise.weight")
    with pytest.raises(UserError, match="does not match the StyleGAN2 layout"):
        load_stylegan2({"g_ema": sd})
    sd = _random_generator(8, {4: 4, 8: 4}, 5, 2, seed=8).state_dict()
    with pytest.raises(UserError, match="latent_avg"):
        load_stylegan2({"g_ema": sd, "latent_avg": torch.zeros(3)})
    with pytest.raises(ValueError):
        load_stylegan2({"g_ema": sd}, prefer="d")
