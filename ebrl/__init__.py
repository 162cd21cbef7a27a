"""ebrl: energy-based reinforcement learning.

The core: energies E(x | c) (lower is more plausible), batched MCMC samplers and the Boltzmann
policy pi(a|s) ∝ exp(-E(s, a)/alpha). Imports torch and numpy only.
"""

from ebrl.energies import Energy, MLPEnergy, StateActionEnergy
from ebrl.errors import NonFiniteError
from ebrl.policy import BoltzmannPolicy

__all__ = ["BoltzmannPolicy", "Energy", "MLPEnergy", "NonFiniteError", "StateActionEnergy"]
__version__ = "0.1.0"
