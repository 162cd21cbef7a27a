"""Where the time goes: one env step + one gradient step of SQL vs SB3 SAC on HalfCheetah-v5.

For each algorithm (its defaults; ``seed=0``, ``device="cpu"``, one torch thread; SQL plans its
act for a run of ``--run-steps`` env steps, 50k, as ``learn(50_000)`` would):

1. warm-up ``learn(L + 200)`` with ``learning_starts=L``, so the replay buffer holds data and the
   timed steps all act with the policy and take a gradient step;
2. ``learn(N, reset_num_timesteps=False)`` without a profiler: the honest CPU ms per env step;
3. the same under cProfile with a process-CPU-time clock; the cumulative times of chosen
   functions are aggregated into disjoint phases (env step, act, replay sample, target,
   backward, optimizer step, the rest of train, other) and checked not to double count;
4. ``learn(T)`` (``--torch-steps``, 100) under ``torch.profiler`` (CPU activities): the top ops
   by self CPU time.

    .venv/bin/python experiments/benchmarks/sql_profile.py                   # label "after"
    .venv/bin/python experiments/benchmarks/sql_profile.py --steps 300 --warmup 1000 --algos SQL SAC
    # the "before" figures, from the last commit checked out in a worktree:
    git -C /work/main worktree add /tmp/ebrl_before HEAD
    cp experiments/benchmarks/sql_profile.py /tmp/ebrl_before/experiments/benchmarks/
    cd /tmp/ebrl_before && PYTHONPATH=/tmp/ebrl_before /work/main/.venv/bin/python \\
        experiments/benchmarks/sql_profile.py --steps 300 --warmup 1000 --label before \\
        --out /work/main/experiments/results/sql_profile.json

The script imports the project (``agents``) from the checkout it lives in (its root goes first
on ``sys.path``) and prints ``agents.__file__`` to show it. Results go to ``--out`` (a JSON dict
keyed by label, then by algorithm; writing a label replaces only the algorithms just measured
and keeps every other entry) and to the Markdown file next to it (``.md``), rebuilt from the
whole JSON. Times are process CPU time, so another job on the machine barely moves them; the
cProfile figures include the profiler's own overhead (compare the unprofiled row).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import inspect
import json
import os
import platform
import pstats
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ENV_ID = "HalfCheetah-v5"
# Method names that compute SQL's soft value V(s') / the target, tried in this order: the
# first one the algorithm's class defines is the "target" phase (the other engineer may rename it).
TARGET_CANDIDATES = (
    "_soft_value",
    "soft_value",
    "_target",
    "target_value",
    "_target_value",
    "_compute_target",
    "compute_target",
    "_soft_target",
    "_td_target",
    "_next_value",
)
# Disjoint phases, in table order; their sum plus "other" is the total.
PHASES = ("env step", "act", "replay sample", "target", "backward", "optimizer step", "train (rest)", "other")
TRAIN_PARTS = ("replay sample", "target", "backward", "optimizer step")
TOP_LEVEL = ("env step", "act", "train total")
TOP_OPS = 12

Func = tuple[str, int, str]  # a pstats key: (filename, first line, function name)
Matcher = Callable[[Func], bool]


# --------------------------------------------------------------------------------------------
# Finding the functions of each phase
# --------------------------------------------------------------------------------------------


def code_keys(fn: Any) -> set[Func]:
    """pstats keys of ``fn`` and of every function it wraps (``__wrapped__`` chain).

    The optimiser's ``step`` is a profiling wrapper around ``_use_grad`` around ``Adam.step``:
    all layers are entries, and :meth:`CallGraph.inflow` counts only the outermost call.
    """
    keys: set[Func] = set()
    seen: set[int] = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        fn = getattr(fn, "__func__", fn)  # bound, static and class methods
        code = getattr(fn, "__code__", None)
        if code is not None:
            keys.add((code.co_filename, code.co_firstlineno, code.co_name))
        fn = getattr(fn, "__wrapped__", None)
    return keys


def by_name(path_fragment: str, name: str) -> Matcher:
    """Match functions named ``name`` in a file whose (POSIX) path contains ``path_fragment``."""

    def match(func: Func) -> bool:
        return func[2] == name and path_fragment in Path(func[0]).as_posix()

    return match


def by_keys(keys: set[Func]) -> Matcher:
    return keys.__contains__


def find_target_method(algo_class: type) -> str | None:
    """The first of TARGET_CANDIDATES that the algorithm's class (or a base) defines as a function."""
    for name in TARGET_CANDIDATES:
        attr = inspect.getattr_static(algo_class, name, None)
        if attr is not None and callable(getattr(attr, "__func__", attr)):
            return name
    return None


