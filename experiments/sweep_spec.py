"""Sweep files: validate them completely (before Ray starts) and draw the configurations.

A sweep file names a base run (``algo``, ``env_id``, an optional rl-zoo ``config`` file relative to
the sweep file, ``total_timesteps``, fixed ``hyperparams``), a ``search`` space (``grid``,
``choice``, ``uniform``, ``loguniform``; ``policy_kwargs.search_steps`` reaches into a dict), the
``seeds`` (a list or a count), ``metric``/``mode`` (an ``eval/...`` column), ``num_samples``
(draws of the random dimensions, with ``search_seed``), an optional ASHA ``scheduler`` (in env
steps), per-trial ``resources`` (``cpu``, ``gpu`` fraction) and ``wandb_project``.

Configurations are drawn here, not by Tune: Tune re-samples random dimensions for every grid
variant, so with seeds as a grid dimension each seed would get a different learning rate and
"mean over seeds" would mean nothing.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ebrl.experiments.config import (
    ALGOS,
    DEFAULT_WANDB_PROJECT,
    RUN_KEYS,
    ConfigError,
    RunConfig,
    accepted_keys,
    algo_class,
    hyperparams_for_model,
    resolve,
    shipped_file,
)

SWEEP_KEYS = {"name", "algo", "env_id", "config", "total_timesteps", "device", "hyperparams", "search",
              "seeds", "metric", "mode", "num_samples", "search_seed", "scheduler", "resources",
              "wandb_project"}
DOMAINS = {"grid", "choice", "uniform", "loguniform"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor", "max_t"}
# run keys of a config file -> RunConfig fields (the rest of a search key is a constructor argument)
RUN_FIELDS = {"n_timesteps": "total_timesteps", **{k: k for k in RUN_KEYS - {"n_timesteps"}}}


@dataclass
class SweepSpec:
    """A validated sweep file: the base run, the drawn configurations and how to run them."""

    name: str
    base: RunConfig
    configs: list[dict[str, Any]]  # one parameter dict per configuration, ids c0, c1, ...
    seeds: list[int]
    metric: str = "eval/mean_reward"
    mode: str = "max"
    scheduler: dict[str, Any] | None = None
    cpus: float = 1.0
    gpus: float = 0.0
    wandb_project: str = DEFAULT_WANDB_PROJECT


def _number(key: str, value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` as a string; convert it as the config files do."""
    return hyperparams_for_model({key.split(".")[-1]: value})[key.split(".")[-1]]


def _check_domain(key: str, spec: Any, where: str) -> tuple[str, Any]:
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DOMAINS):
        raise ConfigError(f"{where}: search entry {key!r} must be one of {{grid|choice|uniform|loguniform: "
                          f"...}}, got {spec!r}")
    kind, values = next(iter(spec.items()))
    if kind in ("grid", "choice"):
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: search entry {key!r} needs a non-empty list for {kind}, "
                              f"got {values!r}")
        return kind, [_number(key, v) for v in values]
    bounds = [_number(key, v) for v in values] if isinstance(values, list) else []
    if len(bounds) != 2 or not all(isinstance(b, (int, float)) for b in bounds) or bounds[0] >= bounds[1]:
        raise ConfigError(f"{where}: search entry {key!r} needs [low, high] with low < high for {kind}, "
                          f"got {values!r}")
    if kind == "loguniform" and bounds[0] <= 0:
        raise ConfigError(f"{where}: search entry {key!r} needs low > 0 for loguniform, got {values!r}")
    return kind, [float(b) for b in bounds]


def draw_configs(search: dict[str, tuple[str, Any]], num_samples: int, seed: int) -> list[dict[str, Any]]:
    """The grid crossed with ``num_samples`` draws of the random dimensions (one draw without any)."""
    rng = np.random.default_rng(seed)
    grid = {k: v for k, (kind, v) in search.items() if kind == "grid"}
    random = {k: s for k, s in search.items() if s[0] != "grid"}
    configs = []
    for _ in range(num_samples if random else 1):
        drawn = {}
        for key, (kind, values) in random.items():
            if kind == "choice":
                drawn[key] = values[int(rng.integers(len(values)))]
            elif kind == "uniform":
                drawn[key] = float(rng.uniform(*values))
            else:
                drawn[key] = float(np.exp(rng.uniform(np.log(values[0]), np.log(values[1]))))
        for combo in itertools.product(*grid.values()):
            configs.append({**dict(zip(grid, combo, strict=True)), **drawn})
    return configs


