"""Sampler throughput against its limit: K bare forward + input-gradient passes of the same network.

For a StateActionEnergy (obs 17, act 6, 2x256 SiLU) and batch x chains in a grid, it times
K = 20 steps of Langevin and MALA, each eager and compiled (``compile=True``: every kernel step
through torch.compile), and, in the same run and on the same batch, the limit: K evaluations of E
and dE/da with nothing else (eager autograd). The ratio sampler / limit is the sampler's overhead.
Timings are the fastest of ``--repeats`` warm runs, interleaved so that all sides see the same
machine state.

``--acting`` adds the agent's view: env steps/s of acting alone (``predict`` + ``VecEnv.step``) on
HalfCheetah-v5 for SQL with its defaults (eager and compiled search) and SB3 SAC, for
``--n-envs`` parallel envs (one batched search over all envs per step), and the latency of one
SQL action for one env.

    python experiments/benchmarks/sampler_throughput.py --device cpu --threads 1 --acting
    python experiments/benchmarks/sampler_throughput.py --device cuda --grid 256x16,1024x64,4096x64 \
        --out experiments/results/sampler_throughput_cuda --acting
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from tqdm import tqdm

from ebrl import StateActionEnergy
from ebrl.samplers import MALA, Langevin

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def limit_run(energy: StateActionEnergy, states: torch.Tensor, a0: torch.Tensor, k: int) -> None:
    """K bare evaluations of E(s, a) and dE/da (state features computed once, as the samplers do)."""
    energy_fn = energy.condition(states)
    a = a0
    for _ in range(k):
        a = a.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(energy_fn(a).sum(), a)
        a = a - 1e-3 * g  # keep a data dependency so no pass can be skipped


def time_it(fn, device: torch.device) -> tuple[float, float]:
    """(wall seconds, process CPU seconds). On one CPU thread, CPU time is the work done and is
    far less disturbed than wall time by other processes on a shared machine."""
    _sync(device)
    t, c = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - t, time.process_time() - c


def _act(model, env, last: dict, n: int) -> None:
    """n stochastic ``predict`` calls, each followed by a step of all envs (``last["obs"]`` carries the
    observations from one call to the next)."""
    for _ in range(n):
        action, _ = model.predict(last["obs"], deterministic=False)
        last["obs"], *_ = env.step(action)


def acting_rows(device: torch.device, n_envs_list: list[int], repeats: int) -> list[dict]:
    """Env steps/s of acting alone for SQL (eager, per-step compiled, the fused compiled act) and
    SAC, per number of envs."""
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env

    from ebrl.agents import SQL

    agents = {
        "SQL": lambda env: SQL("MlpPolicy", env, device=device, seed=0,
                               policy_kwargs=dict(compile_act=False)),
        "SQL+compile": lambda env: SQL(
            "MlpPolicy", env, device=device, seed=0,
            policy_kwargs=dict(compile_act=False, sampler_kwargs=dict(compile=True)),
        ),
        # What SQL's default compile_act="auto" acts with in a learn() run of >= 20k env steps.
        "SQL compile_act": lambda env: SQL("MlpPolicy", env, device=device, seed=0,
                                           policy_kwargs=dict(compile_act=True)),
        "SAC": lambda env: SAC("MlpPolicy", env, device=device, seed=0),
    }
    rows = []
    for n_envs in tqdm(n_envs_list, desc="acting: n envs"):
        env = make_vec_env("HalfCheetah-v5", n_envs=n_envs, seed=0)
        models = {name: make(env) for name, make in agents.items()}
        last = {"obs": env.reset()}
        n_calls = max(20, 400 // n_envs)
        best: dict[str, tuple[float, float]] = {}
        for model in models.values():  # warm-up and compilation
            _act(model, env, last, 5)
        for _ in range(max(1, repeats // 5)):
            for name, model in models.items():
                w, c = time_it(lambda m=model, e=env, o=last, n=n_calls: _act(m, e, o, n), device)
                if name not in best or c < best[name][1]:
                    best[name] = (w, c)
        for name, (w, c) in best.items():
            rows.append({
                "agent": name, "n_envs": n_envs,
                "env_steps_per_s": n_calls * n_envs / w,
                "cpu_ms_per_env_step": 1e3 * c / (n_calls * n_envs),
                "ms_per_call": 1e3 * w / n_calls,
            })
        env.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads on CPU")
    parser.add_argument("--steps", type=int, default=20, help="K, sampler steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median)")
    parser.add_argument(
        "--grid", default="1x16,8x16,256x16,256x64", help="comma-separated batch x chains sizes"
    )
    parser.add_argument("--acting", action="store_true", help="also measure SQL/SAC acting env steps/s")
    parser.add_argument("--n-envs", default="1,8,32", help="comma-separated numbers of envs for --acting")
    parser.add_argument("--out", default=str(RESULTS / "sampler_throughput"), help="output path stem")
    args = parser.parse_args()

    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    # Each grid cell is a new shape, and a compiled step is specialised to its shape (dynamic=False):
    # allow one cache entry per (sampler, shape, last step) instead of torch's default 8.
    torch._dynamo.config.cache_size_limit = 64
    torch.manual_seed(0)
    energy = StateActionEnergy(17, 6, hidden_sizes=(256, 256)).to(device)
    k = args.steps
    samplers = {}
    # On CUDA also torch.compile's "reduce-overhead" mode: each step replayed as a CUDA graph.
    modes: list[bool | str] = [False, True] + (["reduce-overhead"] if device.type == "cuda" else [])
    for compiled in modes:
        tag = {False: "", True: "+compile", "reduce-overhead": "+cudagraphs"}[compiled]
        samplers["langevin" + tag] = Langevin(
            n_steps=k, step_size=0.1, step_size_final=1e-3, schedule="polynomial", move_clip=0.1,
            compile=compiled,
        )
        # MALA's K steps make K proposals, each one forward + input-gradient pass, plus the initial one.
        samplers["mala" + tag] = MALA(n_steps=k, step_size=0.01, compile=compiled)
    rows = []
    grid = [tuple(int(v) for v in cell.split("x")) for cell in args.grid.split(",")]
    for batch, chains in tqdm(grid, desc="batch x chains"):
        states = torch.randn(batch, 17, device=device)
        a0 = torch.rand(batch, chains, 6, device=device) * 2 - 1
        shape = (batch, chains, 6)
        runs = {
            "limit": lambda s=states, a=a0: limit_run(energy, s, a, k),
            **{
                name: lambda smp=smp, s=states, shp=shape: smp.sample(energy, shape=shp, context=s)
                for name, smp in samplers.items()
            },
        }
        for fn in runs.values():  # warm-up (and, for the compiled samplers, compilation)
            time_it(fn, device)
            time_it(fn, device)
        wall: dict[str, list[float]] = {name: [] for name in runs}
        cpu: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                w, c = time_it(fn, device)
                wall[name].append(w)
                cpu[name].append(c)
        med = {name: min(v) for name, v in wall.items()}
        med_cpu = {name: min(v) for name, v in cpu.items()}
        for name in samplers:
            rows.append(
                {
                    "sampler": name,
                    "batch": batch,
                    "chains": chains,
                    "steps": k,
                    "seconds": med[name],
                    "limit_seconds": med["limit"],
                    "ratio_to_limit": med[name] / med["limit"],
                    "cpu_ratio_to_limit": med_cpu[name] / med_cpu["limit"],
                    "chain_steps_per_s": batch * chains * k / med[name],
                }
            )
    meta = {
        "command": "python experiments/benchmarks/sampler_throughput.py "
        f"--device {args.device} --threads {args.threads} --steps {k} "
        f"--repeats {args.repeats} --grid {args.grid}"
        + (f" --acting --n-envs {args.n_envs}" if args.acting else ""),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "network": "StateActionEnergy obs 17, act 6, hidden (256, 256), SiLU",
    }
    header = (
        "| sampler | batch x chains | K | time (ms) | limit (ms) | ratio to limit (wall) "
        "| ratio (CPU time) | chain-steps/s |"
    )
    lines = [
        f"# Sampler throughput ({meta['device']})",
        "",
        f"Command: `{meta['command']}`  ",
        f"torch {meta['torch']}, {meta['threads']} thread(s); {meta['network']}; "
        f"fastest of {args.repeats} warm runs (the least disturbed by other load, as timeit advises).",
        "The limit is K bare forward + input-gradient passes of the same network on the same batch.",
        "Langevin makes K gradient passes and one forward pass (the final energies); MALA makes K + 1",
        "gradient passes (the start and K proposals), so 1/K = 5 % of its ratio is the extra pass.",
        "`+compile` is the same sampler with `compile=True` (each step one torch.compile graph, the",
        "gradient by torch.func.grad inside it); the limit stays eager autograd, so a compiled",
        "sampler can run below 1. Repeated runs of this grid differ by up to ~0.1 in the ratio.",
        f"Load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(on a shared machine the CPU-time ratio is the steadier figure).",
        "",
        header,
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['sampler']} | {r['batch']}x{r['chains']} | {r['steps']} | {1e3 * r['seconds']:.2f} | "
            f"{1e3 * r['limit_seconds']:.2f} | {r['ratio_to_limit']:.3f} | {r['cpu_ratio_to_limit']:.3f} | "
            f"{r['chain_steps_per_s']:,.0f} |"
        )
    n_envs = [int(n) for n in args.n_envs.split(",")]
    acting = acting_rows(device, n_envs, args.repeats) if args.acting else []
    if acting:
        lines += [
            "",
            "## Acting: env steps/s of `predict` + `VecEnv.step` on HalfCheetah-v5 (no learning)",
            "",
            "SQL with its defaults (SIR from q_phi + 3 MALA steps on -min(Q1, Q2)): eager",
            "(`compile_act=False`: what `predict` alone and runs under 20k steps use), each MALA step",
            "compiled (`+compile`: `sampler_kwargs=dict(compile=True)`), and the whole act as one",
            "compiled function (`compile_act`: what the default `compile_act=\"auto\"` uses in",
            "`learn` runs of 20k+ env steps); SB3 SAC with its defaults. Fresh",
            "(untrained) networks: acting costs the same work whatever the weights. One batched search",
            "serves all n envs of a step. CPU time per env step is process CPU time / env steps.",
            "",
            "| agent | n envs | env steps/s (wall) | CPU ms / env step | ms per action call | vs SAC (CPU) |",
            "|---|---|---|---|---|---|",
        ]
        sac = {r["n_envs"]: r for r in acting if r["agent"] == "SAC"}
        for r in acting:
            ratio = sac[r["n_envs"]]["cpu_ms_per_env_step"] / r["cpu_ms_per_env_step"]
            lines.append(
                f"| {r['agent']} | {r['n_envs']} | {r['env_steps_per_s']:,.0f} | "
                f"{r['cpu_ms_per_env_step']:.3f} | {r['ms_per_call']:.3f} | {ratio:.2f}x |"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "rows": rows, "acting": acting}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
