"""Score models of a generator's intermediate layer (SGILO's prior).

* :mod:`genprior.score.sde`: the variance-preserving SDE (Song et al. 2021) a score model is
  trained on, and its link to the noise levels of annealed Langevin;
* :mod:`genprior.score.model`: :class:`~genprior.score.model.StateScoreModel`, a transformer with
  one token per spatial position of the state (as in SGILO), with the state's normalisation and
  the fingerprint of the generator it was trained on; reverse-SDE sampling of states.
"""
