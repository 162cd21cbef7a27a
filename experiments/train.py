"""`ebrl train`: build env and model, train with a progress bar, evaluate, save everything in a run dir.

A run directory ``runs/<env>__<algo>__<seed>__<time>/`` holds ``model.zip``, ``config.yaml`` (the
resolved config), ``metrics.csv`` (SB3's CSV log: ``train/``, ``rollout/``, ``sampler/``,
``eval/`` columns), ``summary.json`` (the final evaluation), ``plots/`` and ``checkpoints/``
(resumable checkpoints, see :mod:`ebrl.experiments.faults`). The model is built before the directory
exists, so a bad hyperparameter leaves nothing behind.

Interruption: SIGINT/SIGTERM, or an env that raises, end the run with a checkpoint and a
:class:`TrainingInterrupted` carrying the resume command; :func:`resume` (``ebrl train --resume
RUN_DIR``) continues from the latest checkpoint with the same model, optimisers, replay buffer,
RNG states, counters, envs and W&B run id.
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import CSVOutputFormat, HumanOutputFormat, Logger

from ebrl.agents.common.safe_load import save_model
from ebrl.experiments.checkpoints import CheckpointDir, load_training_checkpoint, restore
from ebrl.experiments.config import (
    DEFAULT_WANDB_PROJECT,
    ConfigError,
    RunConfig,
    algo_class,
    hyperparams_for_model,
    load_run_config,
    plain,
)
from ebrl.experiments.evaluate import GoalEvalCallback, evaluate, log_eval
from ebrl.experiments.faults import (
    CheckpointCallback,
    EnvFailure,
    EnvFailureReporter,
    StopRequest,
    stop_on_signals,
)
from ebrl.experiments.run_dir import plot_run, run_name
from ebrl.experiments.zoo import NORMALIZER_FILE, ZooEnvKeys, eval_obs


def build_model(cfg: RunConfig, verbose: int = 0) -> BaseAlgorithm:
    """The algorithm on its vectorised env (Monitor-wrapped, seeded); raises ConfigError on bad values."""
    import ebrl.envs  # noqa: F401  (registers ebrl/...)

    cls = algo_class(cfg.algo)
    zoo = ZooEnvKeys.from_config(cfg.wrappers)
    hyperparams = hyperparams_for_model(cfg.hyperparams)
    try:
        env = make_vec_env(cfg.env_id, n_envs=cfg.n_envs, seed=cfg.seed, env_kwargs=cfg.env_kwargs,
                           wrapper_class=zoo.wrap_env if zoo.env_wrapper else None)
        env.envs = [EnvFailureReporter(e, i, cfg.env_id) for i, e in enumerate(env.envs)]
        venv = zoo.wrap_vec_env(env, gamma=hyperparams.get("gamma"))
        return cls(cfg.policy, venv, seed=cfg.seed, device=cfg.device, verbose=verbose, **hyperparams)
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


class TrainingInterrupted(RuntimeError):
    """A run ended early with a checkpoint: by SIGINT/SIGTERM (``signal`` set) or a failing env
    (``env_failure`` set)."""

    def __init__(self, message: str, run_dir: Path, step: int, signal_number: int | None = None,
                 env_failure: EnvFailure | None = None) -> None:
        super().__init__(message)
        self.run_dir, self.step, self.signal, self.env_failure = run_dir, step, signal_number, env_failure

    @property
    def exit_code(self) -> int:
        return 128 + self.signal if self.signal else 1


class _AppendingCSV(CSVOutputFormat):
    """SB3's CSV writer, continuing an existing file: keeps its header and drops rows logged after
    ``upto`` env steps (written by the interrupted process after its last checkpoint)."""

    def __init__(self, filename: str, upto: int) -> None:
        path = Path(filename)
        rows: list[list[str]] = []
        if path.is_file() and path.stat().st_size:
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
        keys = rows[0] if rows else []
        col = keys.index("time/total_timesteps") if "time/total_timesteps" in keys else None
        kept = [r for r in rows[1:] if col is None or not r[col] or float(r[col]) <= upto]
        super().__init__(filename)
        self.keys = list(keys)
        if keys:
            writer = csv.writer(self.file, lineterminator="\n")
            writer.writerows([keys, *kept])
            self.file.flush()


def resolved_hyperparams(model: BaseAlgorithm) -> dict[str, Any]:
    """Every constructor setting the model actually runs with (defaults included): the algorithm's
    keyword arguments and the policy's, as plain values (schedules and classes by name)."""
    skip = ("self", "policy", "env", "policy_kwargs", "_init_setup_model")
    out = {name: plain(getattr(model, name)) for name in inspect.signature(type(model).__init__).parameters
           if name not in skip and hasattr(model, name)}
    given = model.policy_kwargs or {}
    out["policy_kwargs"] = {
        name: plain(given.get(name, p.default))
        for name, p in inspect.signature(type(model.policy).__init__).parameters.items()
        if p.default is not inspect.Parameter.empty or name in given
    }
    return out


