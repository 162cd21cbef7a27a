"""Everything an SB3 off-policy run needs to continue bit for bit, saved without pickle.

A resumable checkpoint (:func:`save_training_checkpoint`) holds

- ``params.pt``: the policy's and every optimiser's state dicts, the algorithm's torch variables
  (e.g. SQL's ``log_alpha``), the policy sampler's persistent MCMC chains and the torch RNG state,
  read back with ``torch.load(weights_only=True)``;
- ``buffer.npz``: the filled part of the replay buffer (``np.load(allow_pickle=False)``);
- ``state.json``: counters (steps, updates, episodes), the last observations, episode statistics,
  the Python, NumPy and action-space RNG states, every environment's state, and the state of
  zoo's VecEnv wrappers (VecNormalize's running statistics, VecFrameStack's stack).

Environment state is captured generically: for each wrapper layer down to ``env.unwrapped``, every
attribute holding plain data (numbers, arrays, lists, NumPy generators) is stored and set back on a
freshly built env. That covers Gymnasium's classic-control tasks, the ebrl tasks and the
Monitor/TimeLimit wrappers. Attributes that are not plain data (e.g. a MuJoCo ``MjData``) are listed
under ``env_skipped`` and the resume of such an env is not exact.
"""

from __future__ import annotations

import io
import random
from collections import deque
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from ebrl.agents.common.plain import is_plain, to_plain
from ebrl.errors import NonFiniteError
from ebrl.experiments.checkpoints.directory import CheckpointDir, CheckpointError, decode, read_state
from ebrl.samplers import Sampler

COUNTERS = (
    "num_timesteps",
    "_n_updates",
    "_episode_num",
    "_n_calls",
    "_current_progress_remaining",
    "_total_timesteps",
    "_num_timesteps_at_start",
)
LAST = ("_last_obs", "_last_episode_starts", "_last_original_obs")
# State of the VecEnv wrappers zoo's env keys add (ebrl.experiments.zoo): running statistics of
# VecNormalize, the observation stack of VecFrameStack.
VEC_WRAPPER_STATE = {
    "VecNormalize": ("obs_rms.mean", "obs_rms.var", "obs_rms.count", "ret_rms.mean", "ret_rms.var",
                     "ret_rms.count", "returns"),
    "VecFrameStack": ("stacked_obs.stacked_obs",),
}
_ENV_SKIP = {
    "env",
    "_env",
    "observation_space",
    "action_space",
    "_observation_space",
    "_action_space",
    "spec",
    "_spec",
    "metadata",
    "render_mode",
    "unwrapped",
}


def _layers(env: Any) -> list[Any]:
    layers = [env]
    while hasattr(layers[-1], "env") and len(layers) < 64:
        layers.append(layers[-1].env)
    return layers


