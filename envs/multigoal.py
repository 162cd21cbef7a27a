"""``ebrl/MultiGoal-v0``: the four-goal point-mass task of soft Q-learning (Haarnoja et al. 2017).

Reference: "Reinforcement Learning with Deep Energy-Based Policies", arXiv 1702.08165, Section 6.1
and the reference code's ``softqlearning/environments/multigoal.py`` (rllab). Every goal is equally
good, so an optimal maximum-entropy policy at the origin is four-modal; a unimodal (Gaussian)
policy has to pick one goal or average them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ._checks import check_finite, check_positive, check_render_mode, clipped_action
from ._render import Canvas

DEFAULT_GOALS: tuple[tuple[float, float], ...] = ((5.0, 0.0), (-5.0, 0.0), (0.0, 5.0), (0.0, -5.0))


class MultiGoalEnv(gym.Env):
    """A point in the plane that must walk to any one of several goals.

    - **observation**: the position ``s ∈ [-bound, bound]^2`` (float32).
    - **action**: the velocity ``a ∈ [-1, 1]^2``; the next position is ``s' = clip(s + a, -bound, bound)``.
      Out-of-range actions are clipped before use (as in the reference code), and the action cost
      is charged on the clipped action.
    - **reward**: ``-(action_cost_coeff·|a|² + distance_cost_coeff·min_g |s' - g|²)``, plus
      ``goal_reward`` on the step that reaches a goal.
    - **termination**: when ``min_g |s' - g| < goal_radius``. Registered with a 30-step time limit.
    - **start**: ``s_0 ~ N(0, init_sigma² I)``, clipped into the box.

    ``info`` on every step holds:

    - ``"goal_index"`` (int): index into ``goals`` of the goal reached on this step, ``-1`` otherwise
      (always ``-1`` on non-terminal steps and on truncation). Benchmarks histogram it over
      evaluation episodes to measure how many modes a policy covers.
    - ``"is_success"`` (bool): ``goal_index >= 0``; SB3's ``EvalCallback`` reports its mean.
    - ``"action_cost"``, ``"goal_cost"`` (float): the two cost terms of the reward, before the bonus.

    ``reset`` returns ``info = {"goal_index": -1}``.

    Args:
        goals: goal positions, shape ``(k, 2)``, each inside the box; default the paper's four,
            ``(5, 0), (-5, 0), (0, 5), (0, -5)``.
        goal_radius: distance to a goal under which the episode ends (paper: 1).
        goal_reward: bonus on reaching a goal (paper: 10).
        action_cost_coeff: weight of ``|a|²`` in the cost (paper: 30).
        distance_cost_coeff: weight of the squared distance to the nearest goal (paper: 1).
        init_sigma: standard deviation of the start position around the origin (paper: 0.1).
        bound: half-width of the square the position is clipped to (paper: 7).
        render_mode: ``None`` or ``"rgb_array"`` (an ``H×W×3`` uint8 frame with the goals, the path
            since the last reset and the agent).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        goals: Sequence[Sequence[float]] | None = None,
        goal_radius: float = 1.0,
        goal_reward: float = 10.0,
        action_cost_coeff: float = 30.0,
        distance_cost_coeff: float = 1.0,
        init_sigma: float = 0.1,
        bound: float = 7.0,
        render_mode: str | None = None,
    ) -> None:
        # Validate everything before touching any attribute (errors leave no half-built env).
        goal_radius = check_positive("goal_radius", goal_radius)
        goal_reward = check_finite("goal_reward", goal_reward)
        action_cost_coeff = check_finite("action_cost_coeff", action_cost_coeff, nonnegative=True)
        distance_cost_coeff = check_finite("distance_cost_coeff", distance_cost_coeff, nonnegative=True)
        init_sigma = check_finite("init_sigma", init_sigma, nonnegative=True)
        bound = check_positive("bound", bound)
        goal_array = np.asarray(DEFAULT_GOALS if goals is None else goals, dtype=np.float64)
        if goal_array.ndim != 2 or goal_array.shape[0] < 1 or goal_array.shape[1] != 2:
            raise ValueError(f"goals must have shape (k, 2) with k >= 1, got shape {goal_array.shape}")
        if not np.all(np.isfinite(goal_array)) or np.any(np.abs(goal_array) > bound):
            raise ValueError(
                f"goals must be finite and inside [-bound, bound]^2 = [-{bound}, {bound}]^2, "
                f"got {goal_array.tolist()}"
            )
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])

        self.goals = goal_array
        self.goal_radius = goal_radius
        self.goal_reward = goal_reward
        self.action_cost_coeff = action_cost_coeff
        self.distance_cost_coeff = distance_cost_coeff
        self.init_sigma = init_sigma
        self.bound = bound
        self.observation_space = spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._position: np.ndarray | None = None
        self._path: list[np.ndarray] = []

    def _set_position(self, position: np.ndarray) -> None:
        # The state is stored at float32 precision so that it is exactly the observation: rewards
        # then depend only on what the agent sees (the task stays Markov to the last bit).
        self._position = np.clip(position, -self.bound, self.bound).astype(np.float32).astype(np.float64)
        self._path.append(self._position.copy())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode near the origin.

        Args:
            seed: seeds the environment's generator (same seed, same start position).
            options: unused; accepted for the gymnasium API.

        Returns:
            The start position (float32, shape ``(2,)``) and ``{"goal_index": -1}``.
        """
        super().reset(seed=seed)
        self._path = []
        self._set_position(self.init_sigma * self.np_random.standard_normal(2))
        return self._position.astype(np.float32), {"goal_index": -1}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Move by the (clipped) velocity ``action`` and score the new position.

        Args:
            action: velocity, shape ``(2,)``; entries outside ``[-1, 1]`` are clipped.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``truncated`` is always False
            here (the time limit is the ``TimeLimit`` wrapper's job); see the class for ``info``.
        """
        if self._position is None:
            raise RuntimeError("MultiGoalEnv.step() called before reset()")
        a = clipped_action(action, 2)
        self._set_position(self._position + a)

        distances = np.linalg.norm(self.goals - self._position, axis=1)
        nearest = int(np.argmin(distances))
        action_cost = self.action_cost_coeff * float(a @ a)
        goal_cost = self.distance_cost_coeff * float(distances[nearest] ** 2)
        # Strict inequality as in the reference code (``dist_to_goal < self.goal_threshold``).
        terminated = bool(distances[nearest] < self.goal_radius)
        reward = -(action_cost + goal_cost) + (self.goal_reward if terminated else 0.0)
        info = {
            "goal_index": nearest if terminated else -1,
            "is_success": terminated,
            "action_cost": action_cost,
            "goal_cost": goal_cost,
        }
        return self._position.astype(np.float32), float(reward), terminated, False, info

    def render(self) -> np.ndarray | None:
        """Draw the goals (green, with their termination radius), the path and the agent (red).

        Returns:
            A ``(280, 280, 3)`` uint8 frame for the default ``bound`` when ``render_mode ==
            "rgb_array"``; ``None`` (with gymnasium's warning) when no render mode was set.
        """
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to make().")
            return None
        box = (-self.bound, self.bound)
        canvas = Canvas(box, box, pixels_per_unit=140 / self.bound)  # 280×280 pixels at any bound
        axis = (225, 225, 225)
        canvas.segment((-self.bound, 0.0), (self.bound, 0.0), 0.03, axis)
        canvas.segment((0.0, -self.bound), (0.0, self.bound), 0.03, axis)
        for goal in self.goals:
            canvas.disk(goal, self.goal_radius, (200, 235, 200))
            canvas.ring(goal, self.goal_radius, 0.08, (60, 160, 60))
            canvas.disk(goal, 0.15, (30, 120, 30))
        if self._path:
            canvas.polyline(np.stack(self._path), 0.12, (50, 90, 200))
            canvas.disk(self._path[-1], 0.3, (210, 40, 40))
        return canvas.image
