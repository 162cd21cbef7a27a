"""Save and load stable-baselines3 model zips without running code stored in the file.

SB3's zip holds ``data`` (JSON; entries that JSON cannot hold are cloudpickled and base64-encoded:
spaces, the policy class, schedules, ``train_freq``, the last observations), ``*.pth`` tensors
(loaded by SB3 with ``weights_only=True``) and ``_stable_baselines3_version``. Unpickling runs
arbitrary code, so :func:`safe_load` never unpickles: it checks the file first (a readable zip with
intact checksums, the SB3 major version, the algorithm, the ebrl format, the spaces against the
given env) and then hands SB3 a replacement for every pickled entry, rebuilt from plain data:

- spaces, ``train_freq``, the learning rate and the policy/replay-buffer classes from the
  ``ebrl.json`` entry that :func:`save_model` adds (plain JSON), else from the readable fields SB3
  writes next to each pickled entry (Box bounds, Discrete ``n``, class module and docstring);
- classes only by looking up allow-listed modules (``ebrl.agents``, ``stable_baselines3``; files
  saved before the rename say ``agents``) that are already installed, never from the file;
- state that ``_setup_model`` rebuilds anyway (schedules) or that a loaded model does not need
  (last observations, episode statistics) as None.

An entry that cannot be rebuilt (a callable learning rate with no plain value, a class in
policy_kwargs) fails with :class:`UnsafeModelError`, naming the opt-in ``allow_pickle=True``."""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import stable_baselines3
import torch
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.type_aliases import TrainFreq, TrainFrequencyUnit

from ebrl.agents.common.plain import from_plain, to_plain
from ebrl.atomic import atomic_write_bytes

META = "ebrl.json"
FORMAT = 1
TRUSTED_MODULES = ("ebrl.agents.", "stable_baselines3.", "sb3_contrib.")


def _current_module(module: str | None) -> str | None:
    """A class's module as installed now: files saved before the rename say ``agents.<...>``."""
    return "ebrl." + module if module is not None and module.startswith("agents.") else module
# Pickled entries that _setup_model rebuilds, or that a freshly loaded model does not need.
REBUILT = {
    "lr_schedule", "exploration_schedule", "_last_obs", "_last_episode_starts", "_last_original_obs",
    "ep_info_buffer", "ep_success_buffer", "replay_buffer_class", "action_noise",
}  # fmt: skip
OPT_IN = (
    "pass allow_pickle=True (command line: --allow-pickle) only if you trust the file: loading "
    "pickled entries runs code stored in it"
)


class ModelFileError(ValueError):
    """A model file that is corrupt, truncated, of another algorithm or version, or does not fit the env."""


class UnsafeModelError(ModelFileError):
    """A model file whose loading would unpickle (run) code, and the caller did not opt in."""


def _ebrl_version() -> str:
    try:
        return importlib.metadata.version("ebrl")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _class_name(cls: type | None) -> str | None:
    return None if cls is None else f"{cls.__module__}:{cls.__qualname__}"


def space_to_plain(space: spaces.Space) -> dict[str, Any] | None:
    """A plain description of the flat spaces (Box, Discrete, MultiDiscrete, MultiBinary), else None."""
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": to_plain(space.low),
            "high": to_plain(space.high),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": to_plain(space.nvec), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": to_plain(np.asarray(space.n))}
    return None


def space_from_plain(obj: dict[str, Any]) -> spaces.Space:
    """The Gymnasium space described by :func:`space_to_plain`'s output (no unpickling)."""
    kind = obj["type"]
    if kind == "Box":
        return spaces.Box(from_plain(obj["low"]), from_plain(obj["high"]), dtype=np.dtype(obj["dtype"]))
    if kind == "Discrete":
        return spaces.Discrete(obj["n"], start=obj["start"])
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(from_plain(obj["nvec"]), dtype=np.dtype(obj["dtype"]))
    if kind == "MultiBinary":
        n = from_plain(obj["n"])
        return spaces.MultiBinary(int(n) if np.ndim(n) == 0 else n.tolist())
    raise ModelFileError(f"unknown space type {kind!r} in model metadata")


