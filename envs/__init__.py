"""Gymnasium environments of ebrl; importing the package registers their ids.

- ``ebrl/MultiGoal-v0`` (:class:`ebrl.envs.multigoal.MultiGoalEnv`): soft Q-learning's four-goal task.
- ``ebrl/Fork-v0`` (:class:`ebrl.envs.fork.ForkEnv`): pass a rock on either side; a Gaussian policy
  either commits to one side or drives into the rock.

Both put ``info["goal_index"]`` (the goal or side reached, ``-1`` if none) on every step, so a
benchmark can histogram the modes a policy covers. This package imports only gymnasium and numpy.
"""

import gymnasium

from .fork import ForkEnv
from .multigoal import MultiGoalEnv

__all__ = ["ForkEnv", "MultiGoalEnv"]

# Gymnasium 1.x loads no plugin entry points, so ids are registered on import; the guard keeps a
# re-import (e.g. importlib.reload) from re-registering and warning "Overriding environment".
_IDS = {
    "ebrl/MultiGoal-v0": ("ebrl.envs.multigoal:MultiGoalEnv", 30),  # the paper's 30-step episodes
    "ebrl/Fork-v0": ("ebrl.envs.fork:ForkEnv", 30),  # 12 steps with the defaults; the limit is a backstop
}
for _env_id, (_entry_point, _max_steps) in _IDS.items():
    if _env_id not in gymnasium.registry:
        gymnasium.register(_env_id, entry_point=_entry_point, max_episode_steps=_max_steps)