def optimizers(model: Any) -> list[Any]:
    """Every torch optimiser held by the algorithm, its policy or the policy's submodules."""
    import torch

    holders = [model, model.policy, *model.policy.modules()]
    found: dict[int, Any] = {}
    for holder in holders:
        for value in vars(holder).values():
            if isinstance(value, torch.optim.Optimizer):
                found[id(value)] = value
    return list(found.values())


def phase_matchers(model: Any) -> tuple[dict[str, list[Matcher]], dict[str, str]]:
    """Matchers of every measured phase for this live model, and a note of what each one is."""
    import torch

    algo_class = type(model)
    target = find_target_method(algo_class)
    optim_keys: set[Func] = set()
    for opt in optimizers(model):
        optim_keys |= code_keys(type(opt).step)  # the patched (profiling-hook) step and what it wraps
    matchers: dict[str, list[Matcher]] = {
        # VecEnv.step = step_async + step_wait of the DummyVecEnv (the MuJoCo step and Monitor).
        "env step": [by_keys(code_keys(type(model.env).step) | code_keys(type(model.env).step_wait))],
        # OffPolicyAlgorithm._sample_action -> predict -> policy._predict (SQL: the MCMC search).
        "act": [by_keys(code_keys(algo_class._sample_action))],
        "train total": [by_keys(code_keys(algo_class.train))],
        "replay sample": [by_keys(code_keys(type(model.replay_buffer).sample))],
        "target": [by_keys(code_keys(getattr(algo_class, target)))] if target else [],
        "backward": [
            by_keys(code_keys(torch.Tensor.backward) | code_keys(torch.autograd.backward)),
            by_name("torch/_tensor.py", "backward"),
            by_name("torch/autograd/__init__.py", "backward"),
        ],
        "optimizer step": [by_keys(optim_keys), by_name("torch/optim/", "step")],
    }
    notes = {
        "env step": f"{type(model.env).__name__}.step/step_wait",
        "act": f"{algo_class.__name__}._sample_action",
        "train total": f"{algo_class.__name__}.train",
        "replay sample": f"{type(model.replay_buffer).__name__}.sample",
        "target": f"{algo_class.__name__}.{target}" if target else "n/a (inline in train)",
        "backward": "torch Tensor.backward / autograd.backward",
        "optimizer step": ", ".join(sorted({type(o).__name__ + ".step" for o in optimizers(model)})),
    }
    return matchers, notes


# --------------------------------------------------------------------------------------------
# Aggregating the cProfile call graph
# --------------------------------------------------------------------------------------------


def label(func: Func) -> str:
    return pstats.func_std_string(func)


