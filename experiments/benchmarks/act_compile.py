"""What SQL's acting would cost as one compiled function: a probe for issues 11 and 12.

SQL acts (``SQL.predict``, and ``_sample_action`` while learning) by sampling-importance-
resampling from the proposal's defensive mixture and then a few MALA steps on the twin ReLU
critics' energy max_i E_i(s, a). At one state (one env) every op is tiny, so the time is per-op
overhead: ~10x SAC's ``predict``. This script writes the same act as one pure function of the
weights, the state and pre-drawn random numbers (from the library's own pieces:
:func:`ebrl._stacked.stack`, :class:`ebrl._stacked.StackedMax`, the proposal's density and
:meth:`ebrl.samplers.MALA.step`), and times, side by side in one process on one torch thread,
CPU ms per action at one state:

- ``SAC.predict`` (SB3, the peer), and ``SQL.predict`` as shipped (eager, with its checks);
- the pure act, eager, and through :func:`torch.compile` (``fullgraph=True``, inductor's C++).

It also reports the compile time and the largest difference between the eager and compiled
pure acts for the same draws (the same algorithm to float precision). The pure act differs from
the shipped path only in how the SIR picks are drawn (Gumbel-max instead of
``torch.multinomial``: the same distribution) and in skipping the diagnostics and checks.

    .venv/bin/python experiments/benchmarks/act_compile.py            # ~1 min on 2 cores

Writes ``experiments/results/act_compile.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch
from stable_baselines3 import SAC

from ebrl._stacked import StackedMax, stack
from ebrl.agents import SQL
from ebrl.proposals import _EDGE, _log_prob, _scale, mixture_log_prob
from ebrl.samplers.state import ChainState

ROOT = Path(__file__).resolve().parents[2]


def make_pure_act(model: SQL) -> tuple[Callable[..., tuple[torch.Tensor, torch.Tensor]], Callable[[], tuple]]:
    """The default SQL act at one state as a pure function, and a function drawing its noise."""
    boltzmann = model.policy.boltzmann
    proposal, sampler = boltzmann.proposal, boltzmann.sampler
    members = list(boltzmann.energy.members)
    act, d = members[0].act, model.policy.act_dim
    n_cand, n_steps, n_chains = boltzmann.n_candidates, sampler.n_steps, 1
    n_u = math.ceil(boltzmann.defensive * n_cand)

    def pure_act(states, xi, a_u, gumbel, noise, unif, temp, log_step_scale):
        energy = StackedMax(stack(members), act, states, d)
        mean, log_std = proposal._gaussian(states)
        mean, log_std = mean[:, None, :], log_std[:, None, :]
        a_q = torch.tanh(mean + log_std.exp() * xi).clamp(-1.0 + _EDGE, 1.0 - _EDGE)
        a = torch.cat([2.0 * a_u - 1.0, a_q], dim=1)
        log_q = mixture_log_prob(_log_prob(mean, log_std, a), d, n_u / n_cand)
        e_c, g_c = energy.closed_form_grad(a)
        # SIR: picks with probability ∝ exp(-E/alpha)/q_mix, by Gumbel-max (no host-side sampling).
        idx = (-e_c / temp - log_q)[:, None, :].add(gumbel).argmax(-1)
        pick = idx[..., None].expand(-1, -1, d)
        eps = (_scale(mean[:, 0], log_std[:, 0]) ** 2).mean(-1) * d ** (-1.0 / 3.0)
        eps = (eps * log_step_scale.exp()).clamp(1e-12, 1.0)
        state = ChainState(
            torch.gather(a, 1, pick), torch.gather(e_c, 1, idx), torch.gather(g_c, 1, pick),
            eps.log().reshape(-1, 1, 1),
        )
        accepted = []
        for k in range(n_steps):
            draws = {"noise": noise[k], "uniform": unif[k]}
            state, info = sampler.step(energy, state, draws, temp, k == n_steps - 1)
            accepted.append(info.accepted.mean())
        return state.position, torch.stack(accepted).mean()

    def draws() -> tuple:
        u = torch.rand(1, n_chains, n_cand).clamp_min(1e-20)
        return (
            torch.randn(1, n_cand - n_u, d), torch.rand(1, n_u, d), -torch.log(-torch.log(u)),
            torch.randn(n_steps, 1, n_chains, d), torch.rand(n_steps, 1, n_chains),
        )

    return pure_act, draws


def cpu_ms(fn: Callable[[], Any], n: int) -> float:
    fn()
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env-id", default="HalfCheetah-v5")
    parser.add_argument("--n", type=int, default=500, help="timed actions per variant")
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "act_compile.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    env = gym.make(args.env_id)
    obs, _ = env.reset(seed=0)
    sac = SAC("MlpPolicy", env, seed=0, device="cpu")
    sql = SQL("MlpPolicy", env, seed=0, device="cpu")
    sql.policy.set_training_mode(False)
    pure_act, draws = make_pure_act(sql)
    states = torch.as_tensor(obs, dtype=torch.float32)[None]
    temp = torch.tensor(sql.policy.boltzmann.temperature)
    scale = sql.policy.log_step_scale
    rows: dict[str, float] = {}
    rows["SAC.predict (SB3)"] = cpu_ms(lambda: sac.predict(obs), args.n)
    rows["SQL.predict (shipped, eager)"] = cpu_ms(lambda: sql.predict(obs), args.n)
    with torch.no_grad():
        rows["SQL pure act, eager"] = cpu_ms(lambda: pure_act(states, *draws(), temp, scale), args.n)
        compiled = torch.compile(pure_act, fullgraph=True, dynamic=False)
        fixed = draws()
        start = time.time()
        out_c = compiled(states, *fixed, temp, scale)
        compile_s = time.time() - start
        out_e = pure_act(states, *fixed, temp, scale)
        max_diff = float((out_c[0] - out_e[0]).abs().max())
        rows["SQL pure act, torch.compile"] = cpu_ms(lambda: compiled(states, *draws(), temp, scale), args.n)
        rows["noise draws alone"] = cpu_ms(draws, args.n)
    result = {
        "env_id": args.env_id,
        "cpu_ms_per_action": rows,
        "compile_wall_s": compile_s,
        "max_abs_diff_eager_vs_compiled": max_diff,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, torch {torch.__version__}, 1 torch thread",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sac_ms = rows["SAC.predict (SB3)"]
    lines = [
        "# SQL's act at one state: shipped eager path vs one compiled function",
        "",
        f"Written by `{result['command']}` ({result['date']}; {result['machine']}). "
        "See the script's docstring for what each row runs. CPU ms per action at one "
        f"{args.env_id} state, {args.n} actions per row, one process.",
        "",
        "| variant | CPU ms / action | / SAC.predict |",
        "|---|---|---|",
        *(f"| {name} | {ms:.3f} | {ms / sac_ms:.2f}x |" for name, ms in rows.items()),
        "",
        f"Compile time (first call, wall): {compile_s:.1f} s. Largest |eager - compiled| action "
        f"coordinate for the same draws: {max_diff:.1e}.",
        "",
    ]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
