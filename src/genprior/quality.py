"""Quality of a generator: a classifier, a Fréchet distance in its feature space, memorisation.

* :class:`SmallCNN`: a small classifier of 1-channel images (any size >= 16); its penultimate
  layer (``features``, 128-d) is the feature space of the Fréchet distance. genprior ships one
  trained on the Fashion-MNIST train split (32x32, zero-padded) and one on the MNIST digits
  outside the held-out set (28x28): :func:`load_classifier`.
* :func:`frechet_distance`: ``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)`` between two
  Gaussians, the FID formula (Heusel et al. 2017) in a small classifier's feature space rather
  than Inception's: numbers are comparable between generators of the same data set only.
* :func:`nearest_distances`: for every image, the L2 distance (pixels in [0, 1]) to its nearest
  training image. A generator that memorises has samples much closer to the training set than
  real test images are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import UserError

MODELS_DIR = Path(__file__).resolve().parent / "assets" / "models"
CLASSIFIERS = {"fmnist": "fmnist-classifier.pt", "mnist": "mnist-classifier.pt"}
FEATURE_DIM = 128


class SmallCNN(nn.Module):
    """conv16-conv16-pool-conv32-conv32-pool-avgpool(4x4)-fc128-fc10 (``width=16``); inputs ``(B, 1, H, W)`` in [0, 1]."""

    def __init__(self, num_classes: int = 10, width: int = 16, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * w * 16, feature_dim), nn.ReLU(inplace=True),
        )  # fmt: skip
        self.head = nn.Linear(feature_dim, num_classes)
        self.config = {"num_classes": num_classes, "width": width, "feature_dim": feature_dim}

    def features(self, x: Tensor) -> Tensor:
        """Penultimate activations ``(B, feature_dim)``."""
        return self.body((x - 0.5) / 0.5)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


# ---- data ---------------------------------------------------------------------------------------
def dataset_images(name: str, split: str) -> tuple[Tensor, Tensor]:
    """Float images ``(N, 1, H, W)`` in [0, 1] and labels of a data set split.

    ``fmnist``: ``train`` (60,000) / ``test`` (10,000, the official test split), 32x32 padded.
    ``mnist``: ``train`` (the 9,700 digits outside the held-out set) / ``test`` (the 300 held-out
    digits), 28x28.
    """
    from . import data

    if name == "fmnist":
        images, labels = data.load_fashion_mnist(split, pad_to=32)
    elif name == "mnist":
        images, labels = data.load_mnist()
        idx = data.training_indices_mnist() if split == "train" else data.heldout_indices_mnist()
        images, labels = images[idx], labels[idx]
    else:
        raise UserError(f"unknown data set {name!r}: use fmnist or mnist")
    x = torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1).float() / 255.0
    return x, torch.from_numpy(labels.astype(np.int64))


# ---- classifier ---------------------------------------------------------------------------------
def train_classifier(
    images: Tensor,
    labels: Tensor,
    *,
    epochs: int = 3,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    augment_shift: int = 2,
    progress: bool = True,
) -> SmallCNN:
    """Train a :class:`SmallCNN` (Adam, cosine schedule, random shifts of up to ``augment_shift`` px)."""
    torch.manual_seed(seed)
    model = SmallCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = len(images)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    gen = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, disable=not progress, desc="train classifier", unit="step")
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for j in range(steps_per_epoch):
            idx = perm[j * batch_size : (j + 1) * batch_size]
            x, y = images[idx], labels[idx]
            if augment_shift:
                s = augment_shift
                dx, dy = (int(v) for v in torch.randint(-s, s + 1, (2,), generator=gen))
                x = torch.roll(F.pad(x, (s, s, s, s)), shifts=(dy, dx), dims=(2, 3))[..., s:-s, s:-s]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}")
    bar.close()
    return model.eval()


@torch.no_grad()
def accuracy(model: SmallCNN, images: Tensor, labels: Tensor, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        correct += int((model(images[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum())
    return correct / max(len(images), 1)


def save_classifier(path: str | os.PathLike, model: SmallCNN, info: dict[str, Any]) -> None:
    from .io import atomic_path

    blob = {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": dict(model.config),
        "info": info,
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
        os.chmod(tmp, 0o644)  # package data: readable by everyone


def load_classifier(name_or_path: str | os.PathLike) -> SmallCNN:
    """A bundled classifier (``"fmnist"`` or ``"mnist"``) or one saved by :func:`save_classifier`."""
    from .generators.checkpoint import safe_load

    key = str(name_or_path)
    path = MODELS_DIR / CLASSIFIERS[key] if key in CLASSIFIERS else Path(name_or_path)
    if key in CLASSIFIERS and not path.is_file():
        raise UserError(
            f"the bundled classifier {path.name} is missing: run `python benchmarks/quality.py --train-classifiers`"
        )
    blob = safe_load(path)
    if not isinstance(blob, dict) or "state_dict" not in blob:
        raise UserError(
            f"{path} is not a genprior classifier file: give one written by genprior.quality.save_classifier"
        )
    cfg = blob.get("config", {})
    model = SmallCNN(**{k: int(v) for k, v in cfg.items()})
    model.load_state_dict(blob["state_dict"])
    model.info = blob.get("info", {})  # type: ignore[attr-defined]
    return model.eval()


# ---- statistics ---------------------------------------------------------------------------------
@torch.no_grad()
def features(model: SmallCNN, images: Tensor | Iterable[Tensor], batch_size: int = 500) -> Tensor:
    """Penultimate features (float64) of images ``(N, 1, H, W)`` in [0, 1], or of an iterable of batches."""
    model.eval()
    chunks = images.split(batch_size) if isinstance(images, Tensor) else images
    return torch.cat([model.features(x.float()).double() for x in chunks])


def gaussian_stats(feats: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (unbiased) covariance of ``(N, D)`` features, float64."""
    f = feats.double()
    mu = f.mean(0)
    c = f - mu
    return mu, c.T @ c / max(len(f) - 1, 1)