class CallGraph:
    """The caller/callee graph of a pstats profile.

    Each pstats entry holds, per direct caller, the cumulative time of the calls from that
    caller. A phase's time is the sum over its entries of the calls coming from *outside* the
    phase (a caller that is itself an entry, or reachable from one, is inside: counting it too
    would count nested calls twice), restricted to callers within a scope (e.g. under train).
    Reachability on this graph over-approximates the real call stacks (a shared helper such as
    ``Module.__call__`` links everything it calls to everything that calls it), so it is safe
    for "could this double count?" checks: an empty answer is a proof.
    """

    def __init__(self, stats: pstats.Stats) -> None:
        self.stats: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
        self.total: float = stats.total_tt  # type: ignore[attr-defined]
        self.callees: dict[Func, set[Func]] = {}
        for func, (*_, callers) in self.stats.items():
            for caller in callers:
                self.callees.setdefault(caller, set()).add(func)

    def entries(self, matchers: Iterable[Matcher]) -> set[Func]:
        ms = list(matchers)
        return {func for func in self.stats if any(m(func) for m in ms)}

    def reach(self, roots: Iterable[Func]) -> set[Func]:
        """The roots and every function reachable from them."""
        seen = set(roots)
        stack = list(seen)
        while stack:
            for callee in self.callees.get(stack.pop(), ()):
                if callee not in seen:
                    seen.add(callee)
                    stack.append(callee)
        return seen

    def inflow(self, entries: set[Func], scope: set[Func] | None = None) -> tuple[float, set[Func]]:
        """Cumulative time of calls into ``entries`` from callers outside them (within ``scope``);
        also the callers that were counted."""
        inside = self.reach(entries)
        total, callers_used = 0.0, set()
        for func in entries:
            for caller, sub in self.stats[func][4].items():
                if caller in inside or (scope is not None and caller not in scope):
                    continue
                total += sub[3]  # per-caller cumulative time
                callers_used.add(caller)
        return total, callers_used


def aggregate(stats: pstats.Stats, model: Any) -> dict[str, Any]:
    """Seconds per phase (None where not measurable), the matched entries, and the checks."""
    graph = CallGraph(stats)
    matchers, notes = phase_matchers(model)
    entries = {name: graph.entries(ms) for name, ms in matchers.items()}
    checks: list[str] = []
    secs: dict[str, float | None] = {}

    # Top level: env step, act and train are called one after the other by collect_rollouts/learn.
    for name in TOP_LEVEL:
        if not entries[name]:
            checks.append(f"WARNING: no profile entry found for {name} ({notes[name]})")
        secs[name], _ = graph.inflow(entries[name])
    # Inside train: only calls made from train or its callees count (SQL's action search may
    # call autograd too, and that belongs to "act").
    train_scope = graph.reach(entries["train total"])
    outside_train = graph.reach(entries["env step"] | entries["act"])
    for name in TRAIN_PARTS:
        if not matchers[name]:
            secs[name] = None  # e.g. SAC's target: inline in train, no function to time
            continue
        if not entries[name]:
            checks.append(f"WARNING: no profile entry found for {name} ({notes[name]})")
        secs[name], callers = graph.inflow(entries[name], scope=train_scope)
        shared = callers & outside_train
        if shared:
            checks.append(
                f"WARNING: {name}: callers also reachable from env step/act, attribution ambiguous: "
                + "; ".join(sorted(label(c) for c in shared))
            )

    # Double counting: no phase's entry may be reachable from another phase of the same level.
    for group in (TOP_LEVEL, TRAIN_PARTS):
        for a in group:
            reach_a = graph.reach(entries[a])
            for b in group:
                if a != b and entries[b] & reach_a:
                    checks.append(f"WARNING: {b} is reachable from {a}: the two may double count")
    # What "act" and "train (rest)" are made of: their largest direct callees (cumulative time).
    callees = {
        name: sorted(
            ((label(f), graph.stats[f][4][e][3]) for e in entries[name] for f in graph.callees.get(e, ())),
            key=lambda item: -item[1],
        )[:8]
        for name in ("act", "train total")
    }
    train_total = secs["train total"] or 0.0
    parts = sum(v for k in TRAIN_PARTS if (v := secs[k]) is not None)
    secs["train (rest)"] = train_total - parts
    top = sum(secs[k] or 0.0 for k in TOP_LEVEL)
    secs["other"] = graph.total - top
    secs["total"] = graph.total
    if parts > train_total * (1 + 1e-9) or top > graph.total * (1 + 1e-9):
        checks.append(
            f"WARNING: phases exceed their totals (train parts {parts:.3f} s, train {train_total:.3f} s)"
        )
    if not any(c.startswith("WARNING") for c in checks):
        checks.append(
            "ok: every phase found; no entry of a phase reachable from another phase of its level "
            "(env step/act/train; replay sample/target/backward/optimizer step); sums within totals"
        )
    return {
        "seconds": secs,
        "entries": {k: sorted(label(f) for f in v) for k, v in entries.items()},
        "notes": notes,
        "checks": checks,
        "top_callees_s": callees,
    }


