"""How many modes does each policy cover? SQL vs SB3 SAC on MultiGoal and Fork (issue 4, part 4).

For every task, algorithm and seed: train with ``experiments/configs/<algo>.yaml`` (both
algorithms get the same number of env steps, the SQL config's ``n_timesteps`` unless
``--steps`` says otherwise), then run ``--episodes`` stochastic evaluation episodes and histogram
``info["goal_index"]``: the fraction of episodes ending at each goal (MultiGoal) or passing on
each side (Fork), the success rate, the entropy of the goal distribution among successes, and
(Fork) the crash rate. Targets on MultiGoal (issue 4): SQL reaches a goal in >= 95 % of episodes
with goal entropy >= 0.9 log 4.

    .venv/bin/python experiments/benchmarks/multigoal_modes.py --seeds 0 1 2 --episodes 100

writes ``experiments/results/multigoal_modes.{json,md,png}``. Every (task, algorithm, seed) is one
Ray Tune trial (:func:`ebrl.experiments.sweep.run_parallel`) with one torch thread: ``--max-concurrent``
of them at a time on this machine, or on a Ray cluster with ``--address auto``. Re-running an
interrupted command re-runs only the unfinished trials (``--fresh`` runs them all again).

Where coverage is lost. For a one-dimensional action (Fork) each SQL run also reports, at the start
state (the fork), the mass on ``a < 0`` of the exact Boltzmann policy of the learned critic
(softmax of -E/alpha on a grid of 2001 actions) next to the same fraction among 4000 actions of the
policy's own act: a lopsided critic is a learning failure, an act far from the exact value is a
sampling one. ``--sql-kwargs`` overrides SQL's config for a diagnostic run (its ``policy_kwargs``
are merged key by key); such runs belong in their own ``--out``:

    python experiments/benchmarks/multigoal_modes.py --tasks ebrl/Fork-v0 --algos sql \
        --sql-kwargs '{"policy_kwargs": {"n_candidates": 64}}' --out /tmp/fork_n64
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import gymnasium as gym
import matplotlib.pyplot as plt
import numpy as np
import torch

import ebrl.envs  # noqa: F401  (registers ebrl/...: the figure draws the tasks here, the runs are in Ray workers)
from ebrl.experiments.config import resolve
from ebrl.experiments.evaluate import EvalResult, evaluate
from ebrl.experiments.plots import draw_task
from ebrl.experiments.sweep import run_parallel
from ebrl.experiments.train import build_model

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "experiments" / "configs"
TASKS = ("ebrl/MultiGoal-v0", "ebrl/Fork-v0")
ALGOS = ("sql", "sac")
TARGET_SUCCESS, TARGET_ENTROPY_FRACTION = 0.95, 0.9


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate one (algo, task, seed) in a Ray worker; JSON-serialisable result.

    ``result["row"]`` is the table row; with ``job["keep_paths"]`` ``result["example"]`` holds the
    per-episode outcomes and paths that :func:`example_result` turns back into an EvalResult.
    """
    algo, env_id, seed, steps, episodes = (job[k] for k in ("algo", "env_id", "seed", "steps", "episodes"))
    torch.set_num_threads(1)  # small MLPs: one thread is fastest and does not oversubscribe the cores
    cfg = resolve(algo, env_id, seed, steps, CONFIGS / f"{algo}.yaml", device="cpu")
    if algo == "sql" and job.get("sql_kwargs"):
        cfg.hyperparams = override(cfg.hyperparams, job["sql_kwargs"])
    model = build_model(cfg)
    start = time.perf_counter()
    model.learn(cfg.total_timesteps)
    seconds = time.perf_counter() - start
    result = evaluate(model, env_id, episodes, seed=1_000_000 + 1000 * seed, deterministic=False)
    row = {"algo": algo, "env_id": env_id, "seed": seed, "steps": steps, "train_seconds": round(seconds, 1),
           **result.summary()}
    if algo == "sql" and model.action_space.shape == (1,):
        row["start_negative_exact"], row["start_negative_act"] = start_negative_mass(model, env_id)
    print(f"{env_id:18s} {algo:4s} seed {seed}: success {row['success_rate']:.2f}, fractions "
          f"{[round(f, 2) for f in row['goal_fractions']]}, entropy {row['goal_entropy']:.3f}"
          + (f", crashes {row['crash_rate']:.2f}" if "crash_rate" in row else "") + f" ({seconds:.0f} s)",
          flush=True)
    out: dict[str, Any] = {"row": row}
    if job.get("keep_paths"):
        out["example"] = {
            "returns": [float(r) for r in result.returns], "lengths": [int(n) for n in result.lengths],
            "goal_index": [int(g) for g in result.goal_index], "n_goals": int(result.n_goals),
            "crashed": [bool(c) for c in result.crashed],
            "paths": [np.asarray(p, dtype=float).round(4).tolist() for p in result.paths],
        }
    return out


