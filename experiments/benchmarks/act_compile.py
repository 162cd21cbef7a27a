"""SQL's act at one state, eager vs one compiled function (``compile_act``), against SAC's predict.

SQL acts (``SQL.predict``, and ``_sample_action`` while learning) by sampling-importance-
resampling from the proposal's defensive mixture and then a few MALA steps on the twin ReLU
critics' energy max_i E_i(s, a). At one state (one env) every op is tiny, so the time is per-op
overhead. ``compile_act=True`` runs the same act as one pure function of the weights, the state and
pre-drawn random numbers (:class:`ebrl._fused.FusedAct`) through :func:`torch.compile`. This script
times, side by side in one process on one torch thread, CPU ms per action at one state:

- ``SAC.predict`` (SB3, the peer); ``SQL.predict`` with the default eager path and with
  ``compile_act=True`` (both with SB3's and ebrl's input handling and checks);
- the fused act function alone, eager and compiled, and the noise draws it takes.

It also reports the first (compiling) call's wall time and the largest difference between the
eager and compiled function for the same draws (the same algorithm to float precision).

    .venv/bin/python experiments/benchmarks/act_compile.py            # ~1 min on 2 cores

Writes ``experiments/results/act_compile.{json,md}`` (``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import json
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

from ebrl._fused import FusedAct
from ebrl.agents import SQL

ROOT = Path(__file__).resolve().parents[2]


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
    fast = SQL("MlpPolicy", env, seed=0, device="cpu", policy_kwargs={"compile_act": True})
    for model in (sql, fast):
        model.policy.set_training_mode(False)
    b = sql.policy.boltzmann
    fused = FusedAct(b.energy, b.sampler, b.proposal, b.n_candidates, b.defensive)
    states = torch.as_tensor(obs, dtype=torch.float32)[None]
    temp, scale = torch.tensor(b.temperature), sql.policy.log_step_scale

    def draws() -> tuple:
        return fused.draws(states, 1, None)

    rows: dict[str, float] = {}
    rows["SAC.predict (SB3)"] = cpu_ms(lambda: sac.predict(obs), args.n)
    rows["SQL.predict (default, eager)"] = cpu_ms(lambda: sql.predict(obs), args.n)
    start = time.time()
    fast.predict(obs)
    compile_s = time.time() - start
    rows["SQL.predict (compile_act=True)"] = cpu_ms(lambda: fast.predict(obs), args.n)
    with torch.no_grad():
        rows["fused act alone, eager"] = cpu_ms(lambda: fused.act(states, *draws(), temp, scale), args.n)
        compiled = torch.compile(fused.act, fullgraph=True, dynamic=False)
        fixed = draws()
        out_c, out_e = compiled(states, *fixed, temp, scale), fused.act(states, *fixed, temp, scale)
        max_diff = float((out_c[0] - out_e[0]).abs().max())
        rows["fused act alone, torch.compile"] = cpu_ms(
            lambda: compiled(states, *draws(), temp, scale), args.n
        )
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
