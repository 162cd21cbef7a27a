"""One tuning run of SQL (or SAC) on a tuning-set task, evaluated every ``--eval-every`` steps.

SQL's defaults were chosen with this script on the tuning set (Pendulum-v1, HalfCheetah-v5) only;
Hopper-v5 and Walker2d-v5 were never run with it (see experiments/results/sql_tuning.md, which
lists every run with the commit it ran on). Each evaluation reports the deterministic return and
the stochastic one (5 episodes each on 5 seeded envs); ``--eval-variants`` adds deterministic
variants side by side: the noise-free search from 16 proposal quantiles (``det16``), from the
proposal's mode only (``det1``), and the proposal's mode without any search (``qmode``, SAC's
deterministic action). ``--acting proposal`` is a diagnostic: act with q_phi's draws instead of
the Boltzmann policy (SAC-like acting, everything else SQL).

    python experiments/benchmarks/sql_tuning.py HalfCheetah-v5 --seed 0 --steps 30000 --name E
    python experiments/benchmarks/sql_tuning.py Pendulum-v1 --steps 10000 --eval-every 2000 \\
        --name B_M4 --kwargs "dict(n_particles=4)"

Each finished run is appended to ``experiments/results/sql_tuning_runs.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from stable_baselines3 import SAC
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from ebrl.agents import SQL
from ebrl.experiments.config import parse_dict_call

OUT = Path(__file__).resolve().parents[1] / "results" / "sql_tuning_runs.jsonl"


def evaluate(model: BaseAlgorithm, env: Any, variants: bool) -> dict[str, float]:
    def ret(deterministic: bool) -> float:
        return round(float(evaluate_policy(model, env, n_eval_episodes=5, deterministic=deterministic)[0]), 1)

    out = {"det": ret(True), "stoch": ret(False)}
    if variants and isinstance(model, SQL) and model.policy.proposal is not None:
        boltzmann, n_chains = model.policy.boltzmann, model.policy.boltzmann.n_chains
        boltzmann.n_chains = 16
        out["det16"] = ret(True)
        boltzmann.n_chains = 1
        out["det1"] = ret(True)
        boltzmann.n_chains = n_chains
        search = model.policy._predict

        def proposal_mode(obs: Any, deterministic: bool = False) -> torch.Tensor:
            if deterministic:
                return model.policy.proposal.mode(model.policy.states(obs))
            return search(obs, deterministic)

        model.policy._predict = proposal_mode
        out["qmode"] = ret(True)
        model.policy._predict = search
    return out


def act_with_proposal(model: SQL) -> None:
    """Diagnostic: the behaviour policy becomes q_phi itself (no SIR, no MCMC)."""
    policy = model.policy

    def predict(obs: Any, deterministic: bool = False) -> torch.Tensor:
        states = policy.states(obs)
        if deterministic:
            return policy.proposal.mode(states)
        return policy.proposal.rsample(states, 1)[0][:, 0].detach()

    policy._predict = predict


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("env_id")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=30_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--name", required=True, help="the run's label in the results")
    parser.add_argument("--algo", choices=["SQL", "SAC"], default="SQL")
    parser.add_argument("--kwargs", default="dict()",
                        help="constructor arguments, e.g. 'dict(n_particles=2)'")
    parser.add_argument("--acting", choices=["boltzmann", "proposal"], default="boltzmann")
    parser.add_argument("--eval-variants", action="store_true")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    kwargs = parse_dict_call(args.kwargs, "--kwargs")
    env = make_vec_env(args.env_id, n_envs=1, seed=args.seed)
    eval_env = make_vec_env(args.env_id, n_envs=5, seed=10_000 + args.seed)
    model = (SQL if args.algo == "SQL" else SAC)("MlpPolicy", env, seed=args.seed, device="cpu", **kwargs)
    if args.acting == "proposal":
        act_with_proposal(model)  # type: ignore[arg-type]
    curve: list[dict[str, Any]] = []

    class Curve(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % args.eval_every == 0:
                point = {"step": self.num_timesteps, **evaluate(self.model, eval_env, args.eval_variants)}
                logged = self.model.logger.name_to_value
                for key in ("train/alpha", "train/entropy"):
                    if key in logged:
                        point[key] = round(float(logged[key]), 4)
                curve.append(point)
                print(args.name, args.env_id, args.seed, point, flush=True)
            return True

    cpu = time.process_time()
    model.learn(args.steps, callback=Curve())
    record = {"env": args.env_id, "seed": args.seed, "name": args.name, "algo": args.algo, "kwargs": kwargs,
              "acting": args.acting, "curve": curve, "cpu_s": time.process_time() - cpu}
    with OUT.open("a") as f:
        f.write(json.dumps(record) + "\n")
    print("done", record, flush=True)


if __name__ == "__main__":
    main()