def apply_params(base: RunConfig, params: dict[str, Any], seed: int | None = None) -> RunConfig:
    """``base`` with a configuration's parameters (run keys, constructor args, ``a.b`` into dicts)."""
    fields: dict[str, Any] = {}
    hyper = dict(base.hyperparams)
    for key, value in params.items():
        top, _, sub = key.partition(".")
        if top in RUN_FIELDS and not sub:
            fields[RUN_FIELDS[top]] = value
        elif sub and top in RUN_FIELDS:  # "env_kwargs.x": one entry of a dict-valued run key
            name = RUN_FIELDS[top]
            fields[name] = {**(fields.get(name) or getattr(base, name) or {}), sub: value}
        elif sub:  # "policy_kwargs.search_steps": new dicts, so that the base config is never mutated
            hyper[top] = {**(hyper.get(top) or {}), sub: value}
        else:
            hyper[key] = value
    return replace(base, hyperparams=hyper, seed=base.seed if seed is None else seed, **fields)


def parse_sweep(data: Any, source: Path, num_samples: int | None = None) -> SweepSpec:
    """Validate a sweep file's content (``source`` anchors relative paths); raise ConfigError."""
    where = f"sweep file {source}"
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping of {', '.join(sorted(SWEEP_KEYS))}")
    unknown = sorted(set(data) - SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (accepted: {', '.join(sorted(SWEEP_KEYS))})")
    for key in ("algo", "env_id"):
        if key not in data:
            raise ConfigError(f"{where}: missing {key!r}")
    if data["algo"] not in ALGOS:
        raise ConfigError(f"{where}: unknown algo {data['algo']!r}; accepted: {', '.join(ALGOS)}")
    config_file = data.get("config")
    if config_file is not None:
        config_file = (source.parent / config_file).resolve()
    base = resolve(data["algo"], data["env_id"], 0, data.get("total_timesteps"), config_file,
                   data.get("device", "auto"))
    allowed = accepted_keys(algo_class(data["algo"]))
    fixed, search = data.get("hyperparams") or {}, data.get("search") or {}
    for label, block in (("hyperparams", fixed), ("search", search)):
        if not isinstance(block, dict):
            raise ConfigError(f"{where}: {label!r} must be a mapping, got {block!r}")
        bad = sorted(k for k in block if str(k).split(".")[0] not in allowed)
        if bad:
            raise ConfigError(f"{where}: {label} key {bad[0]!r} is not accepted by algo {data['algo']!r} "
                              f"(accepted: {', '.join(sorted(allowed))})")
    if not search:
        raise ConfigError(f"{where}: the search space is empty; give at least one hyperparameter under "
                          "'search', e.g. alpha: {grid: [0.1, 1.0]}")
    base = apply_params(base, {k: _number(k, v) for k, v in fixed.items()})
    domains = {k: _check_domain(k, v, where) for k, v in search.items()}

    seeds = data.get("seeds", [0])
    seeds = list(range(seeds)) if isinstance(seeds, int) and not isinstance(seeds, bool) else seeds
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise ConfigError(f"{where}: seeds must be a non-empty list of integers or a count, got {seeds!r}")
    metric, mode = str(data.get("metric", "eval/mean_reward")), str(data.get("mode", "max"))
    if not metric.startswith("eval/") or mode not in ("max", "min"):
        raise ConfigError(f"{where}: metric must be an eval/... column and mode max or min, "
                          f"got {metric!r}, {mode!r}")
    samples = num_samples if num_samples is not None else data.get("num_samples", 1)
    if not isinstance(samples, int) or samples < 1:
        raise ConfigError(f"{where}: num_samples must be an integer >= 1, got {samples!r}")
    scheduler = data.get("scheduler")
    if scheduler is not None:
        if not isinstance(scheduler, dict) or scheduler.get("type") != "asha" \
                or set(scheduler) - SCHEDULER_KEYS:
            raise ConfigError(f"{where}: scheduler must be {{type: asha, grace_period, reduction_factor, "
                              f"max_t}} (steps), got {scheduler!r}")
        if base.eval_freq <= 0:
            raise ConfigError(f"{where}: an ASHA scheduler needs evaluations during training; "
                              "set hyperparams.eval_freq > 0")
    resources = data.get("resources") or {}
    cpus, gpus = resources.get("cpu", 1), resources.get("gpu", 0)
    if set(resources) - {"cpu", "gpu"} or not all(isinstance(v, (int, float)) for v in (cpus, gpus)) \
            or cpus <= 0 or gpus < 0:
        raise ConfigError(f"{where}: resources must be {{cpu: > 0, gpu: >= 0}} per trial, got {resources!r}")
    return SweepSpec(name=str(data.get("name", source.stem)), base=base,
                     configs=draw_configs(domains, samples, int(data.get("search_seed", 0))), seeds=seeds,
                     metric=metric, mode=mode, scheduler=scheduler, cpus=float(cpus), gpus=float(gpus),
                     wandb_project=str(data.get("wandb_project", DEFAULT_WANDB_PROJECT)))


def load_sweep(path: str | Path, num_samples: int | None = None) -> SweepSpec:
    """Read and validate a sweep file (no Ray needed): a path, or the name of a shipped one."""
    path = shipped_file("sweeps", path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"sweep file {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    return parse_sweep(data, path, num_samples)
