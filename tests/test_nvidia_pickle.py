"""NVIDIA network pickles: NVIDIA's own outputs reproduced, nothing from the file ever run, the
unsupported generators refused with one line."""

from __future__ import annotations

import io
import pickle

import pytest
import torch
from conftest import FIXTURE_SETUP, SHARED_FIXTURES

from genprior.cli import main
from genprior.errors import UserError
from genprior.generators.checkpoint import safe_load
from genprior.generators.nvidia import (
    convert_network_pickle,
    is_network_pickle,
    read_legacy_storage,
    read_network_pickle,
)
from genprior.generators.stylegan2 import StyleGAN2Layered, load_stylegan2

NV = SHARED_FIXTURES / "stylegan2-ada-nvidia"
PKL = NV / "stylegan2ada_tiny_network.pkl"
pytestmark = pytest.mark.skipif(
    not PKL.is_file(), reason=f"NVIDIA fixture not found at {NV}: {FIXTURE_SETUP}"
)
ATOL = 1e-4


@pytest.fixture(scope="module")
def ref():
    return safe_load(NV / "stylegan2ada_tiny_reference.pt")


@pytest.fixture(scope="module")
def gen():
    return load_stylegan2(PKL)


def _zero_noise(g):
    return [torch.zeros(1, 1, g.noise_resolution(c), g.noise_resolution(c)) for c in range(g.num_layers)]


def test_mapping_and_w_avg_match_nvidia(gen, ref):
    g, w_avg = gen
    assert (g.size, g.style_dim, g.n_mlp, g.n_latent) == (32, 32, 2, ref["num_ws"])
    assert g.channels == {4: 64, 8: 64, 16: 64, 32: 32} and g.conv_clamp == 256.0
    with torch.no_grad():
        torch.testing.assert_close(g.get_latent(ref["z"]), ref["ws"][:, 0], atol=ATOL, rtol=0)
    torch.testing.assert_close(w_avg, ref["w_avg"], atol=0, rtol=0)


@pytest.mark.parametrize(
    "key, ws_key, noise",
    [
        ("img_const", "ws", "stored"),
        ("img_none", "ws", "none"),
        ("img_trunc_0_7", "ws_trunc", "stored"),
        ("img_mix_inject3", "ws_mix_inject3", "stored"),
    ],
)
def test_synthesis_reproduces_every_reference_image(gen, ref, key, ws_key, noise):
    g, _ = gen
    kw = {"randomize_noise": False} if noise == "stored" else {"noise": _zero_noise(g)}
    with torch.no_grad():
        img, _ = g([ref[ws_key]], input_is_latent=True, **kw)
    torch.testing.assert_close(img, ref[key], atol=ATOL, rtol=0)


def test_generator_forward_truncation_and_mixing_from_z(gen, ref):
    g, w_avg = gen
    with torch.no_grad():
        full, _ = g([ref["z"]], randomize_noise=False)
        trunc, _ = g([ref["z"]], truncation=0.7, truncation_latent=w_avg, randomize_noise=False)
        mix, _ = g([ref["z"], ref["z2"]], inject_index=3, randomize_noise=False)
    torch.testing.assert_close(full, ref["img_G_forward"], atol=ATOL, rtol=0)
    torch.testing.assert_close(trunc, ref["img_trunc_0_7"], atol=ATOL, rtol=0)
    torch.testing.assert_close(mix, ref["img_mix_inject3"], atol=ATOL, rtol=0)


def test_conv_clamp_limits_each_layer_as_nvidia_does(ref):
    """NVIDIA clamps every layer's output to +-conv_clamp after the activation's gain (the RGB
    layers after their bias). The fixture stays inside +-256, so push one layer outside it."""
    ckpt = convert_network_pickle(PKL)
    ckpt["g_ema"]["conv1.activate.bias"] = ckpt["g_ema"]["conv1.activate.bias"] + 1000.0
    g, _ = load_stylegan2(ckpt)
    ckpt["config"] = {**ckpt["config"], "conv_clamp": None}
    free, _ = load_stylegan2(ckpt)
    w = ref["ws"][:, 0]
    with torch.no_grad():
        x = g.input(3)
        clamped = g.conv1(x, w, noise=g.noise_buffer(0))
        unclamped = free.conv1(x, w, noise=free.noise_buffer(0))
        rgb, rgb_free = g.to_rgb1(clamped, w), free.to_rgb1(clamped, w)
    assert unclamped.max() > 1000 and clamped.abs().max() == 256.0
    torch.testing.assert_close(clamped, unclamped.clamp(-256, 256))
    torch.testing.assert_close(rgb, rgb_free.clamp(-256, 256))


