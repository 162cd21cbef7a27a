"""Is a stalled SQL run limited by its act or by its critic? (diagnostic, issue 11)

Trains ``SQL("MlpPolicy", env)`` with its defaults for ``--steps`` env steps, then scores, on the
same evaluation episodes, (1) the deterministic act, (2) the stochastic act, (3) a much
stronger search of the same learned critic: the argmax of min_i Q_i(s, a) over ``--candidates``
draws of the defensive proposal mixture per step, and (4) the learned proposal's mode
tanh(mu_phi(s)) with no search on the critic at all (as SAC acts with its mean), and (5) the
mean of the Boltzmann policy E_pi[a], estimated by self-normalised importance sampling over
``--mean-draws`` draws of q_phi with a fixed seed (a deterministic function of the state, and a
property of the energy's policy, not of q_phi, as the draws grow). If (3) is no better than (1), a
better act cannot help: the critic is what limits the return. Actions of (3)-(5) live in
[-1, 1]^d and are rescaled to the env's box as ``predict`` does.

    python experiments/benchmarks/act_vs_critic.py --env-id Hopper-v5 --seed 1 --steps 20000
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

from ebrl.agents import SQL
from ebrl.proposals import defensive_sample


def episodes(env_id: str, act: Callable[[np.ndarray], np.ndarray], n: int) -> list[float]:
    """Returns of ``n`` episodes (env seeds 10000 + k) under ``act``."""
    env, out = gym.make(env_id), []
    for k in range(n):
        obs, _ = env.reset(seed=10_000 + k)
        done, total = False, 0.0
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            done = terminated or truncated
        out.append(total)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--candidates", type=int, default=1024)
    parser.add_argument("--episodes", type=int, default=5)
    parser.add_argument("--mean-draws", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = SQL("MlpPolicy", args.env_id, seed=args.seed, device="cpu")
    start = time.process_time()
    model.learn(args.steps, progress_bar=True)
    print(f"trained {args.steps} steps in {time.process_time() - start:.0f} CPU s")
    policy = model.policy

    def search(obs: np.ndarray) -> np.ndarray:
        states = torch.as_tensor(obs, dtype=torch.float32)[None]
        with torch.no_grad():
            draw = defensive_sample(policy.boltzmann.proposal, states, args.candidates, policy.defensive)
            energy = policy.energy(states.expand(args.candidates, -1), draw.actions[0])
        return policy.unscale_action(draw.actions[0, energy.argmin()].numpy())

    def proposal_mode(obs: np.ndarray) -> np.ndarray:
        states = torch.as_tensor(obs, dtype=torch.float32)[None]
        with torch.no_grad():
            return policy.unscale_action(policy.boltzmann.proposal.mode(states)[0].numpy())

    def boltzmann_mean(obs: np.ndarray) -> np.ndarray:
        states = torch.as_tensor(obs, dtype=torch.float32)[None]
        fixed = torch.Generator().manual_seed(0)
        with torch.no_grad():
            actions, log_q = policy.boltzmann.proposal.rsample(states, args.mean_draws, generator=fixed)
            energy = policy.energy(states.expand(args.mean_draws, -1), actions[0])
            weights = torch.softmax(-energy / policy.boltzmann.temperature - log_q[0], dim=0)
            return policy.unscale_action((weights[:, None] * actions[0]).sum(0).numpy())

    acts = {"deterministic act": lambda o: model.predict(o, deterministic=True)[0],
            "stochastic act": lambda o: model.predict(o, deterministic=False)[0],
            f"argmax of min-Q over {args.candidates} candidates": search,
            "proposal mode tanh(mu_phi(s)), no search": proposal_mode,
            f"Boltzmann mean, self-normalised IS over {args.mean_draws} fixed draws of q_phi": boltzmann_mean}
    for name, act in acts.items():
        returns = episodes(args.env_id, act, args.episodes)
        print(f"{name}: mean {np.mean(returns):.1f} ({' / '.join(f'{r:.0f}' for r in returns)})")


if __name__ == "__main__":
    main()
