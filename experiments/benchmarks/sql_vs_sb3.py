"""SQL vs SB3 SAC on Pendulum-v1 and DiscreteSQL vs SB3 DQN on CartPole-v1, side by side.

Same seeds, same network sizes, deterministic evaluation every ``--eval-every`` steps. Writes
``experiments/results/sql_vs_sb3.{json,md,png}`` and prints the table.

    python experiments/benchmarks/sql_vs_sb3.py                      # the full run (issue 3)
    python experiments/benchmarks/sql_vs_sb3.py --tasks pendulum --steps 4000 --seeds 0

Env steps per second are measured without the evaluation time, both in wall-clock time and in
process CPU time (the latter is robust to other jobs sharing the machine). Each run is a Ray Tune
trial (:func:`ebrl.experiments.sweep.run_parallel`) with one torch thread; ``--max-concurrent 2`` (alias
``--jobs``) runs two at a time, pairing the two algorithms of a seed so that both see the same
machine load. ``--address auto`` runs the trials on a Ray cluster. Re-running an interrupted command
re-runs only the unfinished runs (``--fresh`` runs them all again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ebrl.experiments.sweep import run_parallel

RESULTS = Path(__file__).resolve().parents[1] / "results"


@dataclass
class Task:
    """One comparison: an env, our algorithm and its SB3 baseline, with their settings."""

    env_id: str
    steps: int
    eval_every: int
    n_eval_episodes: int
    ours: str
    baseline: str
    ours_kwargs: dict[str, Any] = field(default_factory=dict)
    baseline_kwargs: dict[str, Any] = field(default_factory=dict)
    targets: str = ""



# rl-baselines3-zoo's DQN hyperparameters for CartPole-v1, shared by both sides of that comparison.
CARTPOLE_ZOO = {
    "learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000, "learning_starts": 1000,
    "gamma": 0.99, "target_update_interval": 10, "train_freq": 256, "gradient_steps": 128,
    "policy_kwargs": {"net_arch": [256, 256]},
}  # fmt: skip

TASKS = {
    # SAC: SB3 defaults (2x256, lr 3e-4, batch 256, tau 0.005, auto entropy). SQL: its frozen
    # defaults, nothing passed (the same network sizes, batch and tau as SAC's; lr 1e-3).
    "pendulum": Task(
        env_id="Pendulum-v1",
        steps=20_000,
        eval_every=2_000,
        n_eval_episodes=5,
        ours="SQL",
        baseline="SAC",
        ours_kwargs={},
        baseline_kwargs={},
        targets="SQL (defaults) final mean >= SAC's; SQL steps/s (CPU) >= 1.0x SAC's",
    ),
    # DQN: rl-baselines3-zoo hyperparameters for CartPole-v1; DiscreteSQL: the same, with the
    # Boltzmann policy softmax(Q/alpha) in place of epsilon-greedy.
    "cartpole": Task(
        env_id="CartPole-v1",
        steps=50_000,
        eval_every=5_000,
        n_eval_episodes=10,
        ours="DiscreteSQL",
        baseline="DQN",
        ours_kwargs={**CARTPOLE_ZOO, "alpha": 0.01},
        baseline_kwargs={**CARTPOLE_ZOO, "exploration_fraction": 0.16, "exploration_final_eps": 0.04},
        targets="DiscreteSQL reaches 500 and is >= DQN",
    ),
}


def algo_class(name: str):
    if name in ("SQL", "DiscreteSQL"):
        import ebrl.agents as agents

        return getattr(agents, name)
    import stable_baselines3

    return getattr(stable_baselines3, name)


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (task, algorithm, seed) in a Ray worker and return its evaluation curve and speed."""
    task_name, algo, seed = job["task"], job["algo"], job["seed"]
    steps, eval_every = job["steps"], job["eval_every"]
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    task = TASKS[task_name]
    kwargs = task.ours_kwargs if algo == task.ours else task.baseline_kwargs
    env = make_vec_env(task.env_id, n_envs=1, seed=seed)
    eval_env = make_vec_env(task.env_id, n_envs=1, seed=10_000 + seed)
    model = algo_class(algo)("MlpPolicy", env, seed=seed, verbose=0, device="cpu", **kwargs)

    class Curve(BaseCallback):
        """Deterministic evaluation every ``eval_every`` steps, its time kept out of the speed."""

        def __init__(self) -> None:
            super().__init__()
            self.points: list[tuple[int, float, float]] = []
            self.eval_wall = self.eval_cpu = 0.0

        def evaluate(self) -> None:
            w, c = time.perf_counter(), time.process_time()
            mean, std = evaluate_policy(
                self.model, eval_env, n_eval_episodes=task.n_eval_episodes, deterministic=True
            )
            self.points.append((self.num_timesteps, float(mean), float(std)))
            self.eval_wall += time.perf_counter() - w
            self.eval_cpu += time.process_time() - c

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                self.evaluate()
            return True

    curve = Curve()
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(steps, callback=curve)
    wall, cpu = time.perf_counter() - wall - curve.eval_wall, time.process_time() - cpu - curve.eval_cpu
    if not curve.points or curve.points[-1][0] != model.num_timesteps:
        curve.evaluate()
    final = curve.points[-1]
    run = {
        "task": task_name,
        "algo": algo,
        "seed": seed,
        "steps": steps,
        "curve": [{"step": s, "mean": m, "std": sd} for s, m, sd in curve.points],
        "final_return": final[1],
        "final_return_std_episodes": final[2],
        "steps_per_s_wall": steps / wall,
        "steps_per_s_cpu": steps / cpu,
        "train_wall_s": wall,
        "train_cpu_s": cpu,
    }
    if job.get("partial"):  # finished runs are appended as they come, so an interrupted benchmark keeps them
        with open(job["partial"], "a") as f:
            f.write(json.dumps(run) + "\n")
    print(
        f"[{task_name}] {algo:12s} seed {seed}: final {final[1]:8.1f} +- {final[2]:6.1f}, "
        f"{steps / wall:6.1f} steps/s wall, {steps / cpu:6.1f} steps/s cpu",
        flush=True,
    )
    return run


