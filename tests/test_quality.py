"""genprior.quality: Fréchet distance (closed forms), nearest-neighbour distances, the bundled classifiers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genprior import quality as Q


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_diagonal_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = (
        torch.randn(7, generator=g, dtype=torch.float64),
        torch.randn(7, generator=g, dtype=torch.float64),
    )
    a, b = (
        torch.rand(7, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(7, generator=g, dtype=torch.float64) + 0.1,
    )
    want = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = Q.frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert got == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_frechet_one_dimensional_and_identical() -> None:
    # N(1, 4) vs N(-2, 9): (1 + 2)^2 + (2 - 3)^2 = 10
    assert Q.frechet_distance(
        torch.tensor(1.0), torch.tensor(4.0), torch.tensor(-2.0), torch.tensor(9.0)
    ) == pytest.approx(10.0)
    s = _spd(6, 1)
    mu = torch.arange(6.0)
    assert Q.frechet_distance(mu, s, mu, s) == pytest.approx(0.0, abs=1e-9)


def test_frechet_general_matches_sqrtm_formula() -> None:
    scipy_linalg = pytest.importorskip("scipy.linalg")
    s1, s2 = _spd(5, 2), _spd(5, 3)
    mu1, mu2 = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    covmean = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    want = 5.0 + float(np.trace(s1.numpy() + s2.numpy() - 2 * covmean))
    assert Q.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-8)
    # symmetric, and scaling both covariances by c^2 scales the covariance part by c^2
    assert Q.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(want, rel=1e-8)
    assert Q.frechet_distance(mu1, 4 * s1, mu1, 4 * s2) == pytest.approx(4 * (want - 5.0), rel=1e-8)


def test_frechet_of_samples_converges() -> None:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    y = torch.randn(20000, 3, generator=g, dtype=torch.float64) * 2 + 1
    # N(0, I) vs N(1, 4I) in 3-d: 3 * 1 + 3 * (2 - 1)^2 = 6
    assert Q.frechet_distance_features(x, y) == pytest.approx(6.0, rel=0.05)


def test_nearest_distances_brute_force() -> None:
    g = torch.Generator().manual_seed(5)
    q, r = torch.rand(13, 1, 4, 4, generator=g), torch.rand(50, 1, 4, 4, generator=g)
    want = torch.cdist(q.flatten(1).double(), r.flatten(1).double()).min(1).values
    got = Q.nearest_distances(q, r, chunk=7)
    assert torch.allclose(got, want, atol=1e-9)
    assert float(Q.nearest_distances(r[:3], r).max()) == pytest.approx(0.0, abs=1e-6)


def test_small_cnn_shapes() -> None:
    m = Q.SmallCNN()
    for size in (28, 32):
        x = torch.rand(2, 1, size, size)
        assert m.features(x).shape == (2, Q.FEATURE_DIM) and m(x).shape == (2, 10)


@pytest.mark.parametrize("name, min_acc", [("fmnist", 0.8), ("mnist", 0.9)])
def test_bundled_classifier_on_heldout(name: str, min_acc: float) -> None:
    from genprior.data import heldout

    path = Q.MODELS_DIR / Q.CLASSIFIERS[name]
    if not path.is_file():
        pytest.skip(f"{path.name} not trained yet")
    assert path.stat().st_size < 5e6
    model = Q.load_classifier(name)
    x, y = heldout(name)
    acc = Q.accuracy(model, x, y)
    assert acc > min_acc, acc
    assert math.isfinite(model.info["test_accuracy"])
