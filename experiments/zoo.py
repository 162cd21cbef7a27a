"""rl-baselines3-zoo's env keys and schedules, read from ebrl's YAML configs.

A zoo hyperparameter entry may hold, besides the algorithm's constructor arguments, keys that shape
the environment instead: ``env_wrapper`` (Gymnasium wrappers by import path, optionally with
keyword arguments), ``normalize`` (a ``VecNormalize`` around the VecEnv: ``true``, or its keyword
arguments as a mapping or zoo's ``"dict(norm_obs=True, norm_reward=False)"`` string) and
``frame_stack`` (a ``VecFrameStack`` of that many observations): wrappers on each env, then
stacking, then normalisation. (zoo normalises before it stacks; with both keys SB3's off-policy
algorithms then fail, since their replay buffer stores ``VecNormalize``'s unstacked original
observations. ``VecNormalize`` outermost is the order they support.) Learning rates may be zoo's
``"lin_<value>"`` strings, a linear decay from ``<value>`` to 0 over training.

:class:`ZooEnvKeys` applies the same env keys to training (:meth:`ZooEnvKeys.wrap_vec_env`) and to
evaluation (:meth:`ZooEnvKeys.wrap_env`, :class:`ObsPipeline`), so the policy always sees
observations made the same way; :class:`ObsNormalizer` is the frozen copy of ``VecNormalize``'s
statistics that a finished run keeps in ``obs_normalizer.npz`` (no pickle).
See docs/architecture.md, "Where each concept lives".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from stable_baselines3.common.vec_env import VecEnv, VecFrameStack, VecNormalize
from stable_baselines3.common.vec_env.stacked_observations import StackedObservations

from ebrl.experiments.config import ConfigError, parse_dict_call

ZOO_ENV_KEYS = ("env_wrapper", "normalize", "frame_stack")
# Constructor arguments that zoo lets a "lin_<value>" string set (zoo's _preprocess_schedules).
SCHEDULE_KEYS = ("learning_rate", "clip_range", "clip_range_vf", "delta_std")
NORMALIZER_FILE = "obs_normalizer.npz"


class LinearSchedule:
    """Zoo's ``lin_<value>``: ``value * progress_remaining`` (``value`` at the start, 0 at the end).

    A module-level class, so a saved model names it instead of pickling a closure.
    """

    def __init__(self, initial_value: float) -> None:
        self.initial_value = float(initial_value)

    def __call__(self, progress_remaining: float) -> float:
        return self.initial_value * progress_remaining

    def __repr__(self) -> str:
        return f"lin_{self.initial_value:g}"


def parse_schedule(key: str, value: Any) -> Any:
    """``value`` as the algorithm takes it: a ``"lin_<x>"`` string of a :data:`SCHEDULE_KEYS` key
    becomes a :class:`LinearSchedule`; anything else is returned unchanged. A malformed ``lin_``
    string raises :class:`ConfigError` naming the key."""
    if key not in SCHEDULE_KEYS or not isinstance(value, str) or not value.startswith("lin_"):
        return value
    try:
        initial = float(value.removeprefix("lin_"))
    except ValueError:
        initial = float("nan")
    if not np.isfinite(initial) or initial < 0:
        raise ConfigError(f"{key} must be a number or zoo's 'lin_<value>' with a value >= 0, got {value!r}")
    return LinearSchedule(initial)


def _import_class(path: Any, what: str) -> type:
    if not isinstance(path, str) or "." not in path:
        raise ConfigError(f"{what} must name a class by its import path ('module.Class'), got {path!r}")
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} {path!r} cannot be imported ({exc})") from exc


def _wrapper_list(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """Zoo's ``env_wrapper``: a path, a ``{path: kwargs}`` mapping, or a list of either."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, dict):
            if len(item) != 1:
                raise ConfigError(f"env_wrapper entries map one class path to its kwargs, got {item!r}")
            (path, kwargs), = item.items()
            if not isinstance(kwargs, dict | None):
                raise ConfigError(f"env_wrapper {path!r}: kwargs must be a mapping, got {kwargs!r}")
            out.append((path, dict(kwargs or {})))
        else:
            out.append((item, {}))
    for path, _ in out:
        _import_class(path, "env_wrapper")
    return out


