"""The MNIST VAE: layered decoder, training (seeded, resumable bit for bit), the bundled weights,
and the ``genprior train`` command."""

from __future__ import annotations

import argparse
import sys
import types

import pytest
import torch

from genprior import zoo
from genprior.cli import main
from genprior.cli import train as cli_train
from genprior.data import heldout
from genprior.errors import UserError
from genprior.generators.vae import MNISTVAE, VAELayered, load_vae, vae_checkpoint
from genprior.training.vae import VAETrainConfig, export_weights, train_vae

BUNDLED = zoo.ASSETS_MODELS / "mnist-vae-20.pt"


@pytest.fixture(scope="module")
def layered() -> VAELayered:
    torch.manual_seed(0)
    return VAELayered(MNISTVAE().decoder)


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return heldout("mnist", n=200)[0]


# ---- the layered decoder ------------------------------------------------------------------------
def test_interface(layered):
    assert layered.num_stages == 2
    assert layered.input_specs[0].name == "z" and layered.input_specs[0].shape == (20,)
    assert layered.image_shape == (1, 28, 28)
    assert layered.tail_inputs(0) == ("z",) and layered.tail_inputs(1) == () and layered.tail_inputs(2) == ()
    with pytest.raises(ValueError):
        layered.tail(3, (), {})


@pytest.mark.parametrize("k", range(3))
def test_exact_resume_at_every_stage(layered, k):
    inputs = layered.sample_inputs(5, generator=torch.Generator().manual_seed(k))
    with torch.no_grad():
        full = layered(inputs)
        state = layered.head(k, inputs)
        assert torch.equal(layered.tail(k, state, inputs), full)
    assert full.shape == (5, 1, 28, 28) and 0 <= full.min() and full.max() <= 1
    if k:
        assert state[0].shape == (5, 500) and (state[0] > 0).all()  # softplus activations
    else:
        assert state == ()


def test_checkpoint_round_trip(tmp_path):
    model = MNISTVAE()
    ck = vae_checkpoint(model)
    assert all(isinstance(v, (int, str)) for v in ck["config"].values())
    torch.save(ck, tmp_path / "v.pt")
    gen = load_vae(tmp_path / "v.pt")
    assert torch.equal(gen.decoder.fc3.weight, model.decoder.fc3.weight)
    with pytest.raises(UserError):
        load_vae(tmp_path / "missing.pt")
    with pytest.raises(UserError):
        load_vae({"format": "something-else"})


# ---- training -----------------------------------------------------------------------------------
def _params(ck):
    return ck["state_dict"]


def test_training_resumes_bit_for_bit(tmp_path, digits):
    cfg = VAETrainConfig(epochs=2, batch_size=50, seed=7)  # 4 steps per epoch
    straight = train_vae(tmp_path / "a.pt", cfg, images=digits, max_steps=6, progress=False)
    first = train_vae(tmp_path / "b.pt", cfg, images=digits, max_steps=3, progress=False)
    assert first["train"]["step"] == 3
    resumed = train_vae(tmp_path / "b.pt", cfg, images=digits, max_steps=6, progress=False, resume=True)
    assert straight["train"]["step"] == resumed["train"]["step"] == 6
    for k, v in _params(straight).items():
        assert torch.equal(v, _params(resumed)[k]), k
    assert straight["train"]["history"] == resumed["train"]["history"]
    assert torch.equal(straight["train"]["noise_rng"], resumed["train"]["noise_rng"])
    # the parameters did move, and the file on disk is the returned checkpoint
    assert not torch.equal(_params(first)["decoder.fc3.weight"], _params(resumed)["decoder.fc3.weight"])
    on_disk = torch.load(tmp_path / "b.pt", weights_only=True)
    assert torch.equal(on_disk["state_dict"]["decoder.fc1.weight"], _params(resumed)["decoder.fc1.weight"])
    # a different seed gives a different run
    other = train_vae(
        tmp_path / "c.pt",
        VAETrainConfig(epochs=2, batch_size=50, seed=8),
        images=digits,
        max_steps=6,
        progress=False,
    )
    assert not torch.equal(_params(other)["decoder.fc1.weight"], _params(straight)["decoder.fc1.weight"])