def _sqrtm_psd(a: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> float:
    """Fréchet (2-Wasserstein squared) distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    ``tr(sqrtm(S1 S2))`` is computed as ``tr(sqrtm(S1^1/2 S2 S1^1/2))``, a symmetric PSD matrix,
    via eigen-decompositions in float64 (no complex parts, no scipy).
    """
    mu1, mu2 = torch.as_tensor(mu1).double(), torch.as_tensor(mu2).double()
    s1, s2 = torch.as_tensor(sigma1).double(), torch.as_tensor(sigma2).double()
    if s1.dim() == 0:
        s1, s2, mu1, mu2 = s1.view(1, 1), s2.view(1, 1), mu1.view(1), mu2.view(1)
    r1 = _sqrtm_psd(s1)
    m = r1 @ s2 @ r1
    tr_covmean = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    d = float(((mu1 - mu2) ** 2).sum() + torch.trace(s1) + torch.trace(s2) - 2 * tr_covmean)
    return max(d, 0.0)


def frechet_distance_features(f1: Tensor, f2: Tensor) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


@torch.no_grad()
def nearest_distances(queries: Tensor, reference: Tensor, chunk: int = 4096) -> Tensor:
    """L2 distance of each query image to its nearest reference image (both flattened)."""
    q = queries.flatten(1).double()
    best = torch.full((len(q),), math.inf, dtype=torch.float64)
    qn = (q * q).sum(1, keepdim=True)
    for i in range(0, len(reference), chunk):
        r = reference[i : i + chunk].flatten(1).double()
        d2 = qn + (r * r).sum(1)[None] - 2 * q @ r.T
        best = torch.minimum(best, d2.min(1).values)
    return best.clamp_min(0).sqrt()


@torch.no_grad()
def generate(sample_fn: Callable[[int, int], Tensor], n: int, batch_size: int = 500) -> Tensor:
    """``n`` images from ``sample_fn(batch, seed) -> (B, 1, H, W)`` in [0, 1], clamped."""
    out = []
    for i, start in enumerate(range(0, n, batch_size)):
        b = min(batch_size, n - start)
        out.append(sample_fn(b, i).float().clamp(0, 1).cpu())
    return torch.cat(out)


def quality_report(
    classifier: SmallCNN,
    samples: Tensor,
    train: Tensor,
    test: Tensor,
    *,
    nn_queries: int = 1000,
    train_feats: Tensor | None = None,
) -> dict[str, float]:
    """FD of samples vs train, FD floor (test vs train), FD of as many samples as test images,
    and mean nearest-training-image distances of samples and test images."""
    ft = features(classifier, train) if train_feats is None else train_feats
    fs = features(classifier, samples)
    fr = features(classifier, test)
    st = gaussian_stats(ft)
    fd = frechet_distance(*gaussian_stats(fs), *st)
    floor = frechet_distance(*gaussian_stats(fr), *st)
    fd_matched = frechet_distance(*gaussian_stats(fs[: len(test)]), *st)
    k = min(nn_queries, len(samples), len(test))
    nn_s = nearest_distances(samples[:k], train)
    nn_t = nearest_distances(test[:k], train)
    return {
        "n_samples": len(samples),
        "n_test": len(test),
        "n_train": len(train),
        "fd": fd,
        "fd_samples_matched_n": fd_matched,
        "fd_floor": floor,
        "nn_queries": k,
        "nn_samples_mean": float(nn_s.mean()),
        "nn_test_mean": float(nn_t.mean()),
        "nn_samples_min": float(nn_s.min()),
        "nn_test_min": float(nn_t.min()),
    }
