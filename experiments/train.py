"""`ebrl train`: build env and model, train with a progress bar, evaluate, save everything in a run dir.

A run directory ``runs/<env>__<algo>__<seed>__<time>/`` holds ``model.zip``, ``config.yaml`` (the
resolved config), ``metrics.csv`` (SB3's CSV log: ``train/``, ``rollout/``, ``sampler/``,
``eval/`` columns), ``summary.json`` (the final evaluation) and ``plots/``. The model is built
before the directory exists, so a bad hyperparameter leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, HumanOutputFormat, Logger

from experiments.config import ConfigError, RunConfig, algo_class, hyperparams_for_model
from experiments.evaluate import GoalEvalCallback, evaluate, log_eval
from experiments.run_dir import plot_run, run_name


def build_model(cfg: RunConfig, verbose: int = 0) -> BaseAlgorithm:
    """The algorithm on its vectorised env (Monitor-wrapped, seeded); raises ConfigError on bad values."""
    import envs  # noqa: F401  (registers ebrl/...)

    cls = algo_class(cfg.algo)
    try:
        env = make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs)
        return cls(cfg.policy, env, seed=cfg.seed, device=cfg.device, verbose=verbose,
                   **hyperparams_for_model(cfg.hyperparams))
    except (ValueError, TypeError, AssertionError, KeyError, RuntimeError) as exc:  # RuntimeError: bad device
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{cfg.algo} on {cfg.env_id} rejected the config: {first}") from exc


def new_run_dir(root: str | Path, cfg: RunConfig) -> Path:
    """Create a fresh, never-existing run directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = run_name(cfg.env_id, cfg.algo, cfg.seed, time.strftime("%Y%m%d-%H%M%S"))
    for k in range(1000):
        path = root / (base if k == 0 else f"{base}-{k}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise ConfigError(f"could not create a fresh run directory under {root}")


def _wandb_start(cfg: RunConfig, run_dir: Path, project: str, logger: Logger) -> Any:
    from agents.wandb_logger import attach, init_wandb

    run = init_wandb(cfg.to_dict(), project=project, name=run_dir.name,
                     directory=os.environ.get("WANDB_DIR") or run_dir)
    if run is not None:
        attach(logger, run)
    return run


def train(
    cfg: RunConfig,
    runs_dir: str | Path = "runs",
    track: bool = False,
    wandb_project: str = "ebrl",
    progress_bar: bool = True,
    verbose: int = 0,
) -> Path:
    """Train, evaluate, plot, and return the run directory (see the module docstring)."""
    model = build_model(cfg, verbose=verbose)
    run_dir = new_run_dir(runs_dir, cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    formats: list[Any] = [CSVOutputFormat(str(run_dir / "metrics.csv"))]
    if verbose:
        formats.append(HumanOutputFormat(sys.stdout))
    logger = Logger(str(run_dir), formats)
    model.set_logger(logger)
    wandb_run = _wandb_start(cfg, run_dir, wandb_project, logger) if track else None

    callback = None
    if cfg.eval_freq > 0:
        callback = GoalEvalCallback(cfg.env_id, cfg.eval_freq, cfg.n_eval_episodes, cfg.seed, cfg.env_kwargs)
    start = time.perf_counter()
    model.learn(cfg.total_timesteps, callback=callback, progress_bar=progress_bar)
    train_s = time.perf_counter() - start
    model.save(run_dir / "model.zip")

    result = evaluate(model, cfg.env_id, cfg.n_eval_episodes, seed=cfg.seed + 10_000,
                      deterministic=False, env_kwargs=cfg.env_kwargs)
    log_eval(logger, result, model.num_timesteps)
    summary = {"algo": cfg.algo, "env_id": cfg.env_id, "seed": cfg.seed, "timesteps": model.num_timesteps,
               "train_seconds": round(train_s, 1), "final_eval_stochastic": result.summary()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    images = plot_run(run_dir, model=model, result=result)
    logger.close()

    sync = None
    if wandb_run is not None:
        from agents.wandb_logger import finish_wandb

        sync = finish_wandb(wandb_run, {p.stem: str(p) for p in images}, str(run_dir / "model.zip"))
    print_summary(summary, run_dir, images, sync)
    return run_dir


def print_summary(summary: dict[str, Any], run_dir: Path, images: list[Path], sync: str | None) -> None:
    ev = summary["final_eval_stochastic"]
    print(f"\n{summary['algo']} on {summary['env_id']} (seed {summary['seed']}): "
          f"{summary['timesteps']} steps in {summary['train_seconds']} s")
    print(f"  evaluation over {ev['episodes']} stochastic episodes: "
          f"return {ev['mean_return']:.1f} ± {ev['std_return']:.1f}, length {ev['mean_length']:.1f}")
    if "goal_fractions" in ev:
        fractions = "  ".join(f"goal {k}: {f:.0%}" for k, f in enumerate(ev["goal_fractions"]))
        reached = sum(f > 0 for f in ev["goal_fractions"])
        print(f"  reached a goal in {ev['success_rate']:.0%} of episodes; {fractions}")
        print(f"  goals reached: {reached} of {len(ev['goal_fractions'])}; goal entropy "
              f"{ev['goal_entropy']:.2f} (max {ev['goal_entropy_max']:.2f})")
    if "crash_rate" in ev:
        print(f"  crashed in {ev['crash_rate']:.0%} of episodes")
    print(f"run saved in {run_dir}/ (model.zip, config.yaml, metrics.csv, summary.json)")
    for p in images:
        print(f"  plot: {p}")
    if sync:
        print(f"W&B run stored offline; upload it later with: {sync}")