def test_load_generator_and_convert_cli_round_trip(tmp_path, ref, capsys):
    from genprior.zoo import load_generator

    G = load_generator(PKL)
    assert isinstance(G, StyleGAN2Layered) and G.image_shape == (3, 32, 32)
    torch.testing.assert_close(G.latent_avg, ref["w_avg"])
    out = tmp_path / "ffhq.pt"
    assert main(["convert", str(PKL), str(out)]) == 0
    assert "32x32 StyleGAN2" in capsys.readouterr().out
    ckpt = torch.load(out, weights_only=True)  # a plain rosinality checkpoint
    assert set(ckpt) >= {"g_ema", "latent_avg", "config"} and ckpt["config"]["conv_clamp"] == 256.0
    g, _ = load_stylegan2(out)
    with torch.no_grad():
        img, _ = g([ref["ws"]], input_is_latent=True, randomize_noise=False)
    torch.testing.assert_close(img, ref["img_const"], atol=ATOL, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["ffhq.pt"]  # nothing half-written beside it


def test_malicious_pickle_is_refused_and_its_command_never_runs(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("GENPRIOR_PWNED_MARKER", str(marker))
    bad = NV / "malicious_network.pkl"
    with pytest.raises(UserError, match=r"global posix\.system is not allowed"):
        read_network_pickle(bad)
    assert main(["convert", str(bad), str(tmp_path / "out.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "posix.system" in err
    assert not marker.exists() and not (tmp_path / "out.pt").exists()


@pytest.mark.parametrize(
    "fname, needle",
    [
        ("refuse_stylegan3_network.pkl", "StyleGAN3"),
        ("refuse_resnet_network.pkl", "'resnet' architecture"),
        ("refuse_conditional_network.pkl", "conditional generator (c_dim=10)"),
    ],
)
def test_unsupported_generators_are_refused_with_one_line(tmp_path, capsys, fname, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        convert_network_pickle(NV / fname)
    assert main(["convert", str(NV / fname), str(tmp_path / "o.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and not (tmp_path / "o.pt").exists()


def _pickle_with_global(module: str, name: str) -> bytes:
    """A protocol-3 pickle ``{"G_ema": module.name("x")}`` written opcode by opcode."""
    return (
        b"\x80\x03}q\x00X\x05\x00\x00\x00G_emaq\x01c"
        + f"{module}\n{name}\n".encode()
        + b"X\x01\x00\x00\x00x\x85R"
        + b"s."
    )


@pytest.mark.parametrize(
    "module, name",
    [
        ("builtins", "eval"),
        ("os", "system"),
        ("torch", "load"),
        ("torch.storage", "_load_from_bytes_v2"),
        ("subprocess", "Popen"),
    ],
)
def test_any_other_global_is_refused_by_name(tmp_path, module, name):
    p = tmp_path / "bad.pkl"
    p.write_bytes(_pickle_with_global(module, name))
    with pytest.raises(UserError, match=rf"global {module}\.{name} is not allowed"):
        read_network_pickle(p)


def test_storage_bytes_are_read_without_torch_load(monkeypatch):
    """The storage streams are parsed here: torch.load is never called while reading the pickle."""

    def no_load(*a, **k):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", no_load)
    top = read_network_pickle(PKL)
    w = top["G_ema"].child("mapping").child("fc0").tensor("weight")
    assert w.shape == (32, 32) and w.dtype == torch.float32


def test_legacy_storage_stream_round_trip_and_refusals():
    t = torch.arange(7, dtype=torch.float64)
    data = t.untyped_storage().__reduce__()[1][0]  # what an untyped storage pickles to
    flat = read_legacy_storage(data)
    assert flat.dtype == torch.uint8 and flat.numel() == 7 * 8
    assert torch.equal(flat.view(torch.float64), t)
    typed = torch.arange(5, dtype=torch.float32)._typed_storage().__reduce__()[1][0]
    assert torch.equal(read_legacy_storage(typed), torch.arange(5, dtype=torch.float32))
    with pytest.raises(pickle.UnpicklingError, match="truncated"):
        read_legacy_storage(typed[:-3])
    buf = io.BytesIO()
    pickle.dump(123, buf)
    with pytest.raises(pickle.UnpicklingError, match="not a legacy torch.save"):
        read_legacy_storage(buf.getvalue() * 3)


def test_network_pickles_are_told_from_torch_checkpoints(tmp_path, tiny_stylegan2_path):
    assert is_network_pickle(PKL) and not is_network_pickle(tiny_stylegan2_path)
    as_pkl = tmp_path / "rosinality.pkl"  # a torch.save archive under a .pkl name
    as_pkl.write_bytes(tiny_stylegan2_path.read_bytes())
    assert not is_network_pickle(as_pkl) and load_stylegan2(as_pkl)[0].size == 32
    renamed = tmp_path / "ffhq.bin"
    renamed.write_bytes(PKL.read_bytes())
    assert is_network_pickle(renamed)
    torch.testing.assert_close(load_stylegan2(renamed)[1], load_stylegan2(PKL)[1])


def test_solve_takes_the_pickle_directly(tmp_path):
    import json

    import numpy as np
    from PIL import Image

    from genprior.zoo import load_generator

    img = load_generator(PKL).sample(1, seed=1).clamp(0, 1)[0]
    png = tmp_path / "x.png"
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(png)
    argv = [
        "solve",
        "--model",
        str(PKL),
        "--input",
        str(png),
        "--out",
        str(tmp_path / "r.png"),
        "--json",
        str(tmp_path / "r.json"),
        "--quiet",
        "--task",
        "inpaint",
        "--mask-ratio",
        "0.5",
        "--steps",
        "3,2",
        "--stages",
        "1",
    ]
    assert main(argv) == 0
    assert json.loads((tmp_path / "r.json").read_text())["psnr"] > 5


def test_numpy_scalars_are_read_as_numbers_and_object_dtypes_refused(tmp_path):
    import numpy as np

    p = tmp_path / "scalars.pkl"
    p.write_bytes(pickle.dumps({"a": np.float64(0.25), "b": np.int16(-3), "c": np.dtype(">f4")}, protocol=3))
    top = read_network_pickle(p)
    assert (top["a"], top["b"]) == (0.25, -3) and type(top["a"]) is float
    p.write_bytes(pickle.dumps({"a": np.dtype(object)}, protocol=3))
    with pytest.raises(UserError, match="not numeric"):
        read_network_pickle(p)
