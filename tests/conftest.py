from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2-rosinality"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its caches (Gaussian fits, LPIPS weights) under one session temp dir,
    never into the user's home."""
    cache = tmp_path_factory.getbasetemp() / "genprior-cache"
    monkeypatch.setenv("GENPRIOR_CACHE", str(cache))
    yield


@pytest.fixture(scope="session")
def tiny_stylegan2_path() -> Path:
    p = FIXTURES / "stylegan2_tiny_g_ema.pt"
    if not p.exists():
        pytest.skip(f"StyleGAN2 fixture missing: {p}")
    return p
