"""The ``ebrl`` command: ``ebrl train | eval | plot | sweep``.

Bad input (unknown env id or algo, a config key the algorithm does not accept, a directory that is
not a run, a model file that is corrupt or would need unpickling) is reported as one line on stderr
with exit code 2, before anything is created. An interrupted run (SIGINT/SIGTERM, a failing env)
saves a checkpoint, prints ``ebrl train --resume RUN_DIR`` and exits with 128 + signal (1 for an env).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from ebrl.agents.common.safe_load import ModelFileError
from ebrl.experiments.config import (
    ALGOS,
    DEFAULT_TIMESTEPS,
    DEFAULT_WANDB_PROJECT,
    RUN_KNOBS,
    ConfigError,
    RunConfig,
    cli_knobs,
    positive_int,
)

ALLOW_PICKLE_HELP = "let the model file unpickle Python objects (runs code from the file: trusted files only)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ebrl: error: {message}\n")


def _states(text: str) -> list[list[float]]:
    try:
        return [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"states must look like '0,0;2.5,2.5', got {text!r}") from exc




def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ebrl", description="Energy-based RL: train, evaluate and plot agents.")
    common = _Parser(add_help=False)
    common.add_argument("--threads", type=positive_int, default=1,
                        help="torch CPU threads (default 1: small MLPs run fastest on one thread, and "
                             "more threads oversubscribe a shared machine)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,plot}")

    t = sub.add_parser("train", parents=[common], help="train an agent and save a run directory")
    t.add_argument("--algo", choices=list(ALGOS), help="algorithm (required unless --resume)")
    t.add_argument("--env-id",
                   help="gymnasium id, e.g. ebrl/MultiGoal-v0 or Pendulum-v1 (required unless --resume)")
    t.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest checkpoint (with --total-timesteps: train further)")
    for name in cli_knobs():
        t.add_argument(f"--{name.replace('_', '-')}", type=int, default=None,
                       help=f"{RUN_KNOBS[name].help} (default: the config's, else {RUN_KNOBS[name].default})")
    t.add_argument("--total-timesteps", type=positive_int, default=None,
                   help=f"env steps (default: the config's n_timesteps, else {DEFAULT_TIMESTEPS})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--config", default=None,
                   help="YAML hyperparameters keyed by env id (rl-zoo format): a path, or a shipped config "
                        "by name (sql, sac, dqn, discrete-sql)")
    t.add_argument("--track", action="store_true", help="log to W&B (offline without an account)")
    t.add_argument("--wandb-project", default=DEFAULT_WANDB_PROJECT)
    t.add_argument("--device", default=RunConfig.device,
                   help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    t.add_argument("--runs-dir", default="runs", help="where run directories are created")
    t.add_argument("--no-progress-bar", action="store_true")
    t.add_argument("--verbose", type=int, default=0, help="1: print SB3's metric tables")

    e = sub.add_parser("eval", parents=[common], help="evaluate a saved run (returns, goal histogram, GIF)")
    e.add_argument("run_dir")
    e.add_argument("--n-episodes", type=positive_int, default=20)
    mode = e.add_mutually_exclusive_group()
    mode.add_argument("--deterministic", dest="deterministic", action="store_true", default=True,
                      help="noise-free action search (the default, as SB3's evaluate_policy)")
    mode.add_argument("--stochastic", dest="deterministic", action="store_false",
                      help="act by sampling the Boltzmann policy")
    e.add_argument("--seed", type=int, default=None)
    e.add_argument("--no-gif", action="store_true", help="skip the GIF of the first episode")
    e.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)

    p = sub.add_parser("plot", parents=[common], help="learning curve, energy over actions, eval paths")
    p.add_argument("run_dir")
    p.add_argument("--states", type=_states, default=None, help="states for the landscape, '0,0;2.5,2.5'")
    p.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)

    # experiments/sweep.py owns the options and the work of `ebrl sweep`; it imports Ray lazily.
    from ebrl.experiments.sweep import add_sweep_arguments

    sw = sub.add_parser("sweep", help="hyperparameter sweep on Ray Tune, local or on a cluster")
    add_sweep_arguments(sw)
    sub.metavar = "{train,eval,plot,sweep}"
    return parser


def _train(args: argparse.Namespace) -> int:
    from ebrl.experiments.config import ConfigError, resolve
    from ebrl.experiments.train import TrainingInterrupted, resume, train

    try:
        if args.resume is not None:
            if args.algo or args.env_id or args.config:
                raise ConfigError("--resume takes the run's own config: drop --algo, --env-id and --config")
            resume(args.resume, total_timesteps=args.total_timesteps, track=True if args.track else None,
                   wandb_project=args.wandb_project, progress_bar=not args.no_progress_bar,
                   verbose=args.verbose)
            return 0
        if not args.algo or not args.env_id:
            raise ConfigError("train needs --algo and --env-id (or --resume RUN_DIR)")
        cfg = resolve(args.algo, args.env_id, args.seed, args.total_timesteps, args.config, args.device,
                      knobs={name: getattr(args, name) for name in cli_knobs()})
        train(cfg, runs_dir=args.runs_dir, track=args.track, wandb_project=args.wandb_project,
              progress_bar=not args.no_progress_bar, verbose=args.verbose)
    except TrainingInterrupted as exc:
        print(f"ebrl: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


def _eval(args: argparse.Namespace) -> int:
    from ebrl.experiments.config import load_run_config
    from ebrl.experiments.run_dir import eval_run

    load_run_config(args.run_dir)
    s = eval_run(args.run_dir, args.n_episodes, args.deterministic, args.seed, gif=not args.no_gif,
                 allow_pickle=args.allow_pickle)
    if s.get("gif_skipped"):
        print(f"ebrl: GIF skipped: {s['gif_skipped']}", file=sys.stderr)
    mode = "deterministic" if args.deterministic else "stochastic"
    print(f"{s['episodes']} {mode} episodes: return {s['mean_return']:.2f} ± {s['std_return']:.2f}, "
          f"length {s['mean_length']:.1f}")
    if "goal_fractions" in s:
        print(f"  success {s['success_rate']:.0%}, goal fractions "
              f"{[round(f, 3) for f in s['goal_fractions']]}, entropy {s['goal_entropy']:.2f}")
    print(f"  wrote {s['json']} (latest also in {args.run_dir}/eval.json)"
          + (f" and {s['gif']}" if s.get("gif") else ""))
    return 0


def _plot(args: argparse.Namespace) -> int:
    from ebrl.experiments.config import load_run_config
    from ebrl.experiments.run_dir import plot_run

    load_run_config(args.run_dir)
    for path in plot_run(args.run_dir, states=args.states, allow_pickle=args.allow_pickle):
        print(f"plot: {path}")
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from ebrl.experiments.sweep import run_sweep_command

    return run_sweep_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    if hasattr(args, "threads"):
        torch.set_num_threads(args.threads)
    try:
        return {"train": _train, "eval": _eval, "plot": _plot, "sweep": _sweep}[args.command](args)
    except ConfigError as exc:
        print(f"ebrl: error: {exc}", file=sys.stderr)
        return 2
    except ModelFileError as exc:
        print(f"ebrl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
