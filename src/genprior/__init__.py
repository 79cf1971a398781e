"""genprior: imaging inverse problems with pretrained generative priors."""

__version__ = "0.1.0"
