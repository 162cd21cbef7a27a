"""DiscreteSQL stability runs: one algorithm x settings x seeds on a discrete task, evaluated every
``--eval-every`` steps, each finished run appended to ``experiments/results/discrete_runs.jsonl``.

Settings are chosen on *tuning seeds* of CartPole-v1 (10, 11, 12) and then reported, frozen, on
seeds 0-4 of CartPole-v1 and on Acrobot-v1 (never tuned on), side by side with SB3 DQN on
rl-baselines3-zoo hyperparameters. ``--report`` writes ``experiments/results/discrete.md``.

    python experiments/benchmarks/discrete_tuning.py CartPole-v1 --algo DiscreteSQL --seeds 10 11 12 \\
        --name lin_lr --kwargs "dict(learning_rate='lin')"
    python experiments/benchmarks/discrete_tuning.py --report
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from tqdm import tqdm

from ebrl.agents import DiscreteSQL
from ebrl.experiments.config import parse_dict_call

RESULTS = Path(__file__).resolve().parents[1] / "results"
OUT = RESULTS / "discrete_runs.jsonl"
# rl-baselines3-zoo DQN hyperparameters (hyperparams/dqn.yml); DiscreteSQL takes the same, with the
# Boltzmann policy softmax(Q/alpha) in place of epsilon-greedy.
ZOO = {
    "CartPole-v1": {"learning_rate": 2.3e-3, "batch_size": 64, "buffer_size": 100_000,
                    "learning_starts": 1000, "gamma": 0.99, "target_update_interval": 10,
                    "train_freq": 256, "gradient_steps": 128,
                    "policy_kwargs": {"net_arch": [256, 256]}},
    "Acrobot-v1": {"learning_rate": 6.3e-4, "batch_size": 128, "buffer_size": 50_000, "learning_starts": 0,
                   "gamma": 0.99, "target_update_interval": 250, "train_freq": 4, "gradient_steps": -1,
                   "policy_kwargs": {"net_arch": [256, 256]}},
}  # fmt: skip
DQN_EXPLORATION = {"CartPole-v1": {"exploration_fraction": 0.16, "exploration_final_eps": 0.04},
                   "Acrobot-v1": {"exploration_fraction": 0.12, "exploration_final_eps": 0.1}}
STEPS = {"CartPole-v1": 50_000, "Acrobot-v1": 100_000}


class Evaluations(BaseCallback):
    """Deterministic evaluation every ``every`` env steps on a separately seeded env."""

    def __init__(self, env_id: str, seed: int, every: int, n_episodes: int, bar: tqdm) -> None:
        super().__init__()
        self.env = make_vec_env(env_id, n_envs=1, seed=10_000 + seed)
        self.every, self.n_episodes, self.bar = every, n_episodes, bar
        self.curve: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        self.bar.update(1)
        if self.num_timesteps % self.every == 0:
            mean, _ = evaluate_policy(self.model, self.env, n_eval_episodes=self.n_episodes,
                                      deterministic=True)
            self.curve.append((self.num_timesteps, float(mean)))
            self.bar.set_postfix(last=f"{mean:.0f}")
        return True


def settings(env_id: str, algo: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    base = dict(ZOO[env_id], **(DQN_EXPLORATION[env_id] if algo == "DQN" else {"alpha": 0.01}))
    out = {**base, **kwargs}
    if out.get("learning_rate") == "lin":  # zoo's lin_<x>: linear decay from the zoo's rate to 0
        lr0 = base["learning_rate"]
        out["learning_rate"] = lambda progress: lr0 * progress
    return out


def run(env_id: str, algo: str, seed: int, name: str, kwargs_text: str, every: int) -> dict[str, Any]:
    kwargs = parse_dict_call(kwargs_text, "--kwargs")
    cls = DQN if algo == "DQN" else DiscreteSQL
    steps = STEPS[env_id]
    torch.set_num_threads(1)
    model = cls("MlpPolicy", make_vec_env(env_id, n_envs=1, seed=seed), seed=seed,
                **settings(env_id, algo, kwargs))
    with tqdm(total=steps, desc=f"{algo} {name} {env_id} s{seed}", mininterval=5) as bar:
        evals = Evaluations(env_id, seed, every, 10, bar)
        start, cpu = time.time(), time.process_time()
        model.learn(steps, callback=evals)
    finals = [r for _, r in evals.curve]
    return {"env_id": env_id, "algo": algo, "name": name, "kwargs": kwargs_text, "seed": seed,
            "steps": steps, "curve": evals.curve, "final": finals[-1],
            "min_last_half": min(finals[len(finals) // 2:]),
            "wall_s": time.time() - start, "cpu_s": time.process_time() - cpu,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.machine()}


def role(seed: int) -> str:
    """Seeds 10 and up were used to choose settings (tuning); seeds below 10 are reported."""
    return "tuning" if seed >= 10 else "reported"


# Rounds of selection on the CartPole-v1 tuning seeds 10-19 after the first: (label, candidates,
# incumbent wins ties); the first candidate is the incumbent. Ties in the count of finals >= 475 go
# to the incumbent where the round's rule says so, else to the higher mean of the last half.
ROUNDS = (("second", ("munchausen", "munchausen_lin", "munchausen_b256"), False),
          ("third", ("munchausen", "munchausen_lr1e-3"), True),
          ("fourth", ("munchausen", "munchausen_avg0.99", "munchausen_avg0.999"), True),
          ("fifth", ("munchausen", "munchausen_auto0.1", "munchausen_auto0.2"), True),
          ("sixth", ("munchausen", "munchausen_tui1024", "munchausen_tui4096"), True))


def last_half(rs: list[dict[str, Any]]) -> list[float]:
    """Every evaluation of the second half of each run, pooled over the runs (seeds)."""
    return [v for r in rs for _, v in r["curve"][len(r["curve"]) // 2:]]


def round_outcome(groups: dict[tuple[str, str, str, str], list[dict[str, Any]]], label: str,
                  candidates: tuple[str, ...], incumbent_wins_ties: bool) -> str:
    """Apply a round's rule to the runs: most tuning finals >= 475 over seeds 10-19."""
    score = {}
    for name in candidates:
        rs = groups.get(("CartPole-v1", "tuning", "DiscreteSQL", name), [])
        if sorted(r["seed"] for r in rs) != list(range(10, 20)):
            return f"Outcome of the {label} round: pending (`{name}` lacks some of tuning seeds 10-19)."
        incumbent = incumbent_wins_ties and name == candidates[0]
        score[name] = (sum(r["final"] >= 475 for r in rs), incumbent, float(np.mean(last_half(rs))))
    chosen = max(candidates, key=lambda n: score[n])
    counts = ", ".join(f"`{n}` {score[n][0]} of 10" for n in candidates)
    reported = groups.get(("CartPole-v1", "reported", "DiscreteSQL", chosen), [])
    below = sum(r["final"] < 475 for r in reported)
    return (f"Outcome of the {label} round: tuning finals >= 475: {counts}; chosen: `{chosen}`. "
            f"On the reported CartPole-v1 seeds it ends below 475 in {below} of {len(reported)} runs"
            + (": the target (no seed below 475) is not met." if below else "."))


