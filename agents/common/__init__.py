"""Helpers shared by the agents: argument and space checks."""

from ebrl.agents.common.checks import (
    check_action_space_box,
    check_action_space_discrete,
    check_observation_space,
    check_policy_and_env,
    check_policy_kwargs,
    env_spaces,
)

__all__ = [
    "check_action_space_box",
    "check_action_space_discrete",
    "check_observation_space",
    "check_policy_and_env",
    "check_policy_kwargs",
    "env_spaces",
]
