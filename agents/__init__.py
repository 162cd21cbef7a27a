"""RL algorithms on stable-baselines3: soft Q-learning with Boltzmann policies.

``SQL`` acts on bounded Box action spaces by MCMC action search on its energy E = -Q;
``DiscreteSQL`` acts on Discrete spaces with the exact softmax(Q/alpha) policy.
"""

from ebrl.agents.discrete_sql import DiscreteSQL
from ebrl.agents.sql import SQL

__all__ = ["SQL", "DiscreteSQL"]
