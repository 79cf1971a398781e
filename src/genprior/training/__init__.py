"""Training the generative priors genprior ships.

* :mod:`genprior.training.vae`: the MNIST VAE of Bora et al. 2017 (``genprior train vae``).
* :mod:`genprior.training.stylegan2`: the Fashion-MNIST StyleGAN2 (``genprior train stylegan2``).

Submodules are imported on demand: importing this package loads nothing heavy.
"""
