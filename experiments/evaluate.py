"""Evaluate a policy over many episodes at once: returns, goals reached, paths, optional frames.

All episodes run in lockstep (one batched ``model.predict`` per step for every live episode),
which matters for MCMC policies whose per-call cost hardly depends on the batch size. Envs that
report ``info["goal_index"]`` (the ebrl tasks) get a histogram of the goals reached and its entropy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

from ebrl.experiments.zoo import ObsNormalizer, ObsPipeline, ZooEnvKeys, eval_obs


@dataclass
class EvalResult:
    """Per-episode outcomes of :func:`evaluate`."""

    returns: list[float]
    lengths: list[int]
    goal_index: list[int] = field(default_factory=list)  # -1: none; empty when the env has no goals
    n_goals: int = 0
    crashed: list[bool] = field(default_factory=list)  # empty when the env reports no crashes
    paths: list[np.ndarray] = field(default_factory=list)  # observations of each episode
    frames: list[np.ndarray] = field(default_factory=list)  # of the first episode, when rendered

    def goal_fractions(self) -> list[float]:
        n = max(len(self.goal_index), 1)
        return [sum(g == k for g in self.goal_index) / n for k in range(self.n_goals)]

    def goal_entropy(self) -> float:
        """Entropy (nats) of the distribution of goals among episodes that reached one."""
        reached = [g for g in self.goal_index if g >= 0]
        if not reached:
            return 0.0
        p = np.bincount(reached, minlength=self.n_goals) / len(reached)
        return abs(float((p[p > 0] * np.log(p[p > 0])).sum()))

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "episodes": len(self.returns),
            "mean_return": float(np.mean(self.returns)),
            "std_return": float(np.std(self.returns)),
            "mean_length": float(np.mean(self.lengths)),
        }
        if self.n_goals:
            out["success_rate"] = float(np.mean([g >= 0 for g in self.goal_index]))
            out["goal_fractions"] = self.goal_fractions()
            out["goal_entropy"] = self.goal_entropy()
            out["goal_entropy_max"] = math.log(self.n_goals)
        if self.crashed:
            out["crash_rate"] = float(np.mean(self.crashed))
        return out


def _n_goals(env: gym.Env) -> int:
    """Number of modes ``info["goal_index"]`` can take: MultiGoal's ``goals``, Fork's ``lanes``."""
    for name in ("goals", "lanes"):
        value = getattr(env.unwrapped, name, None)
        if value is not None:
            return len(value)
    return 0


def evaluate(
    model: BaseAlgorithm,
    env_id: str,
    n_episodes: int,
    seed: int = 0,
    deterministic: bool = False,
    env_kwargs: dict[str, Any] | None = None,
    render: bool = False,
    progress: bool = False,
    wrappers: ZooEnvKeys | None = None,
    normalizer: ObsNormalizer | None = None,
) -> EvalResult:
    """Run ``n_episodes`` episodes in lockstep; episode i is reset with seed ``seed + i``.

    ``deterministic=False`` samples the policy (the stochastic evaluation of the benchmarks).
    With ``render`` the first episode's ``rgb_array`` frames are kept. ``progress`` shows a bar
    of finished episodes. ``wrappers`` (zoo's env keys of the run's config) and ``normalizer``
    (its frozen ``VecNormalize`` statistics, :func:`~ebrl.experiments.zoo.eval_obs`) make the
    observations as training made them; ``paths`` keep the raw observations.
    """
    from tqdm.auto import tqdm

    import ebrl.envs  # noqa: F401  (registers ebrl/...)

    kwargs = dict(env_kwargs or {})
    wrappers = wrappers or ZooEnvKeys()
    env_list = [
        wrappers.wrap_env(gym.make(env_id, render_mode="rgb_array" if render and i == 0 else None, **kwargs))
        for i in range(n_episodes)
    ]
    obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(env_list)])
    pipeline = ObsPipeline(env_list[0].observation_space, n_episodes, wrappers.frame_stack, normalizer)
    seen = pipeline.reset(obs)
    paths: list[list[np.ndarray]] = [[o] for o in obs]
    returns = np.zeros(n_episodes)
    lengths = np.zeros(n_episodes, dtype=int)
    goal = np.full(n_episodes, -1)
    crashed = np.zeros(n_episodes, dtype=bool)
    saw_crash = False
    saw_goal = False
    frames = [env_list[0].render()] if render else []
    live = np.ones(n_episodes, dtype=bool)
    bar = tqdm(total=n_episodes, desc=f"evaluate {env_id}", unit="episode", leave=False, disable=not progress)
    while live.any():
        idx = np.flatnonzero(live)
        actions, _ = model.predict(seen[idx], deterministic=deterministic)
        for j, i in enumerate(idx):
            o, r, term, trunc, info = env_list[i].step(actions[j])
            obs[i] = o
            paths[i].append(np.asarray(o))
            returns[i] += r
            lengths[i] += 1
            if "goal_index" in info:
                saw_goal = True
                goal[i] = max(goal[i], int(info["goal_index"]))
            if "crashed" in info:
                saw_crash = True
                crashed[i] |= bool(info["crashed"])
            if render and i == 0:
                frames.append(env_list[0].render())
            if term or trunc:
                live[i] = False
                bar.update(1)
        seen = pipeline.step(obs)
    bar.close()
    n_goals = _n_goals(env_list[0]) if saw_goal else 0
    for e in env_list:
        e.close()
    return EvalResult(
        returns=returns.tolist(),
        lengths=lengths.tolist(),
        goal_index=goal.tolist() if n_goals else [],
        n_goals=n_goals,
        crashed=crashed.tolist() if saw_crash else [],
        paths=[np.stack(p) for p in paths],
        frames=[f for f in frames if f is not None],
    )


def save_gif(frames: list[np.ndarray], path: str | Path, fps: int = 10) -> Path | None:
    """Write frames as an animated GIF (Pillow, which matplotlib installs); None without frames."""
    if not frames:
        return None
    from PIL import Image

    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


class GoalEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps, evaluate stochastically and log ``eval/...`` scalars:
    mean return and length, and for goal tasks the success rate, goal entropy and fractions.
    ``next_eval`` is the step count of the next evaluation (saved with checkpoints on resume)."""

    def __init__(self, env_id: str, eval_freq: int, n_episodes: int, seed: int,
                 env_kwargs: dict[str, Any] | None = None, wrappers: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.env_id, self.eval_freq, self.n_episodes, self.seed = env_id, eval_freq, n_episodes, seed
        self.env_kwargs, self.wrappers = env_kwargs or {}, wrappers or {}
        self.next_eval = eval_freq

    def _on_step(self) -> bool:
        if self.eval_freq > 0 and self.num_timesteps >= self.next_eval:
            self.next_eval += self.eval_freq
            keys, normalizer = eval_obs(self.wrappers, model=self.model)
            result = evaluate(self.model, self.env_id, self.n_episodes, seed=self.seed + 10_000,
                              env_kwargs=self.env_kwargs, wrappers=keys, normalizer=normalizer)
            log_eval(self.logger, result, self.num_timesteps)
        return True


def log_eval(logger: Any, result: EvalResult, timesteps: int) -> None:
    """Record an evaluation's scalars under ``eval/`` on an SB3 logger and dump them at ``timesteps``."""
    s = result.summary()
    logger.record("time/total_timesteps", timesteps)
    logger.record("eval/mean_reward", s["mean_return"])
    logger.record("eval/mean_ep_length", s["mean_length"])
    if result.n_goals:
        logger.record("eval/success_rate", s["success_rate"])
        logger.record("eval/goal_entropy", s["goal_entropy"])
        for k, f in enumerate(s["goal_fractions"]):
            logger.record(f"eval/goal_{k}_fraction", f)
    if result.crashed:
        logger.record("eval/crash_rate", s["crash_rate"])
    logger.dump(timesteps)