def _numbers(text: str, dtype: str) -> np.ndarray:
    if "..." in text:
        raise ValueError("summarised array")
    return np.array(text.replace("[", " ").replace("]", " ").split(), dtype=np.dtype(dtype))


def _space_from_readable(entry: dict[str, Any]) -> spaces.Space | None:
    """Rebuild a space from the readable fields SB3 writes beside the pickled one (None if impossible)."""
    kind = str(entry.get(":type:", ""))
    try:
        if "spaces.box.Box" in kind:
            shape = tuple(entry["_shape"])
            low, high = (_numbers(entry[k], entry["dtype"]).reshape(shape) for k in ("low", "high"))
            return spaces.Box(low, high, dtype=np.dtype(entry["dtype"]))
        if "spaces.discrete.Discrete" in kind:
            return spaces.Discrete(int(entry["n"]), start=int(entry.get("start", 0)))
        if "spaces.multi_discrete.MultiDiscrete" in kind:
            return spaces.MultiDiscrete(_numbers(entry["nvec"], entry.get("dtype", "int64")))
        if "spaces.multi_binary.MultiBinary" in kind:
            return spaces.MultiBinary(int(entry["n"]))
    except (KeyError, ValueError, TypeError):
        return None
    return None


def _trusted_class(name: str | None, base: type) -> type | None:
    if not name or ":" not in name:
        return None
    module, qualname = name.split(":", 1)
    module = str(_current_module(module))
    if not module.startswith(TRUSTED_MODULES):
        return None
    try:
        obj: Any = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj if isinstance(obj, type) and issubclass(obj, base) else None


def _class_by_readable(entry: dict[str, Any], candidates: list[type]) -> type | None:
    """The one candidate whose module and docstring match SB3's readable fields."""
    module = _current_module(entry.get("__module__"))
    found = {c for c in candidates if c.__module__ == module and c.__doc__ == entry.get("__doc__")}
    return found.pop() if len(found) == 1 else None


def save_model(model: BaseAlgorithm, path: str | Path) -> Path:
    """``model.save`` written atomically, plus an ``ebrl.json`` entry of plain metadata; see safe_load."""
    path = Path(path)
    if not path.suffix:
        path = path.with_suffix(".zip")
    buffer = io.BytesIO()
    model.save(buffer)
    train_freq = getattr(model, "train_freq", None)
    lr = model.learning_rate
    meta = {
        "ebrl_format": FORMAT,
        "ebrl_version": _ebrl_version(),
        "algo": type(model).__name__,
        "algo_class": _class_name(type(model)),
        "policy_class": _class_name(model.policy_class),
        "replay_buffer_class": _class_name(getattr(model, "replay_buffer_class", None)),
        "observation_space": space_to_plain(model.observation_space),
        "action_space": space_to_plain(model.action_space),
        "train_freq": [int(train_freq.frequency), train_freq.unit.value]
        if isinstance(train_freq, TrainFreq)
        else None,
        "learning_rate": float(lr) if isinstance(lr, (int, float)) else None,
    }
    with zipfile.ZipFile(buffer, "a") as archive:
        archive.writestr(META, json.dumps(meta, indent=1))
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _resolve(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise TypeError(f"path must be a str or pathlib.Path to a model .zip, got {type(path).__name__}")
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".zip").exists():
        path = path.with_name(path.name + ".zip")
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path