def _wandb_start(cfg: RunConfig, run_dir: Path, project: str, logger: Logger, resolved: dict[str, Any],
                 run_id: str | None = None) -> Any:
    from ebrl.experiments.wandb_logger import attach, init_wandb

    sampler = resolved["policy_kwargs"].get("sampler")
    run = init_wandb({**cfg.to_dict(), "resolved": resolved}, project=project, name=run_dir.name,
                     directory=os.environ.get("WANDB_DIR") or run_dir, run_id=run_id, group=cfg.env_id,
                     tags=[cfg.algo, *([f"sampler:{sampler}"] if sampler else [])], job_type="train")
    if run is not None:
        attach(logger, run)
    return run


def _logger(run_dir: Path, verbose: int, resume_step: int | None) -> Logger:
    path = str(run_dir / "metrics.csv")
    formats: list[Any] = [CSVOutputFormat(path) if resume_step is None else _AppendingCSV(path, resume_step)]
    if verbose:
        formats.append(HumanOutputFormat(sys.stdout))
    return Logger(str(run_dir), formats)


def train(
    cfg: RunConfig,
    runs_dir: str | Path = "runs",
    track: bool = False,
    wandb_project: str = DEFAULT_WANDB_PROJECT,
    progress_bar: bool = True,
    verbose: int = 0,
    callbacks: list[BaseCallback] | None = None,
) -> Path:
    """Train, evaluate, plot, and return the run directory (see the module docstring).

    ``callbacks`` are extra SB3 callbacks (run after the checkpoint and evaluation callbacks).
    Raises :class:`TrainingInterrupted` after saving a checkpoint when stopped by a signal or an env.
    """
    model = build_model(cfg, verbose=verbose)
    run_dir = new_run_dir(runs_dir, cfg)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    # config.yaml is what the run was asked for (resume reads it); this is what it runs with.
    resolved = resolved_hyperparams(model)
    (run_dir / "resolved_hyperparams.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
    logger = _logger(run_dir, verbose, None)
    model.set_logger(logger)
    wandb_run = _wandb_start(cfg, run_dir, wandb_project, logger, resolved) if track else None
    return _run(model, cfg, run_dir, logger, wandb_run, progress_bar, callbacks, {}, reset=True)


def resume(
    run_dir: str | Path,
    total_timesteps: int | None = None,
    track: bool | None = None,
    wandb_project: str = DEFAULT_WANDB_PROJECT,
    progress_bar: bool = True,
    verbose: int = 0,
    callbacks: list[BaseCallback] | None = None,
    device: str | None = None,
) -> Path:
    """Continue ``run_dir`` from its latest checkpoint to ``total_timesteps`` (default: the run's own).

    ``track`` defaults to what the run did (the same W&B run id continues). Raises
    :class:`ConfigError` when ``run_dir`` is not a run or has no checkpoint.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir, require_model=False)
    latest = CheckpointDir(run_dir / "checkpoints").latest()
    if latest is None:
        raise ConfigError(f"cannot resume {run_dir}: it has no checkpoint (checkpoints/ is missing or empty)")
    tensors, arrays, state = load_training_checkpoint(latest, device=device or cfg.device)
    step = int(state["step"])
    if total_timesteps is not None:
        cfg.total_timesteps = total_timesteps
    if step >= cfg.total_timesteps:
        raise ConfigError(f"cannot resume {run_dir}: its checkpoint is at step {step}, total_timesteps is "
                          f"{cfg.total_timesteps}; pass --total-timesteps N with N > {step} to train further")
    if device is not None:
        cfg.device = device
    model = build_model(cfg, verbose=verbose)
    restore(model, tensors, arrays, state)
    extra = state.get("extra", {})
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    logger = _logger(run_dir, verbose, step)
    model.set_logger(logger)
    run_id = extra.get("wandb_run_id")
    if track is None:
        track = run_id is not None
    wandb_run = (_wandb_start(cfg, run_dir, wandb_project, logger, resolved_hyperparams(model), run_id=run_id)
                 if track else None)
    print(f"resuming {run_dir} from step {step} ({latest.name})")
    return _run(model, cfg, run_dir, logger, wandb_run, progress_bar, callbacks, extra, reset=False)


def _run(model: BaseAlgorithm, cfg: RunConfig, run_dir: Path, logger: Logger, wandb_run: Any,
         progress_bar: bool, callbacks: list[BaseCallback] | None, extra: dict[str, Any],
         reset: bool) -> Path:
    evaluator = None
    if cfg.eval_freq > 0:
        evaluator = GoalEvalCallback(cfg.env_id, cfg.eval_freq, cfg.n_eval_episodes, cfg.seed, cfg.env_kwargs,
                                     cfg.wrappers)
        evaluator.next_eval = int(extra.get("eval_next", evaluator.next_eval))
    run_id = getattr(wandb_run, "id", None) or extra.get("wandb_run_id")

    def checkpoint_extra() -> dict[str, Any]:
        out: dict[str, Any] = {"wandb_run_id": run_id}
        if evaluator is not None:
            out["eval_next"] = evaluator.next_eval
        return out

    stop = StopRequest()
    saver = CheckpointCallback(CheckpointDir(run_dir / "checkpoints"), cfg.checkpoint_freq, stop,
                               checkpoint_extra)
    callback = CallbackList([saver, *([evaluator] if evaluator else []), *(callbacks or [])])
    resume_cmd = f"ebrl train --resume {run_dir}"
    start = time.perf_counter()
    try:
        with stop_on_signals(stop):
            model.learn(cfg.total_timesteps - (0 if reset else model.num_timesteps), callback=callback,
                        progress_bar=progress_bar, reset_num_timesteps=reset)
    except EnvFailure as exc:
        path = saver.save(env_state=False)
        logger.close()
        raise TrainingInterrupted(
            f"{exc} (run step {model.num_timesteps}); checkpoint saved in {path}; the envs restart from "
            f"reset on resume: {resume_cmd}", run_dir, model.num_timesteps, env_failure=exc) from exc
    train_s = time.perf_counter() - start
    if saver.stopped:
        logger.close()
        name = signal.Signals(stop.signal).name if stop.signal else "stop request"
        raise TrainingInterrupted(
            f"{name}: training stopped at step {model.num_timesteps}; checkpoint saved in {saver.last}; "
            f"resume with: {resume_cmd}", run_dir, model.num_timesteps, signal_number=stop.signal)
    saver.save()
    save_model(model, run_dir / "model.zip")
    keys, normalizer = eval_obs(cfg.wrappers, model=model)
    if normalizer is not None:  # `ebrl eval`/`ebrl plot` of the saved model need the statistics
        normalizer.save(run_dir / NORMALIZER_FILE)

    result = evaluate(model, cfg.env_id, cfg.n_eval_episodes, seed=cfg.seed + 10_000, deterministic=False,
                      env_kwargs=cfg.env_kwargs, progress=progress_bar, wrappers=keys, normalizer=normalizer)
    log_eval(logger, result, model.num_timesteps)
    summary = {"algo": cfg.algo, "env_id": cfg.env_id, "seed": cfg.seed, "timesteps": model.num_timesteps,
               "train_seconds": round(train_s, 1), "final_eval_stochastic": result.summary()}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    images = plot_run(run_dir, model=model, result=result)
    logger.close()

    sync = None
    if wandb_run is not None:
        from ebrl.experiments.wandb_logger import finish_wandb

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