def capture_env(env: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """Plain attributes of each layer of ``env`` (outermost first), and the names skipped."""
    out, skipped = [], []
    for layer in _layers(env):
        attrs = {}
        for name, value in vars(layer).items():
            if name in _ENV_SKIP:
                continue
            if is_plain(value):
                attrs[name] = to_plain(value)
            else:
                skipped.append(f"{type(layer).__name__}.{name}")
        out.append({"type": type(layer).__name__, "attrs": attrs})
    return out, skipped


def restore_env(env: Any, layers: list[dict[str, Any]]) -> None:
    """Put the env's saved state (RNG states, wrappers' counters) back after a resume."""
    actual = _layers(env)
    if [type(x).__name__ for x in actual] != [x["type"] for x in layers]:
        raise CheckpointError(
            f"env wrappers {[type(x).__name__ for x in actual]} differ from the checkpoint's "
            f"{[x['type'] for x in layers]}"
        )
    for layer, saved in zip(actual, layers, strict=True):
        for name, value in saved["attrs"].items():
            setattr(layer, name, decode(value))


def _space_rng(space: Any) -> Any:
    rng = getattr(space, "_np_random", None)
    return None if rng is None else to_plain(rng)


def _sampler(model: BaseAlgorithm) -> Any:
    """The policy's MCMC sampler (whose public ``chains`` are the persistent chains), else None."""
    sampler = getattr(getattr(model.policy, "boltzmann", None), "sampler", None)
    return sampler if isinstance(sampler, Sampler) else None


def check_finite_params(params: dict[str, Any], where: str) -> None:
    """Raise :class:`NonFiniteError` naming the first tensor that holds NaN or inf."""

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise NonFiniteError(
                    f"{where}: {prefix} holds NaN or inf; refusing to write it to a checkpoint"
                )
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(value, (list, tuple)):
            for k, v in enumerate(value):
                walk(f"{prefix}[{k}]", v)

    walk("", params)


def capture(
    model: BaseAlgorithm, env_state: bool = True
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, buffer arrays, plain state)`` of ``model``; ``env_state=False`` marks the envs for a
    reset on resume (used when an env has just failed and its state cannot be trusted)."""
    _, variables = model._get_torch_save_params()
    sampler = _sampler(model)
    tensors = {
        "params": model.get_parameters(),
        "variables": {name: _getattr(model, name).detach().clone() for name in variables},
        "chains": None if sampler is None else sampler.state_dict()["chains"],
        "torch_rng": torch.get_rng_state(),
    }
    check_finite_params({"params": tensors["params"], "variables": tensors["variables"]}, "checkpoint")
    state: dict[str, Any] = {
        "algo": type(model).__name__,
        "counters": {k: getattr(model, k) for k in COUNTERS if hasattr(model, k)},
        "rng": {
            "python": to_plain(random.getstate()),
            "numpy": to_plain(np.random.get_state()),  # noqa: NPY002 (SB3 seeds the legacy global RNG)
            "action_space": _space_rng(model.action_space),
            "observation_space": _space_rng(model.observation_space),
        },
        "ep_info_buffer": to_plain(list(model.ep_info_buffer or [])),
        "ep_success_buffer": to_plain(list(model.ep_success_buffer or [])),
        "env_reset": not env_state,
    }
    if env_state:
        state["last"] = {k: to_plain(getattr(model, k, None)) for k in LAST}
        state["env"], state["env_skipped"] = _capture_vec_env(model.get_env())
    arrays: dict[str, np.ndarray] = {}
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None:
        filled = buffer.buffer_size if buffer.full else buffer.pos
        plain = {}
        for name, value in vars(buffer).items():
            if isinstance(value, np.ndarray):
                arrays[name] = value[:filled]
            elif name not in {"observation_space", "action_space", "device"} and is_plain(value):
                plain[name] = to_plain(value)
        state["buffer"] = {"class": type(buffer).__name__, "filled": int(filled), "attrs": plain}
    return tensors, arrays, state


def _vec_layers(venv: VecEnv) -> list[VecEnv]:
    """``venv`` and the VecEnvs it wraps (zoo's VecNormalize/VecFrameStack), outermost first."""
    layers = [venv]
    while isinstance(layers[-1], VecEnvWrapper):
        layers.append(layers[-1].venv)
    return layers


def _capture_vec_env(venv: VecEnv | None) -> tuple[dict[str, Any] | None, list[str]]:
    if venv is None:
        return None, []
    *wrappers, base = _vec_layers(venv)
    if not isinstance(base, DummyVecEnv):
        return None, ["env (only DummyVecEnv state is captured)"]
    envs, skipped = [], []
    for env in base.envs:
        layers, skip = capture_env(env)
        envs.append(layers)
        skipped += skip
    vec = {k: to_plain(v) for k, v in vars(base).items() if k in {"_seeds", "_options"} and is_plain(v)}
    saved = []
    for layer in wrappers:
        kind = type(layer).__name__
        if kind not in VEC_WRAPPER_STATE:
            skipped.append(f"{kind} (its state is not captured)")
        attrs = {name: to_plain(_getattr(layer, name)) for name in VEC_WRAPPER_STATE.get(kind, ())}
        saved.append({"type": kind, "attrs": attrs})
    return {"envs": envs, "vec": vec, "wrappers": saved}, sorted(set(skipped))


def _restore_vec_env(venv: VecEnv, saved: dict[str, Any]) -> None:
    *wrappers, base = _vec_layers(venv)
    if not isinstance(base, DummyVecEnv):
        return
    if len(base.envs) != len(saved["envs"]):
        raise CheckpointError(f"checkpoint has {len(saved['envs'])} envs, the run {len(base.envs)}")
    kinds = [type(w).__name__ for w in wrappers]
    if kinds != [w["type"] for w in saved.get("wrappers", [])]:
        raise CheckpointError(f"VecEnv wrappers {kinds} differ from the checkpoint's "
                              f"{[w['type'] for w in saved.get('wrappers', [])]}")
    for env, layers in zip(base.envs, saved["envs"], strict=True):
        restore_env(env, layers)
    for key, value in saved["vec"].items():
        setattr(base, key, decode(value))
    for layer, entry in zip(wrappers, saved.get("wrappers", []), strict=True):
        for name, value in entry["attrs"].items():
            owner, _, attr = name.rpartition(".")
            setattr(_getattr(layer, owner) if owner else layer, attr, decode(value))


def _getattr(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def restore(
    model: BaseAlgorithm, tensors: dict[str, Any], arrays: dict[str, np.ndarray], state: dict[str, Any]
) -> None:
    """Put a captured state back into ``model`` (built by the same config, same env)."""
    if state.get("algo") != type(model).__name__:
        raise CheckpointError(f"checkpoint is of algorithm {state.get('algo')!r}, not {type(model).__name__}")
    model.set_parameters(tensors["params"], exact_match=True, device=model.device)
    for name, value in tensors["variables"].items():
        _getattr(model, name).data.copy_(value)
    sampler = _sampler(model)
    if sampler is not None:
        sampler.load_state_dict({"chains": tensors.get("chains")}, device=model.device)
    for key, value in state["counters"].items():
        setattr(model, key, value)
    window = model._stats_window_size
    model.ep_info_buffer = deque(decode(state["ep_info_buffer"]), maxlen=window)
    model.ep_success_buffer = deque(decode(state["ep_success_buffer"]), maxlen=window)
    buffer = getattr(model, "replay_buffer", None)
    if buffer is not None and "buffer" in state:
        _restore_buffer(buffer, arrays, state["buffer"])
    if state.get("env_reset"):
        model._last_obs = None  # learn() resets the envs
    else:
        for key, value in state["last"].items():
            setattr(model, key, decode(value))
        venv = model.get_env()
        if state.get("env") is not None and venv is not None:
            _restore_vec_env(venv, state["env"])
    rng = state["rng"]
    random.setstate(decode(rng["python"]))
    np.random.set_state(decode(rng["numpy"]))  # noqa: NPY002
    torch.set_rng_state(tensors["torch_rng"])
    for name in ("action_space", "observation_space"):
        if rng.get(name) is not None:
            getattr(model, name)._np_random = decode(rng[name])


def _restore_buffer(buffer: Any, arrays: dict[str, np.ndarray], saved: dict[str, Any]) -> None:
    if saved["class"] != type(buffer).__name__:
        raise CheckpointError(
            f"checkpoint replay buffer is a {saved['class']}, the run's a {type(buffer).__name__}"
        )
    filled = saved["filled"]
    if filled > buffer.buffer_size:
        raise CheckpointError(
            f"checkpoint replay buffer holds {filled} transitions, more than buffer_size {buffer.buffer_size}"
        )
    for name, value in arrays.items():
        target = getattr(buffer, name)
        if target.shape[1:] != value.shape[1:] or target.dtype != value.dtype:
            raise CheckpointError(
                f"replay buffer array {name} has shape {value.shape[1:]} / {value.dtype} in the "
                f"checkpoint, {target.shape[1:]} / {target.dtype} in the run"
            )
        target[:filled] = value
    for name, value in saved["attrs"].items():
        setattr(buffer, name, decode(value))


# ----------------------------------------------------------------------------- whole checkpoints


def save_training_checkpoint(
    model: BaseAlgorithm,
    directory: CheckpointDir,
    extra: dict[str, Any] | None = None,
    env_state: bool = True,
) -> Path:
    """Write a resumable checkpoint of ``model`` (plus JSON-able ``extra``) atomically; return its folder."""
    tensors, arrays, state = capture(model, env_state=env_state)

    def write_params(f: IO[bytes]) -> None:
        torch.save(tensors, f)

    def write_buffer(f: IO[bytes]) -> None:
        np.savez(f, **arrays)

    state["extra"] = extra or {}
    return directory.save(model.num_timesteps, {"params.pt": write_params, "buffer.npz": write_buffer}, state)


def load_training_checkpoint(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, Any]]:
    """``(tensors, arrays, state)`` of a checkpoint folder, read without unpickling anything."""
    checkpoint = Path(checkpoint)
    state = read_state(checkpoint)
    try:
        data = (checkpoint / "params.pt").read_bytes()
        tensors = torch.load(io.BytesIO(data), map_location=get_device(device), weights_only=True)
        with np.load(checkpoint / "buffer.npz", allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, RuntimeError, ValueError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {checkpoint} is corrupt: {type(exc).__name__}: {exc}") from exc
    return tensors, arrays, state