def report() -> str:
    runs = [json.loads(line) for line in OUT.read_text().splitlines() if line.strip()]
    groups: dict[tuple[str, str, str, str], list[dict[str, Any]]] = {}
    for r in runs:  # tuning and reported seeds are never pooled
        groups.setdefault((r["env_id"], role(r["seed"]), r["algo"], r["name"]), []).append(r)
    lines = ["# DiscreteSQL stability vs DQN", "",
             "Written by `python experiments/benchmarks/discrete_tuning.py --report` from "
             "`discrete_runs.jsonl` (each run's command: the script with the row's env, algo, seeds, "
             "name and kwargs). Deterministic evaluation, 10 episodes every 5k steps (CartPole) or 10k "
             "(Acrobot) on a separately seeded env. Tuning seeds: 10 and up, of CartPole-v1 only; reported "
             "seeds: 0-4 (CartPole-v1), 0-2 (Acrobot-v1, never tuned on).", "",
             "Selection rule (written 2026-12-03 15:55 UTC, before any reported run of these settings): "
             "the reported DiscreteSQL setting is the tuning row whose three finals are all >= 475 and "
             "whose mean of the last half is highest: `munchausen` (415.5; `zoo` 376.1 is reported too, "
             "as the plain soft Q-learning baseline). DQN on the tuning seeds is shown for reference "
             "only (it was not tuned).", "",
             "Second round (rule written 2026-12-03 21:30 UTC, before any run of its candidates): three "
             "tuning seeds cannot measure a collapse rate, so the tuning seeds become 10-19. Candidates: "
             "`munchausen` (the reported setting; seeds 13-19 added), `munchausen_lin` (its learning "
             "rate decayed linearly to 0, zoo's `lin_`) and `munchausen_b256` (batch 256). The chosen "
             "setting has the most tuning finals >= 475 over seeds 10-19 (ties: the higher mean of the "
             "last half); if it is not `munchausen` it is run once on the reported seeds (CartPole-v1 "
             "0-4, Acrobot-v1 0-2) and reported, whatever it gives.", "",
             round_outcome(groups, *ROUNDS[0]), "",
             "Third round (rule written 2026-12-07 10:45 UTC, before any run of seeds 13-19 of its "
             "candidate; what prompted it: the reported seeds of `munchausen` missed the target, 2 of 5 "
             "below 475): `munchausen_lr1e-3` (3 of 3 tuning finals >= 475 in the first round, like "
             "`munchausen` and `zoo`, which have since ended below 475 on reported seeds) gets tuning "
             "seeds 13-19. It replaces `munchausen` "
             "only if it has more tuning finals >= 475 over seeds 10-19 (ties keep `munchausen`); if so, "
             "it is run once on the reported seeds (CartPole-v1 0-4; Acrobot-v1 0-2 with the same "
             "arguments, learning rate 1e-3 in place of zoo's 6.3e-4) and reported, whatever it gives.", "",
             round_outcome(groups, *ROUNDS[1]), "",
             "Fourth round (rule written 2026-12-07 11:20 UTC, before any run of its candidates): the "
             "tuning finals that fall below 475 come from policies that swing between 500 and ~150 "
             "from one evaluation to the next (worst of the last half 61-180 even in seeds that end at "
             "500), so the candidates act with an exponential moving average of the Q-network's weights "
             "(`average_decay`, weight averaging after Nikishin et al. 2018; the targets are unchanged): "
             "`munchausen_avg0.99` (about the last 100 gradient steps, 200 env steps) and "
             "`munchausen_avg0.999` (about 1000, 2000 env steps), on tuning seeds 10-19. The one with "
             "the most tuning finals >= 475 replaces `munchausen` only if it has more than `munchausen`'s "
             "9 (ties keep `munchausen`; between the two candidates, the higher mean of the last half); "
             "if one does, it is run once on the reported seeds (CartPole-v1 0-4, Acrobot-v1 0-2, the "
             "same arguments) and reported, whatever it gives.", "",
             round_outcome(groups, *ROUNDS[2]), "",
             "Fifth round (rule written 2026-12-07 13:27 UTC, before any run of its candidates): with a "
             "fixed alpha = 0.01 the acting policy grows ever greedier as Q grows (`munchausen`, tuning "
             "seed 13: entropy 0.022 nats at 12.5k steps, 0.009 at 40k, Q from 32 to 68), greedier than "
             "DQN's final epsilon-greedy (0.098 nats at epsilon 0.04 on two actions). The candidates "
             "learn alpha (new: `alpha=\"auto_<init>\"`, SAC-discrete's temperature loss with the exact "
             "entropy of softmax(Q/alpha)), starting at 0.01: `munchausen_auto0.1` (target 0.1 log 2 = "
             "0.069 nats, the library's default) and `munchausen_auto0.2` (0.139 nats), on tuning seeds "
             "10-19. The one with the most tuning finals >= 475 replaces `munchausen` only if it has more "
             "than `munchausen`'s 9 (ties keep `munchausen`; between the two candidates, the higher mean "
             "of the last half); if one does, it is run once on the reported seeds (CartPole-v1 0-4, "
             "Acrobot-v1 0-2, the same arguments) and reported, whatever it gives.", "",
             round_outcome(groups, *ROUNDS[3]), "",
             "Sixth round (rule written 2026-12-08 00:00 UTC, before any run of its candidates): with "
             "zoo's `train_freq=256, gradient_steps=128` and a target refreshed every 10 env steps, the "
             "target is the online network of the previous burst, so every burst is one fitted-Q "
             "iteration of 128 Adam steps (learning rate 2.3e-3) against a target one burst old; the "
             "fourth round slowed the *acting* weights and did not help, so these candidates slow the "
             "*target* instead (DQN's own remedy, Mnih et al. 2015): `munchausen_tui1024` (target "
             "refreshed every 4 bursts, 512 gradient steps) and `munchausen_tui4096` (every 16 bursts), "
             "on tuning seeds 10-19. The one with the most tuning finals >= 475 replaces `munchausen` "
             "only if it has more than `munchausen`'s 9 (ties keep `munchausen`; between the two "
             "candidates, the higher mean of the last half); if one does, it is run once on the "
             "reported seeds (CartPole-v1 0-4, Acrobot-v1 0-2, the same arguments) and reported, "
             "whatever it gives.", "",
             round_outcome(groups, *ROUNDS[4]), "",
             "| env | split | algo | settings | seeds | final per seed | mean final | mean of the last half "
             "| worst of the last half |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (env_id, split, algo, name), rs in sorted(groups.items()):
        rs = sorted(rs, key=lambda r: r["seed"])
        finals = [r["final"] for r in rs]
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(f"| {env_id} | {split} | {algo} | {name} `{rs[0]['kwargs']}` | {seeds} "
                     f"| {' / '.join(f'{f:.0f}' for f in finals)} | {np.mean(finals):.1f} "
                     f"| {np.mean(last_half(rs)):.1f} | {min(r['min_last_half'] for r in rs):.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env_id", nargs="?", choices=list(ZOO))
    parser.add_argument("--algo", choices=["DiscreteSQL", "DQN"], default="DiscreteSQL")
    parser.add_argument("--seeds", type=int, nargs="+", default=[10, 11, 12])
    parser.add_argument("--name", default="zoo")
    parser.add_argument("--kwargs", default="dict()", help="constructor arguments over the zoo settings")
    parser.add_argument("--eval-every", type=int, default=None,
                        help="default: 5000 (CartPole), 10000 (Acrobot)")
    parser.add_argument("--report", action="store_true")
    args = parser.parse_args()
    if args.report:
        (RESULTS / "discrete.md").write_text(report())
        print(report())
        return
    every = args.eval_every or (5_000 if args.env_id == "CartPole-v1" else 10_000)
    for seed in args.seeds:
        record = run(args.env_id, args.algo, seed, args.name, args.kwargs, every)
        print(f"{args.algo} {args.name} {args.env_id} seed {seed}: final {record['final']:.1f}, worst of the "
              f"last half {record['min_last_half']:.1f}, {record['cpu_s']:.0f} CPU s", flush=True)
        with OUT.open("a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