def override(hyperparams: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """SQL's config with ``extra`` over it (``policy_kwargs`` merged key by key)."""
    out = {**hyperparams, **{k: v for k, v in extra.items() if k != "policy_kwargs"}}
    out["policy_kwargs"] = {**hyperparams.get("policy_kwargs", {}), **extra.get("policy_kwargs", {})}
    return out


def start_negative_mass(model: Any, env_id: str, grid: int = 2001, draws: int = 4000) -> tuple[float, float]:
    """P(a < 0) at the start state: exact Boltzmann policy of the learned critic, and the act's draws."""
    obs, _ = gym.make(env_id).reset(seed=0)
    policy = model.policy
    states = torch.as_tensor(obs, dtype=torch.float32)[None]
    actions = torch.linspace(-1.0, 1.0, grid)[:, None]
    with torch.no_grad():
        energy = policy.energy(states.expand(grid, -1), actions).reshape(-1)
    exact = torch.softmax(-energy / policy.temperature, 0)[actions[:, 0] < 0].sum()
    with torch.enable_grad():
        acted = policy.boltzmann.sample(states, n=draws, generator=torch.Generator().manual_seed(0))[0]
    return round(float(exact), 4), round(float((acted[:, 0] < 0).float().mean()), 4)


def example_result(example: dict[str, Any]) -> EvalResult:
    """The EvalResult (without frames) that :func:`run_one` sent back as lists."""
    return EvalResult(returns=example["returns"], lengths=example["lengths"],
                      goal_index=example["goal_index"], n_goals=example["n_goals"],
                      crashed=example["crashed"],
                      paths=[np.asarray(p, dtype=float) for p in example["paths"]])


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for env_id in dict.fromkeys(r["env_id"] for r in rows):
        for algo in dict.fromkeys(r["algo"] for r in rows):
            sel = [r for r in rows if r["env_id"] == env_id and r["algo"] == algo]
            if not sel:
                continue
            fr = np.array([r["goal_fractions"] for r in sel])
            agg = {
                "env_id": env_id, "algo": algo, "seeds": [r["seed"] for r in sel], "steps": sel[0]["steps"],
                "episodes_per_seed": sel[0]["episodes"],
                "success_rate_mean": float(np.mean([r["success_rate"] for r in sel])),
                "success_rate_min": float(np.min([r["success_rate"] for r in sel])),
                "goal_fractions_mean": fr.mean(0).round(4).tolist(),
                "goal_entropy_mean": float(np.mean([r["goal_entropy"] for r in sel])),
                "goal_entropy_min": float(np.min([r["goal_entropy"] for r in sel])),
                "goal_entropy_max_possible": sel[0]["goal_entropy_max"],
                "mean_return": float(np.mean([r["mean_return"] for r in sel])),
                "train_seconds_mean": float(np.mean([r["train_seconds"] for r in sel])),
            }
            if "crash_rate" in sel[0]:
                agg["crash_rate_mean"] = float(np.mean([r["crash_rate"] for r in sel]))
            agg["meets_target"] = bool(
                agg["success_rate_min"] >= TARGET_SUCCESS
                and agg["goal_entropy_min"] >= TARGET_ENTROPY_FRACTION * agg["goal_entropy_max_possible"]
            )
            out.append(agg)
    return out


def markdown(summary: list[dict[str, Any]], command: str, rows: list[dict[str, Any]],
             image: str = "multigoal_modes.png") -> str:
    lines = [
        "# Modes covered: soft Q-learning vs SAC",
        "",
        f"Command: `{command}`",
        "",
        "Stochastic evaluation; fractions of episodes ending at each goal (MultiGoal: goals (5,0), (-5,0), "
        "(0,5), (0,-5); Fork: passing left / right of the rock); entropy of the goal distribution among "
        "successful episodes (max log 4 = 1.386 and log 2 = 0.693). Mean over seeds, worst seed in brackets.",
        f"Target (issue 4, MultiGoal SQL; the last column applies it to every row): success >= "
        f"{TARGET_SUCCESS:.0%} and entropy >= {TARGET_ENTROPY_FRACTION} x max on every seed. In the "
        "picture, paths are coloured by the goal (side) reached; black paths reached none (Fork: "
        "crashed into the rock; MultiGoal: timed out).",
        "",
        "| task | algo | steps | success (worst) | goal fractions | entropy (worst) / max | crashes | "
        "return | train s/seed | target |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for a in summary:
        fr = ", ".join(f"{f:.2f}" for f in a["goal_fractions_mean"])
        crash = f"{a['crash_rate_mean']:.2f}" if "crash_rate_mean" in a else "–"
        lines.append(
            f"| {a['env_id']} | {a['algo']} | {a['steps']} | {a['success_rate_mean']:.2f} "
            f"({a['success_rate_min']:.2f}) | {fr} | "
            f"{a['goal_entropy_mean']:.3f} ({a['goal_entropy_min']:.3f}) / "
            f"{a['goal_entropy_max_possible']:.3f} | {crash} | {a['mean_return']:.1f} | "
            f"{a['train_seconds_mean']:.0f} | {'yes' if a['meets_target'] else 'no'} |"
        )
    diag = [r for r in rows if "start_negative_exact" in r]
    if diag:
        lines += ["", "At the start state (the fork), per SQL seed: P(a < 0) under the exact Boltzmann "
                  "policy of the learned critic (grid of 2001 actions) and among 4000 draws of the act "
                  "(0.5 / 0.5 is a symmetric policy).", "",
                  "| task | seed | exact pi: P(a < 0) | act: P(a < 0) | goal fractions | entropy |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['env_id']} | {r['seed']} | {r['start_negative_exact']:.3f} | "
                  f"{r['start_negative_act']:.3f} | {', '.join(f'{f:.2f}' for f in r['goal_fractions'])} | "
                  f"{r['goal_entropy']:.3f} |" for r in diag]
    lines += ["", f"![modes]({image})", ""]
    return "\n".join(lines)


def figure(examples: dict[tuple[str, str], EvalResult], summary: list[dict[str, Any]], out: Path,
           example_seed: int = 0) -> None:
    tasks = list(dict.fromkeys(e for e, _ in examples))
    algos = list(dict.fromkeys(a for _, a in examples))
    fig, axes = plt.subplots(len(tasks), len(algos) + 1, figsize=(4.2 * (len(algos) + 1), 4 * len(tasks)),
                             squeeze=False)
    for i, env_id in enumerate(tasks):
        for j, algo in enumerate(algos):
            ax, res = axes[i, j], examples[(env_id, algo)]
            draw_task(ax, env_id)
            for path, g in zip(res.paths, res.goal_index, strict=True):
                ax.plot(path[:, 0], path[:, 1], lw=0.7, alpha=0.5, color=f"C{g}" if g >= 0 else "k")
            s = res.summary()
            ax.set_title(f"{algo.upper()} on {env_id} (seed {example_seed})\n"
                         f"success {s['success_rate']:.2f}, "
                         f"entropy {s['goal_entropy']:.2f}/{s['goal_entropy_max']:.2f}", fontsize=9)
        ax = axes[i, -1]
        sel = [a for a in summary if a["env_id"] == env_id]
        n_goals = len(sel[0]["goal_fractions_mean"])
        width = 0.8 / len(sel)
        for k, a in enumerate(sel):
            ax.bar(np.arange(n_goals) + k * width, a["goal_fractions_mean"], width, label=a["algo"].upper())
        ax.axhline(1 / n_goals, color="k", ls=":", lw=0.8, label="uniform over goals")
        names = ["left", "right"] if n_goals == 2 else [f"goal {k}" for k in range(n_goals)]
        ax.set_xticks(np.arange(n_goals) + 0.4 - width / 2, names)
        ax.set(ylabel="fraction of episodes", ylim=(0, 1), title=f"{env_id}: mean over seeds")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--algos", nargs="+", default=list(ALGOS))
    parser.add_argument("--steps", type=int, default=None, help="env steps per run (default: sql.yaml's)")
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "multigoal_modes"))
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster ('auto', or host:port); default: start Ray on "
                             "this machine's CPUs")
    parser.add_argument("--max-concurrent", type=int, default=2,
                        help="at most this many runs at once (one CPU and one torch thread each)")
    parser.add_argument("--storage", default="runs/sweeps",
                        help="where the Ray Tune trials are kept (on a cluster: a path all nodes share)")
    parser.add_argument("--fresh", action="store_true",
                        help="run every job again instead of resuming the finished ones of the same command")
    parser.add_argument("--sql-kwargs", type=json.loads, default=None,
                        help="JSON dict over SQL's config (policy_kwargs merged key by key); diagnostics")
    args = parser.parse_args()
    jobs = []
    for env_id in args.tasks:
        steps = args.steps or resolve("sql", env_id, 0, None, CONFIGS / "sql.yaml").total_timesteps
        for algo in args.algos:
            for seed in args.seeds:
                jobs.append({"algo": algo, "env_id": env_id, "seed": seed, "steps": steps,
                             "episodes": args.episodes, "keep_paths": seed == args.seeds[0],
                             **({"sql_kwargs": args.sql_kwargs} if args.sql_kwargs else {})})
    results = run_parallel(run_one, jobs, name=Path(args.out).name, storage=args.storage,
                           address=args.address, max_concurrent=args.max_concurrent, resume=not args.fresh)
    rows = [r["row"] for r in results]
    examples = {(job["env_id"], job["algo"]): example_result(r["example"])
                for job, r in zip(jobs, results, strict=True) if job["keep_paths"]}
    summary = aggregate(rows)
    command = "python experiments/benchmarks/multigoal_modes.py " + " ".join(
        [f"--seeds {' '.join(map(str, args.seeds))}", f"--episodes {args.episodes}"]
        + ([f"--steps {args.steps}"] if args.steps else [])
        + ([f"--max-concurrent {args.max_concurrent}"] if args.max_concurrent != 2 else [])
        + ([f"--address {args.address}"] if args.address else [])
        + ([f"--tasks {' '.join(args.tasks)}"] if args.tasks != list(TASKS) else [])
        + ([f"--algos {' '.join(args.algos)}"] if args.algos != list(ALGOS) else [])
        + ([f"--sql-kwargs '{json.dumps(args.sql_kwargs)}'"] if args.sql_kwargs else []))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "torch": torch.__version__, "python": platform.python_version(),
            "threads": 1, "log4": math.log(4), "log2": math.log(2)}
    data = {"meta": meta, "summary": summary, "runs": rows}
    out.with_suffix(".json").write_text(json.dumps(data, indent=2))
    md = markdown(summary, command, rows, out.with_suffix(".png").name)
    out.with_suffix(".md").write_text(md)
    figure(examples, summary, out.with_suffix(".png"), example_seed=args.seeds[0])
    print(md)


if __name__ == "__main__":
    main()
