"""Batched MCMC samplers over (batch, chains, dim), all sharing the :class:`Sampler` interface."""

from ebrl.samplers.base import Sampler, SampleResult
from ebrl.samplers.dfo import DerivativeFree
from ebrl.samplers.langevin import Langevin
from ebrl.samplers.mala import MALA

__all__ = ["MALA", "DerivativeFree", "Langevin", "SampleResult", "Sampler"]
