"""Thin heads over any energy: generate samples, denoise inputs, score anomalies.

Each head takes an ``Energy`` (MLPEnergy, StateActionEnergy with its context), any object with
``free_energy(v)`` (a Boltzmann machine), a plain callable, or an ensemble of these.
"""

from ebrl.heads._protocol import EnergyView, as_energy
from ebrl.heads.anomaly import AnomalyScorer, replay_arrays
from ebrl.heads.denoiser import Denoiser
from ebrl.heads.density import KernelDensityEnergy, ledoit_wolf
from ebrl.heads.generator import Generator, annealed_langevin

__all__ = [
    "AnomalyScorer",
    "Denoiser",
    "EnergyView",
    "Generator",
    "KernelDensityEnergy",
    "annealed_langevin",
    "as_energy",
    "ledoit_wolf",
    "replay_arrays",
]