def test_training_lowers_the_loss_and_exports(tmp_path, digits):
    ck = train_vae(tmp_path / "t.pt", VAETrainConfig(epochs=3, batch_size=50), images=digits, progress=False)
    losses = [h["loss"] for h in ck["train"]["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    slim = export_weights(tmp_path / "t.pt", tmp_path / "w.pt")
    assert "train" not in slim and slim["training"]["epochs"] == 3
    gen = load_vae(tmp_path / "w.pt")
    assert gen.sample(2, seed=0).shape == (2, 1, 28, 28)


def test_training_refuses_to_overwrite_or_resume_nothing(tmp_path, digits):
    cfg = VAETrainConfig(epochs=1, batch_size=100)
    with pytest.raises(UserError, match="--resume"):
        train_vae(tmp_path / "none.pt", cfg, images=digits, resume=True, progress=False)
    (tmp_path / "exists.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="--resume"):
        train_vae(tmp_path / "exists.pt", cfg, images=digits, progress=False)
    with pytest.raises(UserError):
        train_vae(tmp_path / "exists.pt", cfg, images=digits, resume=True, progress=False)


# ---- the bundled model --------------------------------------------------------------------------
@pytest.mark.skipif(not BUNDLED.is_file(), reason="mnist-vae-20.pt not bundled")
def test_bundled_vae_generates_digits(digits):
    ck = torch.load(BUNDLED, map_location="cpu", weights_only=True)
    assert all(isinstance(v, (int, str)) for v in ck["config"].values())
    assert "train" not in ck  # no optimiser state shipped
    gen = zoo.load_generator("mnist-vae-20")
    assert isinstance(gen, VAELayered)
    x = gen.sample(64, seed=0)
    assert x.shape == (64, 1, 28, 28) and 0 <= x.min() and x.max() <= 1
    mean = x.mean().item()
    assert 0.05 < mean < 0.30  # MNIST digits: ~13% ink
    assert (x[:, :, :3, :] < 0.05).float().mean() > 0.95  # empty borders
    assert x.std(0).mean() > 0.1  # different samples differ
    assert (x > 0.5).float().flatten(1).sum(1).min() > 10  # every sample draws some strokes
    # it reconstructs held-out digits it never saw better than it reconstructs noise
    model = MNISTVAE()
    model.load_state_dict(ck["state_dict"])
    with torch.no_grad():
        mean_z, _ = model.encoder(digits.flatten(1))
        rec = torch.sigmoid(model.decoder(mean_z)).view_as(digits)
    assert (rec - digits).abs().mean() < 0.08


# ---- CLI ----------------------------------------------------------------------------------------
def test_cli_train_vae_rejects_bad_options(capsys):
    assert main(["train", "vae", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_cli_train_stylegan2_absent_is_a_user_error(monkeypatch, capsys):
    monkeypatch.setattr(cli_train, "_stylegan2_module", lambda: None)
    assert main(["train", "stylegan2", "--iters", "3"]) == 2
    err = capsys.readouterr().err
    assert "genprior.training.stylegan2" in err and err.count("\n") == 1


def test_cli_train_stylegan2_delegates(monkeypatch):
    seen = {}
    fake = types.ModuleType("genprior.training.stylegan2")

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--iters", type=int, default=1)
        parser.add_argument("--out")

    def run(args: argparse.Namespace) -> int:
        seen["args"] = args
        return 0

    fake.add_arguments, fake.run = add_arguments, run
    monkeypatch.setitem(sys.modules, "genprior.training.stylegan2", fake)
    assert main(["train", "stylegan2", "--iters", "5", "--out", "x.pt"]) == 0
    assert seen["args"].iters == 5 and seen["args"].out == "x.pt"