def inspect_model_file(path: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Read and check a model zip without unpickling: ``(data JSON, ebrl metadata or None, SB3 version)``."""
    path = _resolve(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ModelFileError(f"model file {path} is corrupt: entry {bad!r} fails its checksum")
            names = set(archive.namelist())
            missing = sorted({"data", "policy.pth"} - names)
            if missing:
                raise ModelFileError(
                    f"model file {path} is truncated or corrupt, or not a stable-baselines3/ebrl "
                    f"model: it has no {', '.join(missing)} entry"
                )
            data = json.loads(archive.read("data"))
            meta = json.loads(archive.read(META)) if META in names else None
            version = (
                archive.read("_stable_baselines3_version").decode().strip()
                if "_stable_baselines3_version" in names
                else "unknown"
            )
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ModelFileError(
            f"model file {path} is truncated or corrupt (not a readable zip: {exc})"
        ) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"model file {path} is corrupt: its data entry is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ModelFileError(f"model file {path} is corrupt: its data entry is not a JSON object")
    return data, meta, version


def _check_compatible(
    cls: type[BaseAlgorithm], path: Path, data: dict[str, Any], meta: dict[str, Any] | None, version: str
) -> None:
    installed = stable_baselines3.__version__
    if version != "unknown" and version.split(".")[0] != installed.split(".")[0]:
        raise ModelFileError(
            f"model file {path} was written by stable-baselines3 {version}; the installed "
            f"{installed} cannot read it (major versions differ)"
        )
    if meta is not None:
        fmt = meta.get("ebrl_format")
        if not isinstance(fmt, int) or fmt > FORMAT:
            raise ModelFileError(
                f"model file {path} was written by ebrl {meta.get('ebrl_version')} (model format "
                f"{fmt!r}); this ebrl {_ebrl_version()} reads format {FORMAT}: upgrade ebrl"
            )
        if meta.get("algo") != cls.__name__:
            raise ModelFileError(
                f"model file {path} holds a {meta.get('algo')} model, not {cls.__name__}: "
                f"load it with {meta.get('algo')}.load"
            )
        return
    entry = data.get("policy_class")
    module = _current_module(entry.get("__module__")) if isinstance(entry, dict) else None
    expected = {c.__module__ for c in getattr(cls, "policy_aliases", {}).values()}
    if module is not None and expected and module not in expected:
        raise ModelFileError(
            f"model file {path} holds a model of another algorithm (its policy comes from "
            f"{module}); {cls.__name__} expects a policy from {', '.join(sorted(expected))}"
        )


def _stored_spaces(data: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, spaces.Space | None]:
    out: dict[str, spaces.Space | None] = {}
    for key in ("observation_space", "action_space"):
        if meta is not None and meta.get(key):
            out[key] = space_from_plain(meta[key])
        elif isinstance(data.get(key), dict):
            out[key] = _space_from_readable(data[key])
        else:
            out[key] = None
    return out


def _check_env_spaces(path: Path, stored: dict[str, spaces.Space | None], env: Any) -> None:
    for key, space in stored.items():
        actual = getattr(env, key)
        if space is not None and space != actual:
            raise ModelFileError(f"{key} of the env ({actual}) does not match the model's {space} in {path}")


def _rebuild(
    cls: type[BaseAlgorithm],
    path: Path,
    data: dict[str, Any],
    meta: dict[str, Any] | None,
    stored: dict[str, spaces.Space | None],
    env: Any,
) -> dict[str, Any]:
    from stable_baselines3.common import buffers
    from stable_baselines3.common.policies import BasePolicy

    meta = meta or {}
    out: dict[str, Any] = {}
    refused = []
    for key, entry in data.items():
        if not (isinstance(entry, dict) and ":serialized:" in entry):
            continue
        if key in ("observation_space", "action_space"):
            value = stored[key] if stored[key] is not None else getattr(env, key, None)
        elif key == "policy_class":
            value = _trusted_class(meta.get("policy_class"), BasePolicy) or _class_by_readable(
                entry, list(getattr(cls, "policy_aliases", {}).values())
            )
        elif key == "replay_buffer_class":
            candidates = [
                c for c in vars(buffers).values() if isinstance(c, type) and issubclass(c, buffers.BaseBuffer)
            ]
            value = _trusted_class(meta.get("replay_buffer_class"), buffers.BaseBuffer) or _class_by_readable(
                entry, candidates
            )
        elif key == "train_freq":
            value = _train_freq(cls, meta)
        elif key == "learning_rate":
            value = meta.get("learning_rate") or _optimizer_lr(cls, path)
            warnings.warn(
                f"{path}: the learning-rate schedule is pickled code; continuing training with the "
                f"constant rate {value} (or {OPT_IN})",
                stacklevel=3,
            )
        elif key in REBUILT:
            value = None
        else:
            refused.append(key)
            continue
        if value is None and key not in REBUILT:
            refused.append(key)
        out[key] = value
    if refused:
        raise UnsafeModelError(
            f"model file {path} stores {', '.join(sorted(refused))} only as pickled Python "
            f"objects that ebrl cannot rebuild from plain data; {OPT_IN}, or pass "
            f"custom_objects={{...}} with their values"
        )
    return out


def _train_freq(cls: type[BaseAlgorithm], meta: dict[str, Any]) -> TrainFreq:
    saved = meta.get("train_freq")
    if saved:
        return TrainFreq(int(saved[0]), TrainFrequencyUnit(saved[1]))
    default = inspect.signature(cls.__init__).parameters["train_freq"].default
    warnings.warn(
        f"train_freq is stored only pickled; using {cls.__name__}'s default {default!r}", stacklevel=4
    )
    freq, unit = (default, "step") if isinstance(default, int) else default
    return TrainFreq(int(freq), TrainFrequencyUnit(unit))


def _optimizer_lr(cls: type[BaseAlgorithm], path: Path) -> float:
    with zipfile.ZipFile(path) as archive:  # no saved optimiser: the class's default rate
        if "policy.optimizer.pth" not in archive.namelist():
            return float(inspect.signature(cls.__init__).parameters["learning_rate"].default)
        state = torch.load(io.BytesIO(archive.read("policy.optimizer.pth")), weights_only=True)
    return float(state["param_groups"][0]["lr"])


def safe_load(
    cls: type[BaseAlgorithm],
    path: str | Path,
    env: Any = None,
    device: str | torch.device = "auto",
    allow_pickle: bool = False,
    custom_objects: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BaseAlgorithm:
    """``cls.load(path, env, device)`` after checking the file, without unpickling unless ``allow_pickle``.

    Raises ``FileNotFoundError`` (no file), :class:`ModelFileError` (corrupt or truncated, another
    algorithm, an incompatible SB3 or ebrl version, spaces that do not match ``env``) and
    :class:`UnsafeModelError` (pickled entries ebrl cannot rebuild, without ``allow_pickle``).
    """
    if not (isinstance(cls, type) and issubclass(cls, BaseAlgorithm)):
        raise TypeError(f"cls must be a stable-baselines3 algorithm class, got {cls!r}")
    if not isinstance(allow_pickle, bool):
        raise TypeError(f"allow_pickle must be a bool, got {allow_pickle!r}")
    path = _resolve(path)
    data, meta, version = inspect_model_file(path)
    _check_compatible(cls, path, data, meta, version)
    stored = _stored_spaces(data, meta)
    if env is not None:
        from stable_baselines3.common.vec_env import VecEnv

        if not (isinstance(env, VecEnv) or hasattr(env, "observation_space")):
            raise TypeError(f"env must be a gymnasium Env or an SB3 VecEnv, got {type(env).__name__}")
        _check_env_spaces(path, stored, env)
    objects = {} if allow_pickle else _rebuild(cls, path, data, meta, stored, env)
    objects.update(custom_objects or {})
    try:
        return cls.load(path, env=env, device=device, custom_objects=objects, **kwargs)
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(
            f"model file {path} does not fit {cls.__name__}: {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc

