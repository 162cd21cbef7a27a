"""Soft Q-learning for discrete actions: exact Boltzmann policy softmax(Q/alpha)."""

from ebrl.agents.discrete_sql.discrete_sql import DiscreteSQL
from ebrl.agents.discrete_sql.policies import DiscreteSQLPolicy, MlpPolicy

__all__ = ["DiscreteSQL", "DiscreteSQLPolicy", "MlpPolicy"]
