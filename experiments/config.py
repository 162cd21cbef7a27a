"""Algorithms, env ids and YAML hyperparameters: resolve and validate a run before anything is written.

Configs follow rl-baselines3-zoo: one YAML file per algorithm, keyed by env id (or ``default``),
each entry the algorithm's constructor arguments plus zoo's own keys (``n_timesteps``, ``policy``,
``n_envs``, ``env_kwargs``, and the env keys ``env_wrapper``, ``normalize``, ``frame_stack`` of
:mod:`ebrl.experiments.zoo`), so rl_zoo3 reads the same file. ebrl's run-level settings, which zoo
takes on its command line instead (``eval_freq``, ``n_eval_episodes``, ``checkpoint_freq``), live
in a separate top-level section, :data:`RUN_SECTION`, keyed by env id (older files that put them
in the entry still load). Numbers written like ``3e-4`` (a string to YAML 1.1) become floats,
``policy_kwargs`` may be a mapping or zoo's ``"dict(...)"`` string (:func:`parse_dict_call`),
``train_freq`` lists become tuples and ``"lin_<value>"`` learning rates linear schedules. Every key
is checked against the algorithm's signature, so a typo fails before the run directory exists.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import gymnasium as gym
import yaml

# name on the command line -> (module, class); imported lazily so that `ebrl --help` stays fast.
ALGOS: dict[str, tuple[str, str]] = {
    "sql": ("ebrl.agents", "SQL"),
    "discrete-sql": ("ebrl.agents", "DiscreteSQL"),
    "sac": ("stable_baselines3", "SAC"),
    "dqn": ("stable_baselines3", "DQN"),
}


@dataclass(frozen=True)
class Knob:
    """A run-level integer setting: its default, its lower bound, its help text, and whether
    ``ebrl train`` also has it as an option (``--checkpoint-freq``) that overrides the config file.
    Declared once, as a :class:`RunConfig` field (:func:`knob`); :data:`RUN_KNOBS` collects them,
    and the accepted config keys, the checks in :func:`resolve` and the command-line options all
    come from there."""

    default: int
    minimum: int
    help: str
    cli: bool = False


def knob(default: int, minimum: int, help: str, cli: bool = False) -> Any:
    """A :class:`RunConfig` field that is a run-level knob (see :class:`Knob`)."""
    return field(default=default, metadata={"knob": Knob(default, minimum, help, cli)})


# Set by the command line or by the run itself, never by a config file.
RESERVED = {"env", "seed", "device", "verbose", "tensorboard_log", "_init_setup_model"}
DEFAULT_TIMESTEPS = 10_000
# Top-level section of a config file with ebrl's run settings per env id (invisible to rl_zoo3).
RUN_SECTION = "ebrl_run"
DEFAULT_WANDB_PROJECT = "ebrl"


class ConfigError(ValueError):
    """Bad user input found while resolving a run (reported as one line, exit code 2)."""


@dataclass
class RunConfig:
    """Everything a run needs, as saved to ``config.yaml`` in the run directory; the :func:`knob`
    fields are the run-level knobs (their one declaration)."""

    algo: str
    env_id: str
    seed: int
    total_timesteps: int
    device: str = "auto"
    policy: str = "MlpPolicy"
    n_envs: int = knob(1, 1, "parallel envs (DummyVecEnv)")
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_freq: int = knob(0, 0, "env steps between evaluations during training (0: none)")
    n_eval_episodes: int = knob(20, 1, "episodes per evaluation")
    hyperparams: dict[str, Any] = field(default_factory=dict)
    # zoo's env keys as given (env_wrapper, normalize, frame_stack; see ebrl.experiments.zoo)
    wrappers: dict[str, Any] = field(default_factory=dict)
    config_file: str | None = None
    checkpoint_freq: int = knob(5_000, 0, "env steps between resumable checkpoints (0: only on stop)",
                                cli=True)

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))


RUN_KNOBS: dict[str, Knob] = {f.name: f.metadata["knob"] for f in fields(RunConfig) if "knob" in f.metadata}
# Run-level config keys (not constructor arguments): the knobs, the budget, the policy and env kwargs.
RUN_KEYS = {"n_timesteps", "policy", "env_kwargs", *RUN_KNOBS}


def plain(value: Any) -> Any:
    """YAML/JSON-safe copy: tuples become lists, and objects that are not plain data (classes,
    schedules) are written by name."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return getattr(value, "__name__", type(value).__name__)


