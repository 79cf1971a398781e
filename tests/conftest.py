from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: the third-party fixtures (../shared/fixtures beside the project root), the one place tests find them
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
FIXTURES = SHARED_FIXTURES / "stylegan2-rosinality"
#: what a skipped fixture test says is missing
FIXTURE_SETUP = (
    "the shared fixtures are missing: clone the project beside ../shared (the workplace's shared "
    "folder, see its README) so that ../shared/fixtures/stylegan2-rosinality exists"
)


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
        pytest.skip(f"{p.name} not found: {FIXTURE_SETUP}")
    return p


def train_tiny_score(G, path: Path, stage: int = 1, steps: int = 10) -> Path:
    """A few steps of a tiny score model of ``G``'s state at ``stage``, exported to ``path``."""
    from genprior.training.score import ScoreTrainConfig, export_score, train_score

    cfg = ScoreTrainConfig(
        stage=stage, steps=steps, batch=8, width=16, depth=1, heads=2, norm_samples=64, warmup=1
    )
    train_score(G, path.parent / (path.stem + "-run"), cfg, progress=False)
    export_score(path.parent / (path.stem + "-run") / "checkpoint.pt", path)
    return path


@pytest.fixture(scope="session")
def tiny_score_path(tiny_stylegan2_path, tmp_path_factory) -> Path:
    """A tiny score model of the tiny StyleGAN2's stage-1 state (for SGILO through the CLI)."""
    from genprior.zoo import load_generator

    return train_tiny_score(load_generator(tiny_stylegan2_path), tmp_path_factory.mktemp("score") / "s.pt")


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray instance (2 CPUs) shared by the tests that run on Ray; skipped without Ray."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_ddpm_path(tmp_path_factory) -> Path:
    """An untrained tiny pixel diffusion model of 3x32x32 images (for the diffusion solvers' CLI runs)."""
    import torch

    from genprior.diffusion.pixel import PixelDiffusion, UNetConfig

    torch.manual_seed(0)
    model = PixelDiffusion(UNetConfig(size=32, channels=3, widths=(8, 16), attention=(False, False)))
    path = tmp_path_factory.mktemp("ddpm") / "tiny-ddpm.pt"
    torch.save(model.to_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_ldm_path(tmp_path_factory) -> Path:
    """An untrained tiny latent diffusion model of 3x32x32 images (8x8 latents)."""
    import torch

    from genprior.diffusion.latent import AEConfig, Autoencoder, LatentDiffusion
    from genprior.diffusion.pixel import UNetConfig

    torch.manual_seed(0)
    ae = Autoencoder(AEConfig(size=32, channels=3, widths=(8, 8, 8), latent_channels=2))
    model = LatentDiffusion(ae, UNetConfig(size=8, channels=2, widths=(8, 16), attention=(False, False)))
    path = tmp_path_factory.mktemp("ldm") / "tiny-ldm.pt"
    torch.save(model.to_dict(), path)
    return path
