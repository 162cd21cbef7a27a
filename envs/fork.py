"""``ebrl/Fork-v0``: a rock straight ahead; pass it on the left or on the right, never through it.

Why a Gaussian policy fails here, visibly
-----------------------------------------
The agent starts exactly on the centre line, in front of a rock, and drives forward at constant
speed; its only action is a lateral velocity. Two lanes, one on each side of the rock, are equally
good, so at the start the best actions form two separate intervals (around ``a ≈ ±0.7–0.8`` with
the defaults) with the worst action, ``a = 0``, right between them: the average of the two good
actions steers straight into the rock. The soft (maximum-entropy) Q-function at the start is
therefore bimodal with a deep valley at zero, and so is the Boltzmann policy ``π ∝ exp(Q/α)``.

A unimodal Gaussian (SAC's policy, tanh-squashed or not) cannot represent that. It can

1. centre on one lane: nearly every episode passes on the same side, so the histogram of
   ``info["goal_index"]`` collapses to one bar (entropy ≈ 0 instead of log 2); or
2. centre between the lanes with a wide spread: its mean drives into the rock and the mass it
   puts near ``a = 0`` turns into crashes (``info["crashed"]``), visible as paths ending on the rock.

Saturating the action (a huge pre-tanh variance puts the mass at ``±1``) does not rescue it: the
lane cost is symmetric around each lane and the action cost is quadratic, so full steering
overshoots and scores worse than the interior optimum. The exact soft-optimal policy (computed by
dynamic programming on a grid with the defaults and α = 1) puts half its mass on each side and
under 4 % on ``|a| < 0.2`` at the start: that is what an energy-based policy (soft Q-learning
sampling ``π ∝ exp(Q/α)``) can represent and a Gaussian cannot.

Dynamics and reward (defaults in brackets)
------------------------------------------
State ``(x, y)``: ``x`` grows by ``forward_speed`` [0.5] every step (so it is also the clock),
``y' = clip(y + lateral_speed · a, -half_width, half_width)`` [0.5, 3]. The rock is the disk of
``obstacle_radius`` [1] centred at ``(obstacle_x, 0)`` [2.5]; the lanes are ``y = ±lane_offset``
[1.5]. Each step pays ``-(action_cost_coeff·a² + lane_cost_coeff·min_lane (y' - lane)²)`` [4, 1]
— the lane term is the one-dimensional analogue of MultiGoal's distance-to-nearest-goal cost and
is what makes the Q-function bimodal at every state near the centre line. A step whose straight
move touches the rock ends the episode with ``crash_reward`` [-10]; reaching ``x = finish_x``
[6, i.e. 12 steps] ends it with ``goal_reward`` [+10]. With the defaults the episode lasts exactly
12 steps unless it crashes.
"""

from __future__ import annotations

from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ._checks import check_finite, check_positive, check_render_mode, clipped_action
from ._render import Canvas

# The two modes: which side of the rock the agent passed, as reported in info["goal_index"].
LEFT, RIGHT = 0, 1


def _segment_hits_disk(p0: np.ndarray, p1: np.ndarray, center: np.ndarray, radius: float) -> bool:
    """Whether the straight move ``p0 → p1`` comes closer than ``radius`` to ``center``.

    Testing the whole segment, not only its end point, means no step can tunnel through the rock.
    """
    d = p1 - p0
    length2 = float(d @ d)
    u = 0.0 if length2 == 0 else float(np.clip((center - p0) @ d / length2, 0.0, 1.0))
    return bool(np.linalg.norm(p0 + u * d - center) < radius)


class ForkEnv(gym.Env):
    """Drive past a rock on either side; a 1-D lateral action, a bimodal optimum (see module docstring).

    - **observation**: ``(x, y)`` (float32), ``x ∈ [0, finish_x]`` (progress, also the clock) and
      ``y ∈ [-half_width, half_width]`` (lateral offset from the centre line).
    - **action**: lateral velocity ``a ∈ [-1, 1]`` (shape ``(1,)``); values outside are clipped and
      the action cost is charged on the clipped value.

    ``info`` on every step holds:

    - ``"goal_index"`` (int): on the step that reaches the finish line, the side on which the rock
      was passed: ``0`` = left (``y > 0``, left of the driving direction ``+x``), ``1`` = right
      (``y < 0``); ``-1`` on every other step, on a crash and on truncation. Benchmarks histogram it
      over evaluation episodes.
    - ``"is_success"`` (bool): ``goal_index >= 0``; SB3's ``EvalCallback`` reports its mean.
    - ``"crashed"`` (bool): this step's move touched the rock (the episode terminates).
    - ``"action_cost"``, ``"lane_cost"`` (float): the two cost terms of the reward.

    ``reset`` returns ``info = {"goal_index": -1}``.

    Args:
        forward_speed: distance along ``x`` covered per step.
        lateral_speed: lateral distance covered per step at ``|a| = 1``.
        half_width: the road is ``|y| <= half_width``; ``y`` is clipped there (no crash on the edge).
        obstacle_x: ``x`` of the rock's centre (its centre is on the centre line ``y = 0``).
        obstacle_radius: radius of the rock; must be smaller than ``lane_offset`` so lanes are clear.
        lane_offset: the two lanes are the lines ``y = ±lane_offset``.
        finish_x: the episode ends successfully when ``x`` reaches it; must lie past the rock.
        action_cost_coeff: weight of ``a²`` in the per-step cost.
        lane_cost_coeff: weight of the squared distance to the nearest lane in the per-step cost.
        goal_reward: bonus on reaching the finish line.
        crash_reward: reward added on the crash step (negative: a penalty).
        init_sigma: standard deviation of the start ``y`` around 0. The default 0 makes the start
            exactly symmetric, so the choice of side must come from the policy's own randomness —
            the quantity a mode-coverage benchmark measures.
        render_mode: ``None`` or ``"rgb_array"`` (an ``H×W×3`` uint8 frame with the road, the lanes,
            the rock, the finish line, the path since the last reset and the agent).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        forward_speed: float = 0.5,
        lateral_speed: float = 0.5,
        half_width: float = 3.0,
        obstacle_x: float = 2.5,
        obstacle_radius: float = 1.0,
        lane_offset: float = 1.5,
        finish_x: float = 6.0,
        action_cost_coeff: float = 4.0,
        lane_cost_coeff: float = 1.0,
        goal_reward: float = 10.0,
        crash_reward: float = -10.0,
        init_sigma: float = 0.0,
        render_mode: str | None = None,
    ) -> None:
        # Validate everything before touching any attribute (errors leave no half-built env).
        forward_speed = check_positive("forward_speed", forward_speed)
        lateral_speed = check_positive("lateral_speed", lateral_speed)
        half_width = check_positive("half_width", half_width)
        obstacle_radius = check_positive("obstacle_radius", obstacle_radius)
        lane_offset = check_positive("lane_offset", lane_offset)
        finish_x = check_positive("finish_x", finish_x)
        obstacle_x = check_finite("obstacle_x", obstacle_x)
        action_cost_coeff = check_finite("action_cost_coeff", action_cost_coeff, nonnegative=True)
        lane_cost_coeff = check_finite("lane_cost_coeff", lane_cost_coeff, nonnegative=True)
        goal_reward = check_finite("goal_reward", goal_reward)
        crash_reward = check_finite("crash_reward", crash_reward)
        init_sigma = check_finite("init_sigma", init_sigma, nonnegative=True)
        if not obstacle_radius < lane_offset <= half_width:
            raise ValueError(
                "lane_offset must satisfy obstacle_radius < lane_offset <= half_width "
                f"({obstacle_radius} < lane_offset <= {half_width}), got {lane_offset!r}"
            )
        if not 0 < obstacle_x < finish_x:
            raise ValueError(f"obstacle_x must lie in (0, finish_x) = (0, {finish_x}), got {obstacle_x!r}")
        render_mode = check_render_mode(render_mode, self.metadata["render_modes"])

        self.render_mode = render_mode
        self.forward_speed = forward_speed
        self.lateral_speed = lateral_speed
        self.half_width = half_width
        self.obstacle = np.array([obstacle_x, 0.0])
        self.obstacle_radius = obstacle_radius
        self.lanes = np.array([lane_offset, -lane_offset])  # indexed by LEFT, RIGHT
        self.finish_x = finish_x
        self.action_cost_coeff = action_cost_coeff
        self.lane_cost_coeff = lane_cost_coeff
        self.goal_reward = goal_reward
        self.crash_reward = crash_reward
        self.init_sigma = init_sigma
        self.observation_space = spaces.Box(
            np.array([0.0, -half_width], dtype=np.float32),
            np.array([finish_x, half_width], dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)
        self._steps = 0
        self._position: np.ndarray | None = None
        self._side = -1  # side on which the rock was passed, once it has been
        self._path: list[np.ndarray] = []

    def _set_position(self, x: float, y: float) -> None:
        # The state is kept at float32 precision so that it is exactly the observation.
        position = np.array([min(x, self.finish_x), np.clip(y, -self.half_width, self.half_width)])
        self._position = position.astype(np.float32).astype(np.float64)
        self._path.append(self._position.copy())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode at ``x = 0`` on (or, with ``init_sigma > 0``, near) the centre line.

        Args:
            seed: seeds the environment's generator (same seed, same start).
            options: unused; accepted for the gymnasium API.

        Returns:
            The start ``(x, y)`` (float32, shape ``(2,)``) and ``{"goal_index": -1}``.
        """
        super().reset(seed=seed)
        self._steps = 0
        self._side = -1
        self._path = []
        self._set_position(0.0, self.init_sigma * self.np_random.standard_normal())
        return self._position.astype(np.float32), {"goal_index": -1}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Drive one step forward, steering by ``action``.

        Args:
            action: lateral velocity, shape ``(1,)`` (a scalar is accepted); clipped to ``[-1, 1]``.

        Returns:
            ``(observation, reward, terminated, truncated, info)``; ``truncated`` is always False
            here (the time limit is the ``TimeLimit`` wrapper's job); see the class for ``info``.
        """
        if self._position is None:
            raise RuntimeError("ForkEnv.step() called before reset()")
        a = float(clipped_action(action, 1)[0])

        start = self._position
        self._steps += 1
        # x from the step count, not by accumulation, so the finish is reached on an exact step
        # (and decided before the float32 rounding of the stored state).
        x = self._steps * self.forward_speed
        self._set_position(x, start[1] + self.lateral_speed * a)
        end = self._position

        # Which side the rock was passed on: the sign of y where the move crosses the rock's centre x.
        if start[0] < self.obstacle[0] <= end[0]:
            frac = (self.obstacle[0] - start[0]) / (end[0] - start[0])
            self._side = LEFT if start[1] + frac * (end[1] - start[1]) > 0 else RIGHT

        crashed = _segment_hits_disk(start, end, self.obstacle, self.obstacle_radius)
        finished = not crashed and x >= self.finish_x
        action_cost = self.action_cost_coeff * a * a
        lane_cost = self.lane_cost_coeff * float(np.min((end[1] - self.lanes) ** 2))
        reward = -(action_cost + lane_cost)
        if crashed:
            reward += self.crash_reward
        elif finished:
            reward += self.goal_reward
        info = {
            "goal_index": self._side if finished else -1,
            "is_success": finished,
            "crashed": crashed,
            "action_cost": action_cost,
            "lane_cost": lane_cost,
        }
        return self._position.astype(np.float32), float(reward), crashed or finished, False, info

    def render(self) -> np.ndarray | None:
        """Draw the road, the lanes (dashed), the rock, the finish line, the path and the agent.

        Returns:
            A ``(240, 280, 3)`` uint8 frame with the defaults when ``render_mode == "rgb_array"``;
            ``None`` (with gymnasium's warning) when no render mode was set.
        """
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='rgb_array' to make().")
            return None
        margin = 0.5
        canvas = Canvas(
            (-margin, self.finish_x + margin),
            (-self.half_width, self.half_width),
            pixels_per_unit=40.0,
            background=(235, 235, 230),
        )
        for lane in self.lanes:
            for x0 in np.arange(0.0, self.finish_x, 0.5):
                canvas.segment((x0, lane), (min(x0 + 0.25, self.finish_x), lane), 0.04, (190, 190, 170))
        canvas.disk(self.obstacle, self.obstacle_radius, (110, 100, 90))
        finish = ((self.finish_x, -self.half_width), (self.finish_x, self.half_width))
        canvas.segment(*finish, 0.1, (60, 160, 60))
        if self._path:
            canvas.polyline(np.stack(self._path), 0.08, (50, 90, 200))
            canvas.disk(self._path[-1], 0.15, (210, 40, 40))
        return canvas.image