def algo_class(algo: str) -> type:
    """The SB3 algorithm class for a command-line name."""
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; accepted: {', '.join(ALGOS)}")
    module, name = ALGOS[algo]
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"algo {algo!r} is not available in this install ({exc})") from exc


def check_env_id(env_id: str) -> None:
    """Fail unless gymnasium knows ``env_id`` (after ``import ebrl.envs`` registered the ebrl ids)."""
    import ebrl.envs  # noqa: F401  (registers ebrl/...)

    if env_id not in gym.registry:
        close = [k for k in gym.registry if env_id.lower().split("/")[-1][:4] in k.lower()][:5]
        hint = f"; did you mean one of: {', '.join(close)}" if close else ""
        raise ConfigError(f"unknown env id {env_id!r}{hint}")


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _convert(key: str, value: Any) -> Any:
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        number = float(value)
        integral = number.is_integer() and "." not in value  # "1e5" -> 100000 (a buffer size)
        return int(number) if integral else number
    if key == "policy_kwargs" and isinstance(value, str):
        return parse_dict_call(value)
    if key == "train_freq" and isinstance(value, list):
        return tuple(value)
    if isinstance(value, dict):
        return {k: _convert(k, v) for k, v in value.items()}
    return value


def parse_dict_call(text: str, what: str = "policy_kwargs") -> dict[str, Any]:
    """Zoo's ``"dict(net_arch=[64, 64])"`` (``dict(...)`` calls may nest) or a ``{...}`` literal,
    parsed without ``eval``; anything else raises :class:`ConfigError` naming ``what``."""

    def value(node: ast.expr) -> Any:
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
            if node.args or any(kw.arg is None for kw in node.keywords):
                raise ValueError("dict() takes only key=value arguments")
            return {kw.arg: value(kw.value) for kw in node.keywords}
        return ast.literal_eval(node)

    try:
        out = value(ast.parse(text.strip(), mode="eval").body)
        if not isinstance(out, dict):
            raise ValueError
        return out
    except (SyntaxError, ValueError) as exc:
        raise ConfigError(f"{what} must be a mapping or 'dict(key=literal, ...)', got {text!r}") from exc


def accepted_keys(cls: type) -> set[str]:
    """Constructor arguments of an algorithm class that a config may set."""
    from ebrl.experiments.zoo import ZOO_ENV_KEYS

    params = inspect.signature(cls.__init__).parameters
    return {p for p in params if p not in {"self", "policy", *RESERVED}} | RUN_KEYS | set(ZOO_ENV_KEYS)


SHIPPED = {"configs": "config file", "sweeps": "sweep file"}


def shipped_file(kind: str, name: str | Path) -> Path:
    """The YAML file ``name`` names: a path that exists, else one shipped with ebrl (package data
    under ``experiments/<kind>/``) by its name (``sql``, ``sql.yaml``) or by a repository path
    (``experiments/configs/sql.yaml`` from any folder). ``kind``: ``"configs"`` or ``"sweeps"``."""
    path = Path(name)
    if path.is_file():
        return path
    folder = Path(str(resources.files("ebrl.experiments"))) / kind
    stem = path.name.removesuffix(".yaml")
    candidate = folder / f"{stem}.yaml"
    if path.parent in (Path("."), Path(kind), Path("experiments") / kind) and candidate.is_file():
        return candidate
    names = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
    raise ConfigError(f"{SHIPPED[kind]} not found: {name} (give a path, or the name of one shipped "
                      f"with ebrl: {names})")


def load_hyperparams(config_file: str | Path | None, env_id: str) -> dict[str, Any]:
    """The config file's entry for ``env_id`` (empty without a file); ``config_file`` is a path
    or the name of a shipped config (:func:`shipped_file`)."""
    if config_file is None:
        return {}
    path = shipped_file("configs", config_file)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must map env ids to hyperparameters")
    key = env_id if env_id in data else "default"
    if key not in data:
        known = ", ".join(str(k) for k in data if k != RUN_SECTION)
        raise ConfigError(f"config file {path} has no entry for env id {env_id!r} (it has: {known})")
    entry = data[key] or {}
    run = (data.get(RUN_SECTION) or {}).get(key) or {}
    for name, value in (("entry", entry), (f"{RUN_SECTION} entry", run)):
        if not isinstance(value, dict):
            raise ConfigError(
                f"config {name} {key!r} in {path} must be a mapping, got {type(value).__name__}")
    misplaced = sorted(set(run) - set(RUN_KNOBS))
    if misplaced:
        raise ConfigError(f"config key {misplaced[0]!r} under {RUN_SECTION} in {path} is not a run setting "
                          f"(accepted there: {', '.join(RUN_KNOBS)})")
    return {k: _convert(k, v) for k, v in {**entry, **run}.items()}


