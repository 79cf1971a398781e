"""Per-image metrics: known values, shapes, clamping, small grey images."""

from __future__ import annotations

import math

import pytest
import torch
from skimage.metrics import structural_similarity

from genprior.metrics import PSNR_MAX, measurement_error, mse, psnr, ssim
from genprior.physics import make_physics

CUDA = torch.cuda.is_available()


def _pair(shape=(2, 1, 28, 28), noise=0.1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g, dtype=dtype)
    y = (x + noise * torch.randn(shape, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


def test_mse_known():
    x = torch.zeros(3, 1, 4, 4)
    y = torch.zeros(3, 1, 4, 4)
    y[0] += 0.1
    y[1, 0, 0, 0] = 1.0
    torch.testing.assert_close(mse(x, y), torch.tensor([0.01, 1 / 16, 0.0]))
    # raw values, no clamping
    torch.testing.assert_close(
        mse(torch.full((1, 1, 2, 2), 2.0), torch.zeros(1, 1, 2, 2)), torch.tensor([4.0])
    )


def test_psnr_known_values():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])
    torch.testing.assert_close(psnr(y, x), torch.tensor([20.0, 40.0]))
    # a known MSE gives 10 log10(1 / MSE)
    a, b = _pair(noise=0.05)
    torch.testing.assert_close(psnr(a, b), 10 * torch.log10(1 / mse(a, b)), rtol=1e-5, atol=1e-4)


def test_psnr_max_val():
    x = torch.zeros(1, 1, 4, 4)
    y = torch.full((1, 1, 4, 4), 25.5)
    torch.testing.assert_close(psnr(y, x, max_val=255.0), torch.tensor([20.0]))
    with pytest.raises(ValueError):
        psnr(x, y, max_val=0)


def test_psnr_identical_is_capped_and_finite():
    x, _ = _pair()
    p = psnr(x, x.clone())
    assert p.shape == (2,)
    assert torch.equal(p, torch.full((2,), PSNR_MAX))
    assert torch.isfinite(p).all()
    # tiny errors don't exceed the cap either
    assert psnr(x, x + 1e-9).max().item() <= PSNR_MAX
    # one identical image in a batch doesn't poison the mean
    y = x.clone()
    y[1] = 1 - y[1]
    p = psnr(x, y)
    assert p[0].item() == PSNR_MAX and p[1].item() < 10 and math.isfinite(p.mean().item())


def test_psnr_clamps_inputs():
    x = torch.full((1, 1, 4, 4), 1.5)
    y = torch.ones(1, 1, 4, 4)
    assert psnr(x, y).item() == PSNR_MAX
    torch.testing.assert_close(
        psnr(torch.full((1, 1, 4, 4), -3.0), torch.full((1, 1, 4, 4), 0.1)), torch.tensor([20.0])
    )


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (3, 1, 32, 32), (2, 3, 32, 32), (1, 3, 64, 48)])
def test_ssim_shapes_and_identity(shape):
    x, y = _pair(shape)
    s = ssim(x, y)
    assert s.shape == (shape[0],)
    assert ((s > 0) & (s < 1)).all()
    torch.testing.assert_close(ssim(x, x), torch.ones(shape[0]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)])
def test_ssim_matches_skimage(shape):
    x, y = _pair(shape, dtype=torch.float64)
    s = ssim(x, y)
    for i in range(shape[0]):
        ref = structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            channel_axis=0,
        )
        assert abs(s[i].item() - ref) < 5e-3


def test_ssim_decreases_with_noise_and_clamps():
    x, _ = _pair((1, 1, 32, 32))
    vals = [ssim(x, (x + n * torch.randn_like(x)).clamp(0, 1)).item() for n in (0.01, 0.1, 0.3)]
    assert vals[0] > vals[1] > vals[2]
    torch.testing.assert_close(ssim(x * 3 - 1, (x * 3 - 1).clamp(0, 1)), torch.ones(1))


def test_mismatched_shapes():
    with pytest.raises(ValueError):
        psnr(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError):
        mse(torch.zeros(2, 1, 4, 4), torch.zeros(1, 1, 4, 4))
    with pytest.raises(ValueError):
        ssim(torch.zeros(1, 1, 4, 4), torch.zeros(1, 3, 4, 4))


@pytest.mark.parametrize(
    "task,kw",
    [
        ("cs", dict(measurements=100)),
        ("cs", dict(measurements=100, cs_operator="circulant")),
        ("inpaint", dict(mask_ratio=0.5)),
        ("superres", dict(scale=4)),
    ],
)
def test_measurement_error(task, kw):
    p = make_physics(task, (1, 32, 32), noise_std=0.3, **kw)
    x, _ = _pair((2, 1, 32, 32))
    y = p.A(x)
    assert torch.allclose(measurement_error(x, y, p), torch.zeros(2), atol=1e-10)
    torch.testing.assert_close(measurement_error(x, y + 0.1, p), torch.full((2,), 0.01), rtol=1e-4, atol=1e-6)
    # the noise-free operator is used: noisy y gives about sigma^2 (deepinv's inpainting leaves
    # the missing pixels of y at 0, noise-free, so there it is sigma^2 times the observed fraction)
    e = measurement_error(x, p(x), p)
    expected = 0.09 * (0.5 if task == "inpaint" else 1.0)
    assert e.shape == (2,) and ((e > 0.6 * expected) & (e < 1.5 * expected)).all()


def test_measurement_error_mean_over_entries():
    p = make_physics("cs", (1, 8, 8), measurements=10)
    x = torch.rand(1, 1, 8, 8)
    y = p.A(x).clone()
    y[0, 0] += 1.0
    torch.testing.assert_close(measurement_error(x, y, p), torch.tensor([0.1]))
    with pytest.raises(ValueError):
        measurement_error(x, y[:, :5], p)


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda():
    x, y = _pair((2, 3, 32, 32))
    x, y = x.cuda(), y.cuda()
    for f in (psnr, ssim, mse):
        out = f(x, y)
        assert out.is_cuda and out.shape == (2,)
        torch.testing.assert_close(out.cpu(), f(x.cpu(), y.cpu()), rtol=1e-4, atol=1e-4)
    p = make_physics("cs", (3, 32, 32), measurements=50, device="cuda")
    assert measurement_error(x, p.A(x), p).is_cuda
