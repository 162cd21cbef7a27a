"""Checks run before an algorithm creates any state: environments, spaces, SB3 arguments, model files.

SB3 itself checks the action space with an ``assert`` deep inside ``BaseAlgorithm.__init__``;
the agents check first and raise ``TypeError``/``ValueError`` naming the argument
(docs/architecture.md, "Errors").
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.type_aliases import GymEnv

from ebrl.agents.common.safe_load import inspect_model_file
from ebrl.validation import check_choice, check_fraction, check_int, check_positive_float

# Spaces that SB3's preprocess_obs + flatten turn into one flat float vector (the energy's state).
FLAT_OBSERVATION_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def env_spaces(
    env: GymEnv | str | None, verbose: int = 0
) -> tuple[Any, spaces.Space | None, spaces.Space | None]:
    """Make the env if given by id (as SB3 would) and return ``(env, observation_space, action_space)``."""
    if env is None:
        return None, None, None
    env = maybe_make_env(env, verbose)
    return env, env.observation_space, env.action_space


def check_observation_space(observation_space: spaces.Space) -> spaces.Space:
    """The energies take a flat state vector: Box (any shape, flattened), Discrete (one-hot),
    MultiDiscrete and MultiBinary; Dict, Tuple and other spaces are rejected."""
    if not isinstance(observation_space, FLAT_OBSERVATION_SPACES):
        accepted = ", ".join(s.__name__ for s in FLAT_OBSERVATION_SPACES)
        raise TypeError(
            f"observation_space must be one of {accepted} (flattened into the state vector), "
            f"got {observation_space}"
        )
    if isinstance(observation_space, spaces.Box) and int(np.prod(observation_space.shape)) < 1:
        raise ValueError(f"observation_space must have at least one dimension, got {observation_space}")
    return observation_space


def check_action_space_box(action_space: spaces.Space) -> spaces.Box:
    """A bounded Box: the Boltzmann policy lives on the normalised box [-1, 1]^d, which is the
    env's box rescaled, so every bound must be finite."""
    if not isinstance(action_space, spaces.Box):
        raise TypeError(f"action_space must be a gymnasium.spaces.Box for SQL, got {action_space}")
    low, high = (
        np.asarray(action_space.low, dtype=np.float64),
        np.asarray(action_space.high, dtype=np.float64),
    )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
        raise ValueError(
            f"action_space must be a bounded Box (finite low and high) for SQL, got {action_space}; "
            "give it finite bounds, e.g. gymnasium.wrappers.TransformAction(env, lambda a: SCALE * a, "
            "gymnasium.spaces.Box(-1.0, 1.0, shape)) (ClipAction and RescaleAction need a bounded space)"
        )
    if not np.all(low < high):
        raise ValueError(f"action_space must have low < high on every coordinate, got {action_space}")
    if len(action_space.shape) != 1:
        raise ValueError(f"action_space must be a 1-D Box, got shape {action_space.shape}")
    return action_space


def check_action_space_discrete(action_space: spaces.Space) -> spaces.Discrete:
    """A Discrete space with at least two actions."""
    if not isinstance(action_space, spaces.Discrete):
        raise TypeError(
            f"action_space must be a gymnasium.spaces.Discrete for DiscreteSQL, got {action_space}"
        )
    if int(action_space.n) < 2:
        raise ValueError(f"action_space must have at least 2 actions, got {action_space}")
    return action_space


