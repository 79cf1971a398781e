"""Diffusion priors: pixel-space DDPM (deepinv DPS / DiffPIR run on it)."""