# --------------------------------------------------------------------------------------------
# Measuring one algorithm
# --------------------------------------------------------------------------------------------


def make_model(
    algo: str,
    warmup: int,
    sql_policy_kwargs: dict[str, Any] | None = None,
    run_steps: int = 50_000,
    sql_kwargs: dict[str, Any] | None = None,
) -> Any:
    import gymnasium as gym

    env = gym.make(ENV_ID)
    if algo == "SQL":
        from ebrl.agents import SQL

        model = SQL("MlpPolicy", env, seed=0, device="cpu", learning_starts=warmup,
                    policy_kwargs=sql_policy_kwargs, **(sql_kwargs or {}))
        # The timed steps stand for a slice of a run of run_steps env steps: SQL plans its act for
        # that run as learn(run_steps) would (compile_act="auto" compiles for runs >= 20k steps).
        model.policy.plan_acting(run_steps)
        return model
    if algo == "SAC":
        from stable_baselines3 import SAC

        return SAC("MlpPolicy", env, seed=0, device="cpu", learning_starts=warmup)
    raise ValueError(f"unknown algo {algo!r}")


def timed_learn(model: Any, steps: int) -> dict[str, float]:
    """learn(steps) more env steps; CPU and wall seconds and the env steps actually taken."""
    start_steps = model.num_timesteps
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model.learn(steps, reset_num_timesteps=False)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_s": cpu, "wall_s": wall, "steps": model.num_timesteps - start_steps}


def top_ops(model: Any, steps: int) -> dict[str, Any]:
    """torch.profiler over ``steps`` env steps: the TOP_OPS ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    start_steps = model.num_timesteps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.learn(steps, reset_num_timesteps=False)
    n = model.num_timesteps - start_steps
    events = list(prof.key_averages())
    total_us = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "steps": n,
        "self_cpu_ms_per_step_all_ops": total_us / 1e3 / n,
        "ops": [
            {
                "name": e.key,
                "calls": int(e.count),
                "calls_per_step": e.count / n,
                "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / n,
            }
            for e in events[:TOP_OPS]
        ],
    }


def settings(model: Any) -> dict[str, Any]:
    """The defaults that decide the cost of one step (for the record)."""
    out: dict[str, Any] = {"batch_size": model.batch_size, "gradient_steps": model.gradient_steps}
    for key in ("n_particles", "value_estimator", "alpha", "ent_coef"):
        if hasattr(model, key):
            out[key] = str(getattr(model, key))
    for key in ("sampler_kind", "search_steps", "n_chains", "warm_start", "net_arch", "compile_act"):
        if hasattr(model.policy, key):
            out[f"policy.{key}"] = str(getattr(model.policy, key))
    if hasattr(model.policy, "boltzmann"):  # what compile_act="auto" decided for this run
        out["acts_compiled"] = str(model.policy.boltzmann.compile_act)
    return out


def profile_algo(algo: str, args: argparse.Namespace) -> dict[str, Any]:
    import torch

    t0 = time.perf_counter()
    log = lambda msg: print(f"[{algo} {time.perf_counter() - t0:7.1f} s] {msg}", flush=True)  # noqa: E731
    model = make_model(
        algo, args.warmup, json.loads(args.sql_policy_kwargs), args.run_steps, json.loads(args.sql_kwargs)
    )
    log(f"warm-up learn({args.warmup + 200}) with learning_starts={args.warmup}")
    warm = timed_learn(model, args.warmup + 200)

    log(f"learn({args.steps}) without profiler")
    plain = timed_learn(model, args.steps)

    log(f"learn({args.steps}) under cProfile (process CPU clock)")
    # The profiler's clock is process CPU time: another job on the machine does not inflate it.
    profiler = cProfile.Profile(time.process_time)
    start_steps = model.num_timesteps
    cpu0 = time.process_time()
    profiler.enable()
    model.learn(args.steps, reset_num_timesteps=False)
    profiler.disable()
    prof_cpu = time.process_time() - cpu0
    n = model.num_timesteps - start_steps
    agg = aggregate(pstats.Stats(profiler), model)

    log(f"learn({args.torch_steps}) under torch.profiler")
    ops = top_ops(model, args.torch_steps) if args.torch_steps > 0 else None
    log("done")
    secs = agg["seconds"]
    return {
        "algo": algo,
        "env_id": ENV_ID,
        "warmup": args.warmup,
        "steps": n,
        "torch_threads": torch.get_num_threads(),
        "settings": settings(model),
        "warmup_run": warm,
        "plain": {
            **plain,
            "ms_per_step": 1e3 * plain["cpu_s"] / plain["steps"],
            "steps_per_s": plain["steps"] / plain["cpu_s"],
        },
        "profiled": {
            "cpu_s": prof_cpu,
            "profile_total_s": secs["total"],
            "ms_per_step": 1e3 * (secs["total"] or 0.0) / n,
            "steps_per_s": n / (secs["total"] or float("nan")),
        },
        "phases_ms_per_step": {k: None if v is None else 1e3 * v / n for k, v in secs.items()},
        "phase_functions": agg["notes"],
        "phase_entries": agg["entries"],
        "checks": agg["checks"],
        "top_callees_ms_per_step": {
            k: [(f, 1e3 * s / n) for f, s in v] for k, v in agg["top_callees_s"].items()
        },
        "top_ops": ops,
        "elapsed_wall_s": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------------------------
# Provenance, JSON and Markdown
# --------------------------------------------------------------------------------------------


def git_state(path: Path) -> dict[str, Any]:
    def git(*cmd: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(path), *cmd], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_files": [
            line[3:] for line in git("status", "--porcelain", "--", "agents", "ebrl").splitlines()
        ],
    }


def command_line() -> str:
    """The command as it can be re-run: working directory, PYTHONPATH and arguments."""
    env = f"PYTHONPATH={shlex.quote(os.environ['PYTHONPATH'])} " if os.environ.get("PYTHONPATH") else ""
    return f"cd {shlex.quote(os.getcwd())} && {env}{shlex.join([sys.executable, *sys.argv])}"


def short(func_label: str) -> str:
    """``/long/path/file.py:12(name)`` as ``file.py:12(name)`` (built-ins unchanged)."""
    path, sep, rest = func_label.partition(":")
    return f"{Path(path).name}{sep}{rest}" if sep and rest[:1].isdigit() else func_label


def fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def share(value: float | None, total: float | None) -> str:
    return "n/a" if value is None or not total else f"{100 * value / total:.1f} %"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def phase_table(runs: dict[str, Any]) -> list[str]:
    """Phases as rows; ms/step and share per algorithm; SQL/SAC ratio when both are present."""
    algos = sorted(runs, key=lambda a: (a != "SQL", a != "SAC", a))
    both = "SQL" in runs and "SAC" in runs
    head = ["phase (CPU ms / env step)"]
    for a in algos:
        head += [f"{a} ms", f"{a} share"]
    if both:
        head.append("SQL/SAC")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def row(name: str, values: dict[str, float | None], with_share: bool, digits: int = 2) -> None:
        cells = [name]
        for a in algos:
            total = runs[a]["phases_ms_per_step"]["total"]
            cells += [fmt(values[a], digits), share(values[a], total) if with_share else ""]
        if both:
            cells.append(ratio(values["SQL"], values["SAC"]))
        lines.append("| " + " | ".join(cells) + " |")

    for name in (*PHASES, "train total", "total"):
        bold = name in ("train total", "total")
        row(f"**{name}**" if bold else name, {a: runs[a]["phases_ms_per_step"][name] for a in algos}, True)
    row("env steps/s (CPU, profiled)", {a: runs[a]["profiled"]["steps_per_s"] for a in algos}, False, 1)
    row("CPU ms / env step, no profiler", {a: runs[a]["plain"]["ms_per_step"] for a in algos}, False)
    row("env steps/s (CPU, no profiler)", {a: runs[a]["plain"]["steps_per_s"] for a in algos}, False, 1)
    return lines


def ops_table(run: dict[str, Any]) -> list[str]:
    ops = run["top_ops"]
    lines = [
        f"{run['algo']}: {ops['steps']} env steps, all ops {ops['self_cpu_ms_per_step_all_ops']:.2f} "
        "self-CPU ms / env step",
        "",
        "| op | calls | calls / step | self CPU ms / step |",
        "|---|---|---|---|",
    ]
    for op in ops["ops"]:
        cells = (
            f"`{op['name']}`",
            str(op["calls"]),
            f"{op['calls_per_step']:.1f}",
            f"{op['self_cpu_ms_per_step']:.3f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def label_section(lab: str, runs: dict[str, Any]) -> list[str]:
    lines = [f"## {lab}", ""]
    for a, r in runs.items():
        dirty_files = r["git"]["dirty_files"]
        dirty = f", uncommitted changes in {', '.join(dirty_files)}" if dirty_files else ""
        lines.append(
            f"- {a}: code `{r['agents_file']}` at commit `{r['git']['commit'][:10]}`{dirty}; "
            f"{r['date']}; warm-up {r['warmup']} + 200 steps, profiled {r['steps']} steps, "
            f"{r['torch_threads']} torch thread; run took {r['elapsed_wall_s']:.0f} s wall"
        )
    lines += ["", *phase_table(runs), ""]
    for a, r in runs.items():
        for check in r["checks"]:
            lines.append(f"- {a} check: {check}")
    lines += ["", "Functions per phase:", ""]
    for a, r in runs.items():
        lines.append(f"- {a}: " + "; ".join(f"{k}: `{v}`" for k, v in r["phase_functions"].items()))
    lines += ["", "Largest direct callees (cumulative CPU ms / env step, profiled):", ""]
    for a, r in runs.items():
        for phase, items in r.get("top_callees_ms_per_step", {}).items():
            lines.append(f"- {a} {phase}: " + ", ".join(f"`{short(f)}` {ms:.2f}" for f, ms in items[:5]))
    lines += ["", f"### {lab}: top {TOP_OPS} torch ops by self CPU time (torch.profiler)", ""]
    for r in runs.values():
        if r["top_ops"]:
            lines += [*ops_table(r), ""]
    lines += [f"### {lab}: commands", "", "```"]
    lines += sorted({r["command"] for r in runs.values()})
    lines += ["```", ""]
    return lines


def compare_section(data: dict[str, Any]) -> list[str]:
    """SQL before vs after, phase by phase, when both labels hold an SQL run."""
    if "SQL" not in data.get("before", {}) or "SQL" not in data.get("after", {}):
        return []
    b, a = data["before"]["SQL"], data["after"]["SQL"]
    lines = [
        "## SQL: before vs after",
        "",
        "| phase (CPU ms / env step) | before | after | after/before |",
        "|---|---|---|---|",
    ]
    for name in (*PHASES, "train total", "total"):
        vb, va = b["phases_ms_per_step"][name], a["phases_ms_per_step"][name]
        lines.append(f"| {name} | {fmt(vb)} | {fmt(va)} | {ratio(va, vb)} |")
    vb, va = b["plain"]["ms_per_step"], a["plain"]["ms_per_step"]
    lines.append(f"| CPU ms / env step, no profiler | {fmt(vb)} | {fmt(va)} | {ratio(va, vb)} |")
    return [*lines, ""]


def markdown(data: dict[str, Any]) -> str:
    lines = [
        f"# Where the time goes: SQL vs SB3 SAC on {ENV_ID}",
        "",
        "Written by `experiments/benchmarks/sql_profile.py` (see its docstring). Per algorithm, with its "
        "defaults and one torch thread: a warm-up `learn(L + 200)` with `learning_starts=L`, then "
        "`learn(N)` timed without a profiler and again under cProfile with a process-CPU clock. "
        "Every figure is CPU milliseconds per env step (each env step here is one env step, one "
        "action search/prediction and one gradient step). Phases are disjoint; their sum is the total: "
        "*env step* (`VecEnv.step`), *act* (`_sample_action`: prediction, SQL's MCMC action search), "
        "*replay sample*, *target* (SQL's soft-value method; SAC computes its target inline in `train`, "
        "so its target cost sits in *train (rest)*), *backward*, *optimizer step*, *train (rest)* "
        "(forward passes, losses, `zero_grad`, Polyak, guards, logging) and *other* (SB3's loop, "
        "replay-buffer writes, callbacks). The share column is of the profiled total, which includes "
        "cProfile's overhead; the *no profiler* rows are the honest speed. The torch.profiler tables "
        "time each op with the profiler's own clock (elapsed time on the one CPU thread, profiler "
        "overhead included): use them to rank ops, not as totals.",
        "",
    ]
    lines += compare_section(data)
    for lab in sorted(data, key=lambda k: (k != "before", k != "after", k)):
        lines += label_section(lab, data[lab])
    return "\n".join(lines)


def load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        print(f"WARNING: {path} is not valid JSON; starting a new file", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def write(path: Path, text: str) -> None:
    """Write through a temporary file, so an interrupted run leaves the old file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=500, help="N: env steps profiled (and timed unprofiled)")
    parser.add_argument("--warmup", type=int, default=1000, help="L: learning_starts; warm-up is L + 200")
    parser.add_argument("--torch-steps", type=int, default=100, help="steps under torch.profiler (0: skip)")
    parser.add_argument("--algos", nargs="+", default=["SQL", "SAC"], choices=["SQL", "SAC"])
    parser.add_argument(
        "--sql-policy-kwargs", default="null", help='JSON policy_kwargs of SQL, e.g. {"compile_act": true}'
    )
    parser.add_argument(
        "--sql-kwargs", default="{}", help='JSON keyword arguments of SQL, e.g. {"n_particles": 4}'
    )
    parser.add_argument("--run-steps", type=int, default=50_000,
                        help="length of the run the timed steps stand for (SQL plans its act for it)")
    parser.add_argument("--label", default="after", help='key of this run in the JSON, e.g. "before"/"after"')
    parser.add_argument("--out", type=Path, default=ROOT / "experiments" / "results" / "sql_profile.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1 or args.torch_steps < 0:
        parser.error("--steps and --warmup must be >= 1, --torch-steps >= 0")

    # The checkout this script lives in provides the project code (a worktree measures its own commit).
    sys.path.insert(0, str(ROOT))
    import torch

    import ebrl.agents as agents

    print(f"agents imported from {agents.__file__}", flush=True)
    if Path(agents.__file__).resolve().parents[1] != ROOT:
        print(f"WARNING: agents does not come from this checkout ({ROOT})", file=sys.stderr, flush=True)
    # Small MLPs: one thread is fastest and keeps the figures comparable on a shared machine.
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (or parallel work already started): harmless here
        pass

    provenance = {
        "label": args.label,
        "agents_file": agents.__file__,
        "git": git_state(Path(agents.__file__).resolve().parents[1]),
        "command": command_line(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "stable_baselines3": __import__("stable_baselines3").__version__,
        },
        "machine": platform.platform(),
    }
    out_md = args.out.with_suffix(".md")
    for algo in args.algos:
        run = {**profile_algo(algo, args), **provenance}
        # Re-read before writing: keep every other label (and algorithm) already in the file.
        data = load(args.out)
        data.setdefault(args.label, {})[algo] = run
        write(args.out, json.dumps(data, indent=1) + "\n")
        write(out_md, markdown(data))
    data = load(args.out)
    print("\n".join(phase_table({a: r for a, r in data[args.label].items() if a in args.algos})))
    for algo in args.algos:
        for check in data[args.label][algo]["checks"]:
            print(f"{algo} check: {check}")
    print(f"wrote {args.out} and {out_md}")


if __name__ == "__main__":
    main()