def check_policy_kwargs(policy_class: type, policy_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """``policy_kwargs`` is a dict whose keys the policy's constructor accepts (a typo such as
    ``n_chain`` fails here, before SB3 builds the replay buffer, not deep inside ``_setup_model``)."""
    if policy_kwargs is None:
        return {}
    if not isinstance(policy_kwargs, dict):
        raise TypeError(f"policy_kwargs must be a dict or None, got {type(policy_kwargs).__name__}")
    params = inspect.signature(policy_class.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(policy_kwargs)
    reserved = {"self", "observation_space", "action_space", "lr_schedule"}
    accepted = [name for name in params if name not in reserved]
    unknown = sorted(set(policy_kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"policy_kwargs has unknown keys {unknown}; {policy_class.__name__} accepts {accepted}"
        )
    return dict(policy_kwargs)


def check_policy_and_env(
    policy: str | type,
    policy_aliases: dict[str, type],
    base_policy: type,
    policy_kwargs: dict[str, Any] | None,
    env: GymEnv | str | None,
    check_action_space: Callable[[spaces.Space], spaces.Space],
    verbose: int = 0,
    set_by_algorithm: dict[str, str] | None = None,
) -> GymEnv | None:
    """The checks SQL and DiscreteSQL run on ``policy``, ``policy_kwargs`` and ``env`` before SB3
    builds anything; returns the env (made from its id if a string was given).

    Args:
        policy: an alias from ``policy_aliases`` (e.g. ``"MlpPolicy"``) or a policy class.
        policy_aliases: the algorithm's aliases.
        base_policy: the algorithm's policy base class, whose ``check_kwargs`` validates the kwargs.
        policy_kwargs: extra policy arguments (the temperature is the algorithm's ``alpha``).
        env: the environment, its id, or None (when loading).
        check_action_space: the algorithm's action-space check.
        verbose: SB3's verbosity for making the env.
        set_by_algorithm: policy arguments the algorithm sets itself, each with the algorithm's
            argument to pass instead (default: ``{"temperature": "alpha"}``).
    """
    if isinstance(policy, str) and policy not in policy_aliases:
        raise ValueError(f"policy must be one of {list(policy_aliases)} or a policy class, got {policy!r}")
    policy_class = policy_aliases.get(policy, policy) if isinstance(policy, str) else policy
    if policy_kwargs is not None and not isinstance(policy_kwargs, dict):
        raise TypeError(f"policy_kwargs must be a dict or None, got {type(policy_kwargs).__name__}")
    if isinstance(policy_class, type) and issubclass(policy_class, base_policy):
        kwargs = check_policy_kwargs(policy_class, policy_kwargs)
        for key, instead in (set_by_algorithm or {"temperature": "alpha"}).items():
            if key in kwargs:
                raise ValueError(f"policy_kwargs[{key!r}] is set by the algorithm: pass {instead} instead")
        policy_class.check_kwargs(**kwargs)
    env, observation_space, action_space = env_spaces(env, verbose)
    if env is not None:
        check_observation_space(observation_space)
        check_action_space(action_space)
    return env


def check_off_policy_args(
    learning_rate: Any,
    buffer_size: Any,
    learning_starts: Any,
    batch_size: Any,
    tau: Any,
    gamma: Any,
    train_freq: Any,
    gradient_steps: Any,
) -> None:
    """SB3's off-policy arguments, checked before SB3 builds anything (SB3 itself accepts
    ``batch_size="big"`` or ``gamma=1.5`` and fails later inside numpy or torch, or, for
    ``batch_size=0``, trains silently while skipping every update).

    Args:
        learning_rate: a number > 0 or a schedule (a callable of the remaining progress).
        buffer_size: replay capacity, an int >= 1.
        learning_starts: env steps before learning, an int >= 0.
        batch_size: transitions per gradient step, an int >= 1.
        tau: Polyak coefficient, in (0, 1].
        gamma: discount, in [0, 1].
        train_freq: an int >= 1, or ``(n, "step" | "episode")`` with n >= 1.
        gradient_steps: gradient steps per rollout, an int >= 1, or -1 (as many as env steps).
    """
    if not callable(learning_rate):
        check_positive_float("learning_rate", learning_rate)
    check_int("buffer_size", buffer_size, minimum=1)
    check_int("learning_starts", learning_starts, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_fraction("tau", tau, allow_none=False)
    if check_positive_float("gamma", gamma, allow_zero=True) > 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma!r}")
    if isinstance(train_freq, tuple):
        if len(train_freq) != 2 or train_freq[1] not in ("step", "episode"):
            raise ValueError(f"train_freq must be an int or (n, 'step' | 'episode'), got {train_freq!r}")
        check_int("train_freq[0]", train_freq[0], minimum=1)
    else:
        check_int("train_freq", train_freq, minimum=1)
    if gradient_steps != -1:
        check_int("gradient_steps", gradient_steps, minimum=1)


def parse_alpha(alpha: float | str) -> tuple[float, bool]:
    """``alpha`` as (initial value, learned?): a float > 0, ``"auto"`` (start at 1.0) or ``"auto_<init>"``."""
    if isinstance(alpha, str):
        if alpha == "auto":
            return 1.0, True
        if alpha.startswith("auto_"):
            try:
                init = float(alpha[5:])
            except ValueError:
                init = math.nan
            if not (math.isfinite(init) and init > 0):
                raise ValueError(
                    f"alpha must be a float > 0, 'auto' or 'auto_<init>' with init > 0, got {alpha!r}"
                )
            return init, True
        raise ValueError(f"alpha must be a float > 0, 'auto' or 'auto_<init>', got {alpha!r}")
    return check_positive_float("alpha", alpha), False


def check_target_entropy(target_entropy: float | str) -> float | str:
    """``"auto"``, ``"auto_<c>"`` (c finite: -c nats per action dimension) or a finite number."""
    if isinstance(target_entropy, str):
        if target_entropy.startswith("auto_"):
            try:
                per_dim = float(target_entropy[5:])
            except ValueError:
                per_dim = math.nan
            if not math.isfinite(per_dim):
                raise ValueError(f"target_entropy 'auto_<c>' needs a finite number c (nats per action "
                                 f"dimension, the target is -c dim(A)), got {target_entropy!r}")
            return target_entropy
        return check_choice("target_entropy", target_entropy, ["auto", "auto_<c>"])
    if isinstance(target_entropy, bool) or not isinstance(target_entropy, Real):
        raise TypeError(f"target_entropy must be 'auto', 'auto_<c>' or a real number, got {target_entropy!r}")
    if not math.isfinite(target_entropy):
        raise ValueError(f"target_entropy must be finite, got {target_entropy!r}")
    return float(target_entropy)


def resolve_target_entropy(target_entropy: float | str, action_space: spaces.Space) -> float:
    """The entropy target in nats for ``action_space``.

    Box (SAC, Haarnoja et al. 2018): ``"auto"`` is -dim(A), ``"auto_<c>"`` is -c dim(A), a number
    is itself. Discrete (the entropy of softmax(Q/alpha) is exact and lies in [0, log |A|]):
    ``"auto_<c>"`` is the fraction c of the uniform policy's entropy, c log |A| with c in [0, 1);
    ``"auto"`` is SAC-discrete's 0.98 log |A| (Christodoulou 2019); a number must lie in
    [0, log |A|) (a higher target is unreachable and would drive alpha up without bound).
    """
    if isinstance(action_space, spaces.Discrete):
        max_entropy = math.log(int(action_space.n))
        if isinstance(target_entropy, str):
            fraction = 0.98 if target_entropy == "auto" else float(target_entropy[5:])
            if not 0.0 <= fraction < 1.0:
                raise ValueError(f"target_entropy 'auto_<c>' for a Discrete action space needs c in [0, 1) "
                                 f"(the target is c log |A|), got {target_entropy!r}")
            return fraction * max_entropy
        if not 0.0 <= target_entropy < max_entropy:
            raise ValueError(f"target_entropy for a Discrete({action_space.n}) action space must lie in "
                             f"[0, log {action_space.n} = {max_entropy:.4f}) nats, got {target_entropy!r}")
        return float(target_entropy)
    if isinstance(target_entropy, str):
        per_dim = 1.0 if target_entropy == "auto" else float(target_entropy[5:])
        return -per_dim * float(np.prod(action_space.shape))
    return float(target_entropy)


class CheckedLoadMixin:
    """``load`` that checks the file first (``inspect_model_file``: a readable zip with intact
    checksums and the entries of an SB3 model), so that a corrupt or truncated file raises
    ``ModelFileError`` naming the file and what is wrong, not SB3's bare "No data found" or
    "wasn't a zip-file". The load itself is SB3's (it unpickles: use ``safe_load`` for files
    you do not trust)."""

    @classmethod
    def load(cls, path: Any, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``load`` after the file check (file-like objects are passed through unchecked)."""
        if isinstance(path, str | Path):
            inspect_model_file(path)
        return super().load(path, *args, **kwargs)  # type: ignore[misc]