def resolve(
    algo: str,
    env_id: str,
    seed: int,
    total_timesteps: int | None = None,
    config_file: str | Path | None = None,
    device: str = RunConfig.device,
    knobs: Mapping[str, int | None] | None = None,
) -> RunConfig:
    """Check the algo, env id and config keys, and merge file and command line (command line wins:
    ``total_timesteps`` and ``knobs``, the values given for :data:`RUN_KNOBS` with ``cli=True``,
    here ``checkpoint_freq``; None means not given)."""
    from ebrl.experiments.zoo import ZOO_ENV_KEYS, ZooEnvKeys, parse_schedule

    cls = algo_class(algo)
    check_env_id(env_id)
    params = load_hyperparams(config_file, env_id)
    allowed = accepted_keys(cls)
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"config key {unknown[0]!r} is not accepted by algo {algo!r} "
            f"(accepted: {', '.join(sorted(allowed))})"
        )
    run = {k: params.pop(k) for k in list(params) if k in RUN_KEYS}
    steps = total_timesteps if total_timesteps is not None else run.get("n_timesteps", DEFAULT_TIMESTEPS)
    if not isinstance(steps, int) and not (isinstance(steps, float) and steps.is_integer()):
        raise ConfigError(f"total timesteps must be an integer, got {steps!r}")
    if int(steps) < 1:
        raise ConfigError(f"total timesteps must be >= 1, got {steps}")
    for name, value in (knobs or {}).items():
        if name not in RUN_KNOBS or not RUN_KNOBS[name].cli:
            raise ConfigError(f"{name!r} is not a command-line knob ({', '.join(cli_knobs())})")
        if value is not None:
            run[name] = value
    knobs = {name: run.get(name, knob.default) for name, knob in RUN_KNOBS.items()}
    for name, value in knobs.items():
        least = RUN_KNOBS[name].minimum
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} ({RUN_KNOBS[name].help}) must be an integer >= {least}, got {value!r}")
    env_kwargs = run.get("env_kwargs")
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ConfigError(f"env_kwargs must be a mapping, got {env_kwargs!r}")
    wrappers = {k: params.pop(k) for k in list(params) if k in ZOO_ENV_KEYS}
    ZooEnvKeys.from_config(wrappers)  # checked now, before anything is written
    for key, value in params.items():
        parse_schedule(key, value)
    return RunConfig(
        algo=algo,
        env_id=env_id,
        seed=int(seed),
        total_timesteps=int(steps),
        device=device,
        policy=str(run.get("policy", RunConfig.policy)),
        env_kwargs=dict(run.get("env_kwargs") or {}),
        hyperparams=params,
        wrappers=wrappers,
        config_file=str(config_file) if config_file is not None else None,
        **knobs,
    )


def cli_knobs() -> list[str]:
    """The :data:`RUN_KNOBS` that ``ebrl train`` also takes as options."""
    return [name for name, knob in RUN_KNOBS.items() if knob.cli]


def hyperparams_for_model(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """Config values as the algorithm wants them (``train_freq`` lists back to tuples, zoo's
    ``"lin_<value>"`` learning rates to :class:`~ebrl.experiments.zoo.LinearSchedule`)."""
    from ebrl.experiments.zoo import parse_schedule

    return {k: parse_schedule(k, _convert(k, v)) for k, v in hyperparams.items()}


def load_run_config(run_dir: str | Path, require_model: bool = True) -> RunConfig:
    """Read a run's ``config.yaml``; a directory that is not a run raises :class:`ConfigError`.

    ``require_model=False`` accepts a run that has not finished (no ``model.zip`` yet), for resuming.
    """
    run_dir = Path(run_dir)
    path = run_dir / "config.yaml"
    if not run_dir.is_dir():
        raise ConfigError(f"not a run directory: {run_dir} does not exist")
    if not path.is_file() or (require_model and not (run_dir / "model.zip").is_file()):
        needs = "config.yaml and model.zip" if require_model else "config.yaml"
        raise ConfigError(f"not a run directory: {run_dir} has no {needs} (made by `ebrl train`)")
    try:
        data = yaml.safe_load(path.read_text())
        return RunConfig(**data)
    except (yaml.YAMLError, TypeError) as exc:
        raise ConfigError(f"not a run directory: {path} is not an ebrl run config ({exc})") from exc


def positive_int(text: str) -> int:
    """argparse type of every count option (threads, timesteps, episodes, samples): an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value