def summarise(runs: list[dict[str, Any]], task_name: str) -> dict[str, Any]:
    task = TASKS[task_name]
    out: dict[str, Any] = {}
    for algo in (task.ours, task.baseline):
        rs = [r for r in runs if r["task"] == task_name and r["algo"] == algo]
        if not rs:
            continue
        finals = np.array([r["final_return"] for r in rs])
        out[algo] = {
            "seeds": [r["seed"] for r in rs],
            "final_returns": finals.tolist(),
            "final_mean": float(finals.mean()),
            "final_std": float(finals.std()),
            "steps_per_s_wall": float(np.mean([r["steps_per_s_wall"] for r in rs])),
            "steps_per_s_cpu": float(np.mean([r["steps_per_s_cpu"] for r in rs])),
        }
    if task.ours in out and task.baseline in out:
        o, b = out[task.ours], out[task.baseline]
        out["speed_ratio_wall"] = o["steps_per_s_wall"] / b["steps_per_s_wall"]
        out["speed_ratio_cpu"] = o["steps_per_s_cpu"] / b["steps_per_s_cpu"]
    return out


NOTES = """Notes:

- Evaluation: deterministic (SQL: the Boltzmann policy's mean action), 5 episodes (Pendulum) or
  10 (CartPole) per point on a separately seeded env; "final" is the last point. With
  ``train_freq=256`` the CartPole runs stop at 50,176 steps (SB3 finishes the rollout chunk), so
  the final CartPole point is at 50,176; at exactly 50,000 DiscreteSQL scored 500 / 500 / 492.
- Steps per second exclude evaluation time. The machine was shared with other jobs, so the wall
  figures vary with load; the CPU-time figures (process time) are the fairer speed comparison.
- SQL on Pendulum runs its frozen defaults (nothing passed: 10 000 uniform random steps before
  learning, a learned proposal starts the chains by SIR, 3 MALA steps on -min(Q1, Q2), M = 2
  importance particles, alpha = "auto" aimed at -0.5 nats per action dimension,
  target_entropy="auto_0.5", learning rate 1e-3 where SAC's is 3e-4, rewards scaled by 0.1 in
  the target and a layer-normalised last hidden layer in both critics); how they were chosen:
  experiments/results/sql_tuning.md.
  Where the time goes: experiments/results/sql_profile.md. Networks are the same size (2 x 256)
  for both. SAC here uses SB3's defaults (learning from step 100), so SQL's whole-run steps/s
  count 10 000 cheap random steps that SAC's do not: the speed ratio is not a per-update
  comparison (that is sql_profile.md's).
- DiscreteSQL (CartPole): alpha = 0.01 reached 500 by 30k steps on seed 0; alpha = 0.05 was not
  finished in the time available.
"""


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        "# SQL vs SB3 baselines",
        "",
        f"Command: `{meta['command']}`  ",
        f"Machine: {meta['machine']}; one torch thread per run, {meta['jobs']} run(s) at a time.  ",
        f"Scope: {meta['scope']}",
        "",
        "| task | algorithm | steps | seeds | final return per seed | final mean ± std | steps/s (wall) "
        "| steps/s (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task_name, s in summary.items():
        task = TASKS[task_name]
        for algo in (task.ours, task.baseline):
            if algo not in s:
                continue
            a = s[algo]
            per_seed = " / ".join(f"{x:.1f}" for x in a["final_returns"])
            lines.append(
                f"| {task.env_id} | {algo} | {meta['steps'][task_name]} | {len(a['seeds'])} | {per_seed} "
                f"| {a['final_mean']:.1f} ± {a['final_std']:.1f} | {a['steps_per_s_wall']:.1f} "
                f"| {a['steps_per_s_cpu']:.1f} |"
            )
    lines.append("")
    for task_name, s in summary.items():
        task = TASKS[task_name]
        if "speed_ratio_wall" in s:
            o, b = s[task.ours], s[task.baseline]
            lines.append(
                f"- {task.env_id}: target: {task.targets}. Measured: {task.ours} {o['final_mean']:.1f} vs "
                f"{task.baseline} {b['final_mean']:.1f}; speed ratio {s['speed_ratio_wall']:.2f} (wall), "
                f"{s['speed_ratio_cpu']:.2f} (CPU)."
            )
    lines += ["", "Settings (constructor arguments beyond the defaults):", ""]
    for task_name in summary:
        task = TASKS[task_name]
        lines.append(f"- {task.env_id} {task.ours}: `{json.dumps(task.ours_kwargs)}`")
        lines.append(f"- {task.env_id} {task.baseline}: `{json.dumps(task.baseline_kwargs)}`")
    return "\n".join(lines) + "\n\n" + NOTES


