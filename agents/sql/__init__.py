"""Soft Q-learning for continuous (Box) actions with an MCMC Boltzmann policy."""

from ebrl.agents.sql.policies import MlpPolicy, SQLPolicy
from ebrl.agents.sql.sql import SQL

__all__ = ["SQL", "MlpPolicy", "SQLPolicy"]
