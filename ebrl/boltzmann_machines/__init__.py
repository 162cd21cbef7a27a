"""Boltzmann machines: restricted (Bernoulli and Gaussian-Bernoulli), general, and deep belief nets.

Every model exposes ``free_energy(v)`` of shape ``v.shape[:-1]`` (lower = more likely;
``log p(v) = -F(v) - log Z``), ``n_visible``, Gibbs sampling (``gibbs``, ``sample``),
``mean_field_reconstruct`` for denoising, and a scikit-learn-like ``fit`` / ``transform`` /
``score_samples`` (one base, :class:`BoltzmannEstimator`). ``as_energy()`` gives the free energy
as an :class:`ebrl.Energy` (:class:`FreeEnergy`); Gibbs sampling runs on
:class:`ebrl.samplers.GibbsSampler`. ``log Z`` comes from :mod:`ebrl.partition` (exact
enumeration or AIS).
"""

from ._estimator import BoltzmannEstimator, FreeEnergy
from .bm import BoltzmannMachine
from .dbn import DBN
from .gaussian_rbm import GaussianBernoulliRBM
from .rbm import RBM

__all__ = ["DBN", "RBM", "BoltzmannEstimator", "BoltzmannMachine", "FreeEnergy", "GaussianBernoulliRBM"]