def _normalize_kwargs(value: Any) -> dict[str, Any] | None:
    """Zoo's ``normalize``: false/absent (None), true ({}), a mapping, or a ``"dict(...)"`` string."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        value = parse_dict_call(value, what="normalize")
    if not isinstance(value, dict):
        raise ConfigError(f"normalize must be true/false, a mapping or 'dict(...)', got {value!r}")
    allowed = {"norm_obs", "norm_reward", "clip_obs", "clip_reward", "epsilon", "gamma", "norm_obs_keys"}
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ConfigError(f"normalize: unknown VecNormalize argument {unknown[0]!r} "
                          f"(accepted: {', '.join(sorted(allowed))})")
    return dict(value)


@dataclass(frozen=True)
class ZooEnvKeys:
    """The env keys of one config entry, checked (see the module docstring).

    Args:
        env_wrapper: Gymnasium wrappers applied to each env, innermost first: (import path, kwargs).
        normalize: ``VecNormalize`` keyword arguments, or None for no normalisation.
        frame_stack: observations stacked by ``VecFrameStack`` (0 or 1: none).
    """

    env_wrapper: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    normalize: dict[str, Any] | None = None
    frame_stack: int = 0

    @classmethod
    def from_config(cls, keys: dict[str, Any]) -> ZooEnvKeys:
        """Check the zoo env keys of a config entry (the :data:`ZOO_ENV_KEYS` present in ``keys``)."""
        stack = keys.get("frame_stack", 0)
        if isinstance(stack, bool) or not isinstance(stack, int) or stack < 0:
            raise ConfigError(f"frame_stack must be an integer >= 0, got {stack!r}")
        wrappers = _wrapper_list(keys["env_wrapper"]) if keys.get("env_wrapper") is not None else []
        return cls(wrappers, _normalize_kwargs(keys.get("normalize")), stack)

    def __bool__(self) -> bool:
        return bool(self.env_wrapper) or self.normalize is not None or self.frame_stack > 1

    def wrap_env(self, env: gym.Env) -> gym.Env:
        """``env`` inside the ``env_wrapper`` classes (the ``wrapper_class`` of ``make_vec_env``)."""
        for path, kwargs in self.env_wrapper:
            env = _import_class(path, "env_wrapper")(env, **kwargs)
        return env

    def wrap_vec_env(self, venv: VecEnv, gamma: float | None = None) -> VecEnv:
        """The training VecEnv: ``VecFrameStack``, then ``VecNormalize`` outermost (with the
        algorithm's ``gamma`` unless given)."""
        if self.frame_stack > 1:
            venv = VecFrameStack(venv, self.frame_stack)
        if self.normalize is not None:
            kwargs = dict(self.normalize)
            if gamma is not None:
                kwargs.setdefault("gamma", gamma)
            venv = VecNormalize(venv, **kwargs)
        return venv


class ObsNormalizer:
    """``VecNormalize``'s observation statistics, frozen: ``clip((obs - mean) / sqrt(var + eps))``.

    Made from a live ``VecNormalize`` (:meth:`from_vec_normalize`) or read from a run's
    ``obs_normalizer.npz`` (:meth:`load`); ``norm_obs=False`` makes it the identity.
    """

    def __init__(self, mean: np.ndarray, var: np.ndarray, clip_obs: float, epsilon: float,
                 norm_obs: bool = True) -> None:
        self.mean, self.var = np.asarray(mean, dtype=np.float64), np.asarray(var, dtype=np.float64)
        self.clip_obs, self.epsilon, self.norm_obs = float(clip_obs), float(epsilon), bool(norm_obs)

    @classmethod
    def from_vec_normalize(cls, venv: VecNormalize) -> ObsNormalizer:
        if isinstance(venv.obs_rms, dict):
            raise ConfigError("normalize: only Box observations are supported (not Dict spaces)")
        rms = venv.obs_rms
        return cls(rms.mean.copy(), rms.var.copy(), venv.clip_obs, venv.epsilon, venv.norm_obs)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        if not self.norm_obs:
            return obs
        out = (obs - self.mean) / np.sqrt(self.var + self.epsilon)
        return np.clip(out, -self.clip_obs, self.clip_obs).astype(np.float32)

    def save(self, path: str | Path) -> Path:
        np.savez(path, mean=self.mean, var=self.var, clip_obs=self.clip_obs, epsilon=self.epsilon,
                 norm_obs=self.norm_obs)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> ObsNormalizer:
        with np.load(path, allow_pickle=False) as data:
            return cls(data["mean"], data["var"], float(data["clip_obs"]), float(data["epsilon"]),
                       bool(data["norm_obs"]))


class ObsPipeline:
    """What ``VecFrameStack`` and ``VecNormalize`` do to a batch of observations, for evaluation
    loops that step plain envs: stack the last ``frame_stack`` observations (SB3's own
    ``StackedObservations``, so the layout is the same), then normalise with frozen statistics.

    Args:
        observation_space: the space of one env's raw observations.
        n_envs: observations per batch.
        frame_stack: observations stacked (0 or 1: none).
        normalizer: the run's frozen statistics, or None.
    """

    def __init__(self, observation_space: spaces.Space, n_envs: int, frame_stack: int = 0,
                 normalizer: ObsNormalizer | None = None) -> None:
        self.normalizer = normalizer
        self.stack = (StackedObservations(n_envs, frame_stack, observation_space)  # type: ignore[arg-type]
                      if frame_stack > 1 else None)

    def _normalize(self, obs: np.ndarray) -> np.ndarray:
        return self.normalizer(obs) if self.normalizer is not None else obs

    def reset(self, obs: np.ndarray) -> np.ndarray:
        """The first observations of an episode batch, as the policy sees them."""
        stacked = self.stack.reset(obs) if self.stack is not None else obs
        return self._normalize(stacked)  # type: ignore[arg-type]

    def step(self, obs: np.ndarray) -> np.ndarray:
        """The next observations of all envs (finished ones included: their slots are ignored)."""
        if self.stack is not None:
            dones = np.zeros(len(obs), dtype=bool)
            obs, _ = self.stack.update(obs, dones, [{} for _ in range(len(obs))])  # type: ignore[assignment]
        return self._normalize(obs)

    def still(self, states: np.ndarray) -> np.ndarray:
        """Observations as the policy sees them when the env has shown ``states`` (raw, (B, obs))
        for ``frame_stack`` steps in a row: repeated along the stacked axis, then normalised."""
        if self.stack is not None:
            states = np.concatenate([states] * self.stack.n_stack, axis=-1)
        return self._normalize(states)


def eval_obs(wrappers: dict[str, Any], model: Any = None, run_dir: str | Path | None = None
             ) -> tuple[ZooEnvKeys, ObsNormalizer | None]:
    """The env keys of a run's config and the observation statistics to evaluate it with: the
    live ``VecNormalize`` of ``model``'s env during training, else ``run_dir/obs_normalizer.npz``.
    A run configured with ``normalize`` whose statistics cannot be found raises :class:`ConfigError`."""
    keys = ZooEnvKeys.from_config(wrappers)
    if keys.normalize is None:
        return keys, None
    live = model.get_vec_normalize_env() if model is not None else None
    if live is not None:
        return keys, ObsNormalizer.from_vec_normalize(live)
    path = Path(run_dir) / NORMALIZER_FILE if run_dir is not None else None
    if path is None or not path.is_file():
        raise ConfigError(f"the run normalises observations (normalize: {wrappers['normalize']!r}) but "
                          f"{path or NORMALIZER_FILE} is missing: it is written when training ends")
    return keys, ObsNormalizer.load(path)
