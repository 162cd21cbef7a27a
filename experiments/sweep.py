"""`ebrl sweep`: multi-seed runs and hyperparameter sweeps on Ray Tune, on one machine or a cluster.

The sweep file (``experiments/sweeps/*.yaml``, see :mod:`ebrl.experiments.sweep_spec`) is validated
before Ray starts. Tune then runs a grid of (configuration x seed) trials; each trial is one
:func:`ebrl.experiments.train.train` call with its own run folder under ``<sweep dir>/runs/``. A trial
reports every evaluation that ``train`` writes to ``metrics.csv`` (``eval_freq`` > 0), which feeds
ASHA; its last report is the final evaluation. At the end :mod:`ebrl.experiments.sweep_report` writes
the table over seeds and the return curves. ``--resume DIR`` continues an interrupted sweep.
:func:`run_parallel` runs any per-seed function as trials (the benchmarks use it).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ebrl.experiments.config import ConfigError, RunConfig, positive_int
from ebrl.experiments.sweep_report import TrialResult, markdown_table, summarise, write_report
from ebrl.experiments.sweep_spec import SweepSpec, apply_params, load_sweep

POLL_S = 1.0  # how often a trial looks for new evaluations in its metrics.csv


# ---------------------------------------------------------------- what runs inside a Ray worker

def _eval_rows(run_root: Path, metric: str) -> list[dict[str, Any]]:
    """Evaluations logged so far by the newest run under ``run_root`` (complete CSV lines only)."""
    files = sorted(run_root.glob("*/metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        return []
    text = files[-1].read_text()
    text = text[:text.rfind("\n") + 1]  # SB3 may be mid-line
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        try:
            out = {k: float(v) for k, v in row.items() if k and k.startswith("eval/") and v not in ("", None)}
            if metric in out:
                rows.append({"timesteps": int(float(row["time/total_timesteps"])), **out,
                             "run_dir": str(files[-1].parent)})
        except (KeyError, ValueError):  # a line caught while SB3 rewrites the file for a new column
            continue
    return rows


def _trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: train configuration ``config["cfg"]`` with seed ``config["seed"]`` and report each
    evaluation. ``setup`` holds what all trials share (kept out of the config so that Tune's tables
    show only what varies)."""
    import ray
    import torch
    from ray import tune

    cfg = apply_params(RunConfig(**setup["base"]), config["cfg"]["params"], seed=config["seed"])
    if cfg.device == "auto":  # use exactly what Ray granted, not whatever GPU the node has
        cfg = replace(cfg, device="cuda" if ray.get_gpu_ids() else "cpu")
    torch.set_num_threads(max(1, int(setup["cpus"])))
    if setup["track"]:
        os.environ["WANDB_RUN_GROUP"] = setup["group"]  # wandb.init reads it: one group per sweep
    node_id = ray.get_runtime_context().get_node_id()
    run_root = Path(setup["runs_root"]) / f"{config['cfg']['id']}_seed{config['seed']}"
    run_root.mkdir(parents=True, exist_ok=True)
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            _train_or_resume(cfg, run_root, setup)
        except BaseException as exc:  # re-raised in the trial thread so that Tune marks the trial ERROR
            outcome["error"] = exc

    # train() takes no callback, so the trial thread watches metrics.csv while a daemon thread trains;
    # a daemon, so that a trial stopped by ASHA does not keep its worker alive.
    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    last = -1
    while True:
        worker.join(POLL_S)
        done = not worker.is_alive()
        if done and "error" in outcome:
            raise outcome["error"]
        for row in _eval_rows(run_root, setup["metric"]):
            if row["timesteps"] > last:
                last = row["timesteps"]
                tune.report({**row, "node_id": node_id})
        if done:
            return


def _train_or_resume(cfg: RunConfig, run_root: Path, setup: dict[str, Any]) -> None:
    """Train the trial's run; a trial run again by ``ebrl sweep --resume`` continues its own run
    from its latest checkpoint (same run folder, same W&B run) instead of starting a second one."""
    from ebrl.experiments.checkpoints import CheckpointDir
    from ebrl.experiments.checkpoints.directory import read_state
    from ebrl.experiments.train import resume, train

    latest = {p.parent: CheckpointDir(p).latest() for p in run_root.glob("*/checkpoints")}
    started = sorted(run for run, checkpoint in latest.items() if checkpoint is not None)
    if not started:
        train(cfg, runs_dir=run_root, track=setup["track"], wandb_project=setup["wandb_project"],
              progress_bar=False)
        return
    run_dir = started[-1]
    if read_state(latest[run_dir])["step"] >= cfg.total_timesteps:
        return  # the run had finished training: its metrics are reported as they are
    resume(run_dir, track=setup["track"], wandb_project=setup["wandb_project"], progress_bar=False)


def _trial_dirname(trial: Any) -> str:
    return f"{trial.config['cfg']['id']}_seed{trial.config['seed']}_{trial.trial_id}"


def start_ray(address: str | None = None) -> bool:
    """Join ``address`` or start Ray on this machine's CPUs/GPUs; True when we started it.

    Trials' own output goes to their logs under the sweep directory, not to this terminal.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=False)
    return True


def _trainable(cpus: float, gpus: float, fn: Callable[..., Any]) -> Any:
    """``fn`` with its per-trial resources; a GPU fraction only where the cluster has GPUs."""
    import ray
    from ray import tune

    if gpus and not ray.cluster_resources().get("GPU"):
        print(f"note: the sweep asks {gpus} GPU per trial but the Ray cluster has none; running on CPU")
        gpus = 0.0
    return tune.with_resources(fn, {"cpu": cpus, "gpu": gpus})


def _collect(grid: Any, metric: str) -> list[TrialResult]:
    trials = []
    for result in grid:
        df = result.metrics_dataframe
        rows = df.dropna(subset=[metric]) if df is not None and metric in df else None
        trials.append(TrialResult(
            config_id=result.config["cfg"]["id"], params=result.config["cfg"]["params"],
            seed=int(result.config["seed"]),
            timesteps=[] if rows is None else rows["timesteps"].astype(int).tolist(),
            returns=[] if rows is None else rows[metric].astype(float).tolist(),
            status="ERROR" if result.error else "TERMINATED",
            run_dir=(result.metrics or {}).get("run_dir"), node_id=(result.metrics or {}).get("node_id")))
    return sorted(trials, key=lambda t: (int(t.config_id[1:]), t.seed))


def run_sweep(spec: SweepSpec, storage: str | Path = "runs/sweeps", address: str | None = None,
              max_concurrent: int | None = None, track: bool = False, resume: str | Path | None = None,
              verbose: int = 1) -> tuple[Path, list[TrialResult], int]:
    """Run (or, with ``resume``, continue) the sweep on Ray Tune and write the report.

    Returns the sweep directory, one :class:`TrialResult` per trial and the number of trials left
    unfinished (interrupted). With ``resume`` the spec, ``max_concurrent`` and the tracking choice
    are those of the first run (see :func:`spec_from_dir`).
    """
    from ray import tune

    if resume is not None:
        exp_dir = Path(resume).resolve()
        setup = json.loads((exp_dir / "sweep.json").read_text())["setup"]
    else:
        exp_dir = Path(storage).resolve() / f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        exp_dir.mkdir(parents=True)
        setup = {"base": spec.base.to_dict(), "runs_root": str(exp_dir / "runs"), "track": track,
                 "group": exp_dir.name, "wandb_project": spec.wandb_project, "metric": spec.metric,
                 "cpus": spec.cpus}
        saved = {k: v for k, v in vars(spec).items() if k != "base"}
        (exp_dir / "sweep.json").write_text(json.dumps({"spec": saved, "setup": setup}, indent=2))
    owned = start_ray(address)
    try:
        trainable = _trainable(spec.cpus, spec.gpus, tune.with_parameters(_trial, setup=setup))
        if resume is not None:
            # finished trials are kept; unfinished and errored ones run again from scratch
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
        else:
            scheduler = None
            if spec.scheduler:
                from ray.tune.schedulers import ASHAScheduler

                opts = {k: v for k, v in spec.scheduler.items() if k != "type"}
                scheduler = ASHAScheduler(time_attr="timesteps",
                                          **{"max_t": spec.base.total_timesteps, **opts})
            configs = [{"id": f"c{i}", "params": p} for i, p in enumerate(spec.configs)]
            tuner = tune.Tuner(
                trainable,
                param_space={"cfg": tune.grid_search(configs), "seed": tune.grid_search(spec.seeds)},
                tune_config=tune.TuneConfig(metric=spec.metric, mode=spec.mode, scheduler=scheduler,
                                            max_concurrent_trials=max_concurrent,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent),
                                          verbose=verbose))
        grid = tuner.fit()
        trials = _collect(grid, spec.metric)
        unfinished = len(grid) - grid.num_terminated - grid.num_errors  # > 0 after Ctrl-C
    finally:
        if owned:
            import ray

            ray.shutdown()
    write_report(trials, exp_dir, spec.metric, spec.mode, unfinished=unfinished)
    return exp_dir, trials, unfinished


def spec_from_dir(sweep_dir: str | Path) -> SweepSpec:
    """The spec saved in ``sweep_dir`` by the run that made it (for ``--resume``; no Ray started)."""
    from ray import tune

    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file() or not tune.Tuner.can_restore(Path(sweep_dir).resolve()):
        raise ConfigError(f"not a sweep directory (made by `ebrl sweep`): {sweep_dir}")
    data = json.loads(path.read_text())
    return SweepSpec(**data["spec"], base=RunConfig(**data["setup"]["base"]))


# ---------------------------------------------------------------- benchmarks: seeds as parallel trials

def _job_trial(config: dict[str, Any], fn: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    from ray import tune

    # JSON keeps the job's result exactly as returned (Tune would flatten nested dicts)
    tune.report({"output": json.dumps(fn(config["job"]))})


def run_parallel(fn: Callable[[dict[str, Any]], dict[str, Any]], jobs: Sequence[dict[str, Any]], *,
                 name: str, storage: str | Path = "runs/sweeps", address: str | None = None,
                 max_concurrent: int | None = None, cpus_per_job: float = 1.0, gpus_per_job: float = 0.0,
                 resume: bool = True, verbose: int = 0) -> list[dict[str, Any]]:
    """Run ``fn(job)`` for every job as a Ray Tune trial and return the results in job order.

    Jobs and ``fn``'s results must be JSON-serialisable dicts. With ``resume`` a call with the same
    ``name`` and the same jobs as an interrupted one re-runs only the jobs that did not finish
    (other jobs under that name start afresh in ``<name>-<time>``). ``address="auto"`` runs on a
    Ray cluster; Ray started here is shut down at the end, a running one is left running.
    """
    from ray import tune

    exp_dir = Path(storage).resolve() / name
    saved = exp_dir / "jobs.json"
    restore = (resume and saved.is_file() and json.loads(saved.read_text()) == list(jobs)
               and tune.Tuner.can_restore(exp_dir))
    if not restore:
        if exp_dir.exists():  # other jobs under this name: keep them, start afresh beside them
            exp_dir = exp_dir.with_name(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        exp_dir.mkdir(parents=True)
        saved = exp_dir / "jobs.json"
        saved.write_text(json.dumps(list(jobs)))
    owned = start_ray(address)
    try:
        trainable = _trainable(cpus_per_job, gpus_per_job, tune.with_parameters(_job_trial, fn=fn))
        if restore:
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(trainable, param_space={"job": tune.grid_search(list(jobs))},
                               tune_config=tune.TuneConfig(max_concurrent_trials=max_concurrent),
                               run_config=tune.RunConfig(name=exp_dir.name, storage_path=str(exp_dir.parent),
                                                         verbose=verbose))
        grid = tuner.fit()
    finally:
        if owned:
            import ray

            ray.shutdown()
    outputs: dict[str, dict[str, Any]] = {}
    for result in grid:
        if result.error:
            raise RuntimeError(f"job {result.config['job']} failed: {result.error}") from result.error
        outputs[json.dumps(result.config["job"], sort_keys=True)] = json.loads(result.metrics["output"])
    return [outputs[json.dumps(job, sort_keys=True)] for job in jobs]


# ---------------------------------------------------------------- command line



def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``ebrl sweep``."""
    parser.add_argument("--config", default=None,
                        help="sweep file: a path, or a shipped one by name (smoke, pendulum)")
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster ('auto', or host:port); default: start Ray here")
    parser.add_argument("--num-samples", type=positive_int, default=None,
                        help="draws of the choice/uniform/loguniform dimensions (overrides the file)")
    parser.add_argument("--max-concurrent", type=positive_int, default=None,
                        help="at most this many trials at once (default: as many as the resources allow)")
    parser.add_argument("--resume", default=None, metavar="DIR",
                        help="continue an interrupted sweep in DIR with its first run's settings; "
                             "finished trials are not re-run")
    parser.add_argument("--storage", default="runs/sweeps",
                        help="where sweep directories are created (on a cluster: a path all nodes share)")
    parser.add_argument("--track", action="store_true", help="log each trial to W&B, grouped by sweep")
    parser.add_argument("--quiet", action="store_true", help="print only the final table")


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``ebrl sweep``; bad sweep files raise ConfigError before Ray starts. Returns the exit code."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError("ebrl sweep needs Ray Tune: pip install 'ebrl[sweep]' "
                          "(in a clone: pip install -e '.[sweep]')")
    if args.resume is not None:
        spec = spec_from_dir(args.resume)
    elif args.config is None:
        raise ConfigError("sweep needs --config FILE (or --resume DIR)")
    else:
        spec = load_sweep(args.config, args.num_samples)
    if not args.quiet:
        print(f"sweep {spec.name}: {len(spec.configs)} configurations x {len(spec.seeds)} seeds = "
              f"{len(spec.configs) * len(spec.seeds)} trials of {spec.base.algo} on {spec.base.env_id}")
    exp_dir, trials, unfinished = run_sweep(spec, storage=args.storage, address=args.address,
                                max_concurrent=args.max_concurrent, track=args.track, resume=args.resume,
                                verbose=0 if args.quiet else 1)
    rows = summarise(trials, spec.mode)
    errored = sum(t.status == "ERROR" for t in trials)
    if errored or unfinished:
        print(f"warning: partial results: {errored} trial(s) failed and {unfinished} did not finish",
              file=sys.stderr)
    print(markdown_table(rows, spec.metric), end="")
    best = rows[0] if rows and rows[0]["mean"] is not None else None
    if best is not None:
        se = "" if best["stderr"] is None else f" ± {best['stderr']:.2f}"
        label = "best so far (partial)" if errored or unfinished else "best"
        print(f"{label}: {best['config']} {json.dumps(best['params'])}: final {spec.metric} "
              f"{best['mean']:.2f}{se} (IQM {best['iqm']:.2f}, {best['n']} seeds)")
    print(f"sweep saved in {exp_dir}/ (results.csv, results.md, results.json, returns.png, runs/)")
    if errored or unfinished:
        print(f"{errored} trials failed and {unfinished} did not finish; continue with: "
              f"ebrl sweep --resume {exp_dir}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ebrl.experiments.sweep``: the same as ``ebrl sweep``."""
    parser = argparse.ArgumentParser(prog="ebrl sweep", description=__doc__.splitlines()[0])
    add_sweep_arguments(parser)
    try:
        return run_sweep_command(parser.parse_args(argv))
    except ConfigError as exc:
        print(f"ebrl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
