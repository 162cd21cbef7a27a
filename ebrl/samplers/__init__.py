"""Batched MCMC samplers over (batch, chains, dim), all sharing the :class:`Sampler` interface:
explicit-state kernels (:class:`ChainState` in, :class:`ChainState` and :class:`StepInfo` out)
run by one shared loop, eagerly or through torch.compile; and :class:`GibbsSampler`, block Gibbs
sampling of models with exact conditionals (the Boltzmann machines)."""

from ebrl.samplers.base import Sampler
from ebrl.samplers.dfo import DerivativeFree
from ebrl.samplers.gibbs import GibbsModel, GibbsSampler
from ebrl.samplers.langevin import Langevin
from ebrl.samplers.mala import MALA
from ebrl.samplers.state import ChainState, SampleResult, StepInfo

__all__ = [
    "MALA",
    "ChainState",
    "DerivativeFree",
    "GibbsModel",
    "GibbsSampler",
    "Langevin",
    "SampleResult",
    "Sampler",
    "StepInfo",
]