def plot(runs: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task_name in zip(axes[0], tasks, strict=True):
        task = TASKS[task_name]
        for algo in (task.ours, task.baseline):
            rs = [r for r in runs if r["task"] == task_name and r["algo"] == algo]
            if not rs:
                continue
            n = min(len(r["curve"]) for r in rs)
            steps = np.array([p["step"] for p in rs[0]["curve"][:n]])
            returns = np.array([[p["mean"] for p in r["curve"][:n]] for r in rs])
            mean, std = returns.mean(0), returns.std(0)
            ax.plot(steps, mean, label=f"{algo} ({len(rs)} seeds)")
            ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
        ax.set_title(task.env_id)
        ax.set_xlabel("env steps")
        ax.set_ylabel("deterministic eval return")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: each task's)")
    parser.add_argument("--eval-every", type=int, default=None, help="default: each task's (or steps/10)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--max-concurrent", "--jobs", dest="jobs", type=int, default=2, metavar="N",
                        help="runs in parallel (one CPU and one torch thread each)")
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster ('auto', or host:port); default: start Ray on "
                             "this machine's CPUs")
    parser.add_argument("--storage", default="runs/sweeps",
                        help="where the Ray Tune trials are kept (on a cluster: a path all nodes share)")
    parser.add_argument("--fresh", action="store_true",
                        help="run every job again instead of resuming the finished ones of the same command")
    parser.add_argument("--out", type=Path, default=RESULTS / "sql_vs_sb3", help="output path without suffix")
    parser.add_argument("--scope", default=None, help="describe a partial run (written to the md/json)")
    parser.add_argument(
        "--from-partial",
        action="store_true",
        help="write the results from the runs finished so far (<out>.partial.jsonl, written by runs on "
        "this machine) without training",
    )
    args = parser.parse_args(argv)

    steps = {t: args.steps or TASKS[t].steps for t in args.tasks}
    every = {
        t: args.eval_every or (TASKS[t].eval_every if args.steps is None else max(args.steps // 10, 1))
        for t in args.tasks
    }
    # Pair the two algorithms of a seed so that they run at the same time, under the same load.
    partial = args.out.with_suffix(".partial.jsonl").resolve()
    jobs = [
        {"task": t, "algo": algo, "seed": seed, "steps": steps[t], "eval_every": every[t],
         "partial": str(partial)}
        for t in args.tasks
        for seed in args.seeds
        for algo in (TASKS[t].ours, TASKS[t].baseline)
    ]
    start = time.time()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.from_partial:
        # the last line of each (task, algo, seed): a resumed benchmark may have appended a run twice
        runs = list({(r["task"], r["algo"], r["seed"]): r for r in (
            json.loads(line) for line in partial.read_text().splitlines() if line.strip())}.values())
        args.tasks = [t for t in args.tasks if any(r["task"] == t for r in runs)]
        args.seeds = sorted({r["seed"] for r in runs})
        steps = {t: next(r["steps"] for r in runs if r["task"] == t) for t in args.tasks}
    else:
        if args.fresh:
            partial.unlink(missing_ok=True)
        runs = run_parallel(run_one, jobs, name=args.out.name, storage=args.storage, address=args.address,
                            max_concurrent=args.jobs, resume=not args.fresh)
    runs.sort(key=lambda r: (r["task"], r["algo"], r["seed"]))
    full = (
        all(steps[t] == TASKS[t].steps for t in args.tasks)
        and len(args.seeds) >= 3
        and set(args.tasks) == set(TASKS)
    )
    meta = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "machine": (f"Ray cluster at {args.address}" if args.address
                    else f"{platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs)")
        + ", CPU torch",
        "jobs": args.jobs,
        "steps": steps,
        "eval_every": every,
        "seeds": args.seeds,
        "scope": args.scope
        or ("full benchmark of issue 3" if full else "PARTIAL run (see steps/seeds/tasks)"),
        "wall_s": time.time() - start,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    summary = {t: summarise(runs, t) for t in args.tasks}
    config = {
        t: {"ours": TASKS[t].ours_kwargs, "baseline": TASKS[t].baseline_kwargs, "targets": TASKS[t].targets}
        for t in args.tasks
    }
    args.out.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "config": config, "summary": summary, "runs": runs}, indent=1)
    )
    md = markdown(summary, meta)
    args.out.with_suffix(".md").write_text(md)
    plot(runs, args.tasks, args.out.with_suffix(".png"))
    if not args.from_partial:
        partial.unlink(missing_ok=True)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
