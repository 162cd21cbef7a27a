"""Soak test: SQL trained for many steps with an evaluation and a resumable checkpoint every 5k steps.

    python experiments/benchmarks/soak.py                       # 50k steps (the issue's soak)
    python experiments/benchmarks/soak.py --steps 20000 --tag short

Reports peak RSS over time (it must level off once the replay buffer is full), checkpoint write and
load times, and that every checkpoint loads (``load_training_checkpoint`` + ``restore`` into a
fresh model, no unpickling) and evaluates, and that each ``model.zip`` loads through ``safe_load``.
Writes experiments/results/soak{_tag}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from ebrl.agents import SQL  # noqa: E402
from ebrl.agents.common.safe_load import safe_load, save_model  # noqa: E402
from ebrl.experiments.checkpoints import CheckpointDir, load_training_checkpoint, restore  # noqa: E402
from ebrl.experiments.evaluate import evaluate  # noqa: E402
from ebrl.experiments.faults import CheckpointCallback, StopRequest  # noqa: E402

RESULTS = ROOT / "experiments" / "results"
ENV_ID = "Pendulum-v1"


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make(seed: int, buffer_size: int) -> SQL:
    from stable_baselines3.common.env_util import make_vec_env

    return SQL(
        "MlpPolicy",
        make_vec_env(ENV_ID, n_envs=1, seed=seed),
        seed=seed,
        device="cpu",
        buffer_size=buffer_size,
        learning_starts=500,
        batch_size=64,
        n_particles=8,
        alpha=0.1,
        learning_rate=1e-3,
        policy_kwargs={"net_arch": [64, 64], "search_steps": 5, "n_chains": 8},
    )


class Soak(CheckpointCallback):
    """Checkpoint every ``every`` steps, then time a load of it into a fresh model and evaluate that."""

    def __init__(
        self, directory: CheckpointDir, every: int, out: Path, args: argparse.Namespace, records: list[dict]
    ) -> None:
        super().__init__(directory, every, StopRequest())
        self.out, self.args, self.records = out, args, records

    def save(self, env_state: bool = True) -> Path:
        t0 = time.perf_counter()
        path = super().save(env_state)
        write_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in path.iterdir()) / 2**20
        t0 = time.perf_counter()
        zip_path = save_model(self.model, self.out / f"model_{self.model.num_timesteps}.zip")
        zip_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        fresh = make(self.args.seed, self.args.buffer_size)
        tensors, arrays, state = load_training_checkpoint(path)
        restore(fresh, tensors, arrays, state)
        load_s = time.perf_counter() - t0
        same = all(
            torch.equal(a, b)
            for a, b in zip(
                fresh.policy.state_dict().values(), self.model.policy.state_dict().values(), strict=True
            )
        )
        t0 = time.perf_counter()
        loaded = safe_load(SQL, zip_path, device="cpu")
        zip_load_s = time.perf_counter() - t0
        result = evaluate(fresh, ENV_ID, self.args.eval_episodes, seed=10_000, deterministic=True)
        zip_result = evaluate(loaded, ENV_ID, 1, seed=10_000, deterministic=True)
        rec = {
            "step": self.model.num_timesteps,
            "checkpoint_write_s": write_s,
            "checkpoint_mb": size,
            "checkpoint_load_s": load_s,
            "zip_write_s": zip_s,
            "zip_safe_load_s": zip_load_s,
            "loaded_params_equal": same,
            "eval_mean_return": result.summary()["mean_return"],
            "zip_eval_return": zip_result.returns[0],
            "rss_mb": rss_mb(),
            "buffer_filled": int(self.model.replay_buffer.size()),
        }
        self.records.append(rec)
        print(json.dumps(rec), flush=True)
        del fresh, loaded
        return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--buffer-size", type=int, default=20_000)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tag", default="")
    parser.add_argument("--workdir", default="/tmp/ebrl_soak")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.workdir)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    rss: list[tuple[float, int, float]] = []
    model = make(args.seed, args.buffer_size)
    start = time.perf_counter()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(2.0):
            rss.append((time.perf_counter() - start, int(model.num_timesteps), rss_mb()))

    threading.Thread(target=sample, daemon=True).start()
    model.learn(
        args.steps, callback=Soak(CheckpointDir(out / "checkpoints", keep=2), args.every, out, args, records)
    )
    done.set()
    wall = time.perf_counter() - start
    suffix = f"_{args.tag}" if args.tag else ""
    full_at = next((r["step"] for r in records if r["buffer_filled"] >= args.buffer_size), None)
    after = [m for _, s, m in rss if full_at is not None and s >= full_at]
    summary = {
        "steps": args.steps,
        "every": args.every,
        "buffer_size": args.buffer_size,
        "env": ENV_ID,
        "wall_s": round(wall, 1),
        "steps_per_s": round(args.steps / wall, 1),
        "peak_rss_mb": max(m for _, _, m in rss) if rss else rss_mb(),
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_growth_after_buffer_full_mb": (max(after) - after[0]) if len(after) > 1 else None,
        "all_checkpoints_load_and_evaluate": all(
            r["loaded_params_equal"] and np.isfinite(r["eval_mean_return"]) for r in records
        ),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"soak{suffix}.json").write_text(
        json.dumps({"summary": summary, "checkpoints": records, "rss": rss}, indent=1)
    )
    write_md(RESULTS / f"soak{suffix}.md", summary, records)
    plot(RESULTS / f"soak{suffix}.png", rss, records, args)
    print(json.dumps(summary, indent=1))


def write_md(path: Path, summary: dict, records: list[dict]) -> None:
    lines = [
        f"# Soak: SQL on {summary['env']}, {summary['steps']} steps, checkpoint + eval every "
        f"{summary['every']}",
        "",
        f"{summary['wall_s']} s ({summary['steps_per_s']} steps/s, {summary['threads']} torch thread, "
        f"{summary['platform']}); replay buffer {summary['buffer_size']} transitions.",
        "",
        f"- peak RSS {summary['peak_rss_mb']:.0f} MB; growth after the buffer filled: "
        f"{summary['rss_growth_after_buffer_full_mb']} MB",
        f"- every checkpoint loads (bitwise-equal parameters) and evaluates: "
        f"{summary['all_checkpoints_load_and_evaluate']}",
        "",
        "| step | ckpt write s | ckpt MB | ckpt load s | zip write s | zip safe_load s | eval return "
        "(3 det. episodes) | RSS MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['step']} | {r['checkpoint_write_s']:.3f} | {r['checkpoint_mb']:.2f} | "
            f"{r['checkpoint_load_s']:.3f} | {r['zip_write_s']:.3f} | {r['zip_safe_load_s']:.3f} | "
            f"{r['eval_mean_return']:.1f} | {r['rss_mb']:.0f} |"
        )
    path.write_text("\n".join(lines) + "\n")


def plot(path: Path, rss: list, records: list[dict], args: argparse.Namespace) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if rss:
        axes[0].plot([s for _, s, _ in rss], [m for _, _, m in rss])
    axes[0].axvline(args.buffer_size + 0, ls="--", c="gray", label="replay buffer full")
    axes[0].set(xlabel="env steps", ylabel="RSS (MB)", title="resident memory")
    axes[0].legend()
    steps = [r["step"] for r in records]
    for key in ("checkpoint_write_s", "checkpoint_load_s", "zip_write_s", "zip_safe_load_s"):
        axes[1].plot(steps, [r[key] for r in records], marker="o", label=key)
    axes[1].set(xlabel="env steps", ylabel="seconds", title="checkpoint write / load")
    axes[1].legend(fontsize=7)
    axes[2].plot(steps, [r["eval_mean_return"] for r in records], marker="o")
    axes[2].set(xlabel="env steps", ylabel="return", title="evaluation of each loaded checkpoint")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
