"""SQL (its frozen defaults) vs SB3 SAC (rl-baselines3-zoo MuJoCo settings) on Gymnasium MuJoCo v5 tasks.

Each (task, algorithm, seed) trains for ``--steps`` env steps with deterministic evaluation every
``--eval-every`` steps and at the end. The two algorithms are built exactly as a user would build
them, because SQL's defaults are the product being measured:

    SQL("MlpPolicy", env, seed=seed, device=device)                          # nothing else
    SAC("MlpPolicy", env, learning_starts=10_000, seed=seed, device=device)  # zoo MuJoCo settings

The file is not called ``mujoco.py``: run as a script, its folder comes first on ``sys.path``, and
a ``mujoco.py`` there would shadow the MuJoCo package for every benchmark script in this folder.

Usage (from the repository root):

    # the full benchmark: HalfCheetah, Hopper, Walker2d x SQL, SAC x seeds 0 1 2, 50k steps each
    python experiments/benchmarks/mujoco_suite.py
    # the SAC side once (it is committed and stays valid while SQL changes), seed 0, one core
    python experiments/benchmarks/mujoco_suite.py --algos SAC --seeds 0 --max-concurrent 1
    # later: only SQL runs are (re)done; finished runs with the same key are skipped
    python experiments/benchmarks/mujoco_suite.py --algos SQL SAC --seeds 0
    # Ant-v5 too (not in the default set)
    python experiments/benchmarks/mujoco_suite.py --tasks halfcheetah hopper walker2d ant
    # rebuild <out-prefix>.{json,md,png} from <out-prefix>_runs.jsonl without training
    python experiments/benchmarks/mujoco_suite.py --report-only
    # cheap smoke test (SAC's learning_starts and the learning-phase mark lowered; its own files)
    python experiments/benchmarks/mujoco_suite.py --tasks hopper --algos SAC --seeds 0 --steps 1200 \\
        --eval-every 600 --eval-episodes 2 --sac-learning-starts 300 --learn-from 300 \\
        --out-prefix /tmp/mj_smoke/mujoco

Resuming. Every finished run is appended as one JSON line to ``<out-prefix>_runs.jsonl`` (a
committed file). A run's key is (task, algo, seed, steps, eval_every, eval_episodes, device,
learn_from, settings_hash), where settings_hash is a short SHA-256 of the algorithm's effective
constructor keyword arguments and, for SQL only, of every keyword default of ``SQL`` and ``SQLPolicy``:
changing SQL's defaults invalidates the old SQL runs while the SAC runs stay valid (each run also
records the git commit it ran on, for changes of code that keep the defaults). A job whose key is
already in the jsonl is skipped (``--fresh`` runs it again; the newer line wins). The jobs left are
run as Ray Tune trials through :func:`ebrl.experiments.sweep.run_parallel` (one CPU and one torch thread
each; ``--max-concurrent`` at a time; ``--address auto`` for a Ray cluster), which also gives
Ray-level resume of an identical interrupted command.

Adopting runs. When a tuning candidate becomes SQL's defaults, its tuning runs are runs of the new
defaults: ``--adopt-runs experiments/results/sql_tuning_candidates_runs.jsonl <hash>`` copies the SQL
runs with that settings hash into the jsonl under today's hash, after checking that every keyword
argument they passed is a default now; each copy records ``adopted_from`` and the md says so.

Outputs are always rebuilt from the whole jsonl (the runs whose key matches the current settings),
so an interrupted or partial benchmark still writes ``<out-prefix>.json``, ``.md`` and ``.png``.

Speed. Evaluation time is excluded. Two figures per run: all steps (``steps_per_s_cpu``/``_wall``)
and the learning phase only, from env step ``--learn-from`` (10,000) to the end
(``learn_steps_per_s_cpu = (steps - 10000) / CPU seconds of that phase``). SAC collects its first
10,000 steps with random actions and no updates while SQL updates from its own (much earlier)
``learning_starts``, so only the learning-phase figure compares the cost of an update step fairly.
CPU time is process time, robust to other jobs on a shared machine.

Final-return IQM: the interquartile mean of the seeds' final returns, with the semantics of
``scipy.stats.trim_mean(x, 0.25)`` (``int(0.25 * n)`` values cut from each end): with 1 to 3 seeds
it is the plain mean, with 4 it is the mean of the middle two.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ebrl.experiments.sweep import run_parallel

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"

TASKS = {
    "halfcheetah": "HalfCheetah-v5",
    "hopper": "Hopper-v5",
    "walker2d": "Walker2d-v5",
    "ant": "Ant-v5",
}
DEFAULT_TASKS = ["halfcheetah", "hopper", "walker2d"]
ALGOS = ("SQL", "SAC")
# SQL's defaults were chosen on Pendulum-v1 and HalfCheetah-v5; the other tasks are held out.
TUNING_TASKS = {"halfcheetah"}
SAC_LEARNING_STARTS = 10_000  # rl-baselines3-zoo's value for the MuJoCo tasks
EVAL_ENVS = 5  # evaluation episodes run 5 at a time (batched forward passes)
KEY_FIELDS = ("task", "algo", "seed", "steps", "eval_every", "eval_episodes", "device", "learn_from",
              "settings_hash")


# ---------------------------------------------------------------- settings and run keys

def algo_kwargs(algo: str, sac_learning_starts: int = SAC_LEARNING_STARTS) -> dict[str, Any]:
    """Constructor keyword arguments beyond ("MlpPolicy", env, seed, device)."""
    if algo == "SQL":
        return {}  # SQL's defaults are what is being benchmarked: never pass anything here
    return {"learning_starts": sac_learning_starts}


# Keywords renamed without a change of value keep their old name in the hash, and deprecated
# aliases (default None) are left out, so that runs made before a rename still count as runs of the
# same defaults (issue 13 renamed the policy's MCMC step count n_steps -> search_steps).
RENAMED = {"SQLPolicy.search_steps": "SQLPolicy.n_steps"}
# compile_act (default "auto") only chooses how the same act is executed (eager ops or one compiled
# function): not a setting of the algorithm, so adding it did not change the defaults' hash.
DEPRECATED = {"SQLPolicy.n_steps", "SQLPolicy.compile_act"}
# Keywords added later whose default reproduces what SQL did before they existed: left out of the
# hash while they keep that default (proposal_loss "reverse" is the only loss there was).
ADDED_AT_OLD_BEHAVIOUR = {"SQL.proposal_loss": "'reverse'",
                          "SQLPolicy.deterministic_act": "'search'",
                          "SQLPolicy.critic_layer_norm": "False"}
# The default sampler's own settings (make_sampler's per-kind defaults, not keyword defaults of SQL
# or its policy) as they were when the committed SQL runs were made; any change to them enters the
# hash, so that such a change invalidates old runs instead of silently reusing them.
FROZEN_SAMPLER = {"n_steps": 3, "low": -1.0, "high": 1.0, "compile": False, "step_size": 0.05,
                  "adapt_steps": 0, "target_accept": 0.574}


def sql_source_text() -> str:
    """SQL's effective defaults: every keyword default of ``SQL`` and of its policy (whatever the
    file they live in), so that changing a default invalidates old SQL runs while editing comments
    does not. Each run also records the git commit it ran on."""
    import inspect

    from ebrl.agents.sql import SQL, SQLPolicy

    defaults = {
        RENAMED.get(f"{cls.__name__}.{name}", f"{cls.__name__}.{name}"): repr(p.default)
        for cls in (SQL, SQLPolicy)
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty and f"{cls.__name__}.{name}" not in DEPRECATED
        and ADDED_AT_OLD_BEHAVIOUR.get(f"{cls.__name__}.{name}") != repr(p.default)
    }
    sampler = default_sampler_settings()
    if sampler != FROZEN_SAMPLER:
        defaults["sampler"] = json.dumps(sampler, sort_keys=True)
    return json.dumps(defaults, sort_keys=True)


def default_sampler_settings() -> dict[str, Any]:
    """The plain settings of the action search that ``SQL("MlpPolicy", env)`` builds."""
    import inspect

    from ebrl.agents.sql.policies import SQLPolicy, make_sampler

    params = inspect.signature(SQLPolicy.__init__).parameters
    sampler = make_sampler(*(params[name].default for name in ("sampler", "search_steps", "step_size",
                                                               "sampler_kwargs")))
    return {k: v for k, v in vars(sampler).items()
            if not k.startswith("_") and k != "chains" and isinstance(v, int | float | str | bool)}


def git_commit() -> str:
    """The commit of the checkout (with ``+dirty`` when tracked files were modified)."""
    import subprocess

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain", "-uno") else "")


def settings_hash(algo: str, kwargs: dict[str, Any]) -> str:
    """Short hash of the effective settings; SQL's also covers its code, whose defaults live there."""
    h = hashlib.sha256(json.dumps({"algo": algo, "kwargs": kwargs}, sort_keys=True).encode())
    if algo == "SQL":
        h.update(sql_source_text().encode())
    return h.hexdigest()[:12]


def run_key(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record[k] for k in KEY_FIELDS)


def load_runs(path: Path) -> list[dict[str, Any]]:
    """All runs in the jsonl; for a key present more than once (``--fresh``) the last line wins."""
    if not path.is_file():
        return []
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            runs[run_key(record)] = record
    return list(runs.values())


def append_run(path: Path, record: dict[str, Any]) -> None:
    """Append one line under an exclusive lock: concurrent trials write to the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(json.dumps(record) + "\n")
        f.flush()
        fcntl.flock(f, fcntl.LOCK_UN)


def adopt_runs(src: Path, old_hash: str, jsonl: Path, sql_settings: dict[str, Any]) -> int:
    """Copy into ``jsonl``, as runs of SQL's defaults, the SQL runs of ``src`` with settings hash
    ``old_hash`` (the tuning runs of the candidate that became the defaults need not be trained twice).

    The hash names the code and defaults those runs had; the caller vouches that those differ from
    today's only in the keyword arguments the runs passed, and this checks that every one of those
    arguments is today's default. Each copy keeps its command and records what it was (``adopted_from``).
    """
    import inspect

    from ebrl.agents.sql import SQL, SQLPolicy

    def defaults(cls: type) -> dict[str, Any]:
        return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()}

    algo_defaults, policy_defaults = defaults(SQL), defaults(SQLPolicy)
    runs = [r for r in load_runs(src) if r["algo"] == "SQL" and r["settings_hash"] == old_hash]
    for r in runs:  # every run is checked before any is written
        kwargs = dict(r["kwargs"])
        # policy_kwargs are checked one by one against the policy's defaults
        wrong = {f"policy_kwargs[{k!r}]": v for k, v in kwargs.pop("policy_kwargs", {}).items()
                 if k not in policy_defaults or policy_defaults[k] != v}
        wrong.update({k: v for k, v in kwargs.items() if k not in algo_defaults or algo_defaults[k] != v})
        if wrong:
            raise ValueError(f"runs with settings hash {old_hash} passed {wrong}, which are not SQL's "
                             "defaults today: they are not runs of the defaults")
    have = {run_key(r) for r in load_runs(jsonl)}
    n = 0
    for r in runs:
        copy = {**r, "kwargs": sql_settings["kwargs"], "settings_hash": sql_settings["hash"],
                "adopted_from": {"file": src.name, "kwargs": r["kwargs"], "settings_hash": old_hash,
                                 "why": "trained with keyword arguments that are now SQL's defaults"}}
        if run_key(copy) not in have:
            append_run(jsonl, copy)
            have.add(run_key(copy))
            n += 1
    return n


# ---------------------------------------------------------------- one run (inside a Ray worker)

def algo_class(name: str) -> type:
    if name == "SQL":
        from ebrl.agents import SQL

        return SQL
    from stable_baselines3 import SAC

    return SAC


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    """Train one (task, algorithm, seed); append its record to the jsonl and return it."""
    import gymnasium
    import mujoco
    import stable_baselines3
    import torch
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)  # one core per run: runs in parallel must not fight over threads
    loadavg = os.getloadavg()
    task, algo, seed, steps = job["task"], job["algo"], job["seed"], job["steps"]
    eval_every, n_episodes, learn_from = job["eval_every"], job["eval_episodes"], job["learn_from"]
    tag = f"[{task} {algo} s{seed}]"
    cls = algo_class(algo)
    # The code that actually runs is the one imported now; if SQL changed since the driver started,
    # the record gets the new hash so that it is not mistaken for a run of the old code.
    actual_hash = settings_hash(algo, job["kwargs"])
    if actual_hash != job["settings_hash"]:
        print(f"{tag} warning: {algo} settings/code changed since start ({job['settings_hash']} -> "
              f"{actual_hash}); recording {actual_hash}", flush=True)
    env = make_vec_env(job["env_id"], n_envs=1, seed=seed)
    eval_env = make_vec_env(job["env_id"], n_envs=EVAL_ENVS, seed=10_000 + seed)
    model = cls("MlpPolicy", env, seed=seed, device=job["device"], **job["kwargs"])

    class Progress(BaseCallback):
        """Evaluates every ``eval_every`` steps, keeps its time out of the speed, marks ``learn_from``."""

        def __init__(self) -> None:
            super().__init__()
            self.points: list[tuple[int, float, float]] = []  # (step, mean, std) over the episodes
            self.extremes: list[tuple[float, float]] = []  # (min, max) over the episodes
            self.eval_wall = self.eval_cpu = 0.0
            self.start = (time.perf_counter(), time.process_time())
            # (wall, cpu, eval wall so far, eval cpu so far) at step learn_from
            self.mark: tuple[float, float, float, float] | None = None

        def evaluate(self) -> None:
            wall, cpu = time.perf_counter(), time.process_time()
            n = self.model.num_timesteps
            train_wall = wall - self.start[0] - self.eval_wall
            train_cpu = cpu - self.start[1] - self.eval_cpu
            learn = ""
            if self.mark is not None and n > learn_from:
                learn_cpu = (cpu - self.mark[1]) - (self.eval_cpu - self.mark[3])
                learn = f", learning phase {(n - learn_from) / max(learn_cpu, 1e-9):6.1f}/s cpu"
            episodes, _ = evaluate_policy(self.model, eval_env, n_eval_episodes=n_episodes,
                                          deterministic=True, return_episode_rewards=True)
            ep = np.asarray(episodes, dtype=float)
            self.points.append((n, float(ep.mean()), float(ep.std())))
            self.extremes.append((float(ep.min()), float(ep.max())))
            self.eval_wall += time.perf_counter() - wall
            self.eval_cpu += time.process_time() - cpu
            print(f"{tag} step {n:7d}/{steps}: return {ep.mean():8.1f} +- {ep.std():6.1f}; "
                  f"{n / max(train_cpu, 1e-9):6.1f} steps/s cpu, {n / max(train_wall, 1e-9):6.1f} wall"
                  f"{learn}; eval {time.perf_counter() - wall:.1f} s", flush=True)

        def _on_step(self) -> bool:
            if self.num_timesteps % eval_every == 0:
                self.evaluate()
            if self.num_timesteps == learn_from:  # after the evaluation: both sides subtract it
                self.mark = (time.perf_counter(), time.process_time(), self.eval_wall, self.eval_cpu)
            return True

    print(f"{tag} start: {job['env_id']}, {steps} steps, {algo} {job['kwargs']}, device {job['device']}, "
          f"settings {actual_hash}", flush=True)
    progress = Progress()
    model.learn(steps, callback=progress)
    wall_end, cpu_end = time.perf_counter(), time.process_time()
    eval_wall, eval_cpu = progress.eval_wall, progress.eval_cpu  # before the final evaluation below
    train_wall = wall_end - progress.start[0] - eval_wall
    train_cpu = cpu_end - progress.start[1] - eval_cpu
    if not progress.points or progress.points[-1][0] != model.num_timesteps:
        progress.evaluate()  # after the clock stopped: not part of the speed
    n = model.num_timesteps
    learn_wall = learn_cpu = None
    if progress.mark is not None and n > learn_from:
        mw, mc, mew, mec = progress.mark
        learn_wall = (wall_end - mw) - (eval_wall - mew)
        learn_cpu = (cpu_end - mc) - (eval_cpu - mec)
    final = progress.points[-1]
    record = {
        **{k: job[k] for k in ("task", "env_id", "algo", "seed", "steps", "eval_every", "eval_episodes",
                               "device", "learn_from", "kwargs", "command")},
        "settings_hash": actual_hash,
        "git_commit": git_commit(),
        "num_timesteps": n,
        "curve": [list(p) for p in progress.points],  # [step, mean, std over episodes]
        "curve_min_max": [list(p) for p in progress.extremes],  # [min, max] over episodes, per point
        "final_return": final[1],
        "final_return_std_episodes": final[2],
        "train_wall_s": train_wall,
        "train_cpu_s": train_cpu,
        "steps_per_s_wall": n / train_wall,
        "steps_per_s_cpu": n / train_cpu,
        "learn_wall_s": learn_wall,
        "learn_cpu_s": learn_cpu,
        "learn_steps_per_s_wall": None if learn_wall is None else (n - learn_from) / learn_wall,
        "learn_steps_per_s_cpu": None if learn_cpu is None else (n - learn_from) / learn_cpu,
        "eval_wall_s": progress.eval_wall,
        "eval_cpu_s": progress.eval_cpu,
        "torch": torch.__version__,
        "sb3": stable_baselines3.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(loadavg),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    append_run(Path(job["jsonl"]), record)  # as each run finishes: an interrupted benchmark keeps it
    lp = record["learn_steps_per_s_cpu"]
    print(f"{tag} done: final {final[1]:8.1f} +- {final[2]:6.1f}; {n / train_cpu:6.1f} steps/s cpu, "
          f"learning phase {'n/a' if lp is None else f'{lp:6.1f}'} steps/s cpu", flush=True)
    return record


# ---------------------------------------------------------------- summary, markdown, plot

def _iqm_rows(x: np.ndarray) -> np.ndarray:
    """Interquartile mean of every row of ``x`` ``(..., n)``: int(0.25 n) values cut from each end."""
    x = np.sort(np.asarray(x, dtype=float), axis=-1)
    k = int(0.25 * x.shape[-1])
    return x[..., k:x.shape[-1] - k].mean(-1)


def iqm(x: np.ndarray) -> float:
    """Interquartile mean = scipy.stats.trim_mean(x, 0.25): int(0.25 n) values cut from each end."""
    return float(_iqm_rows(x))


def ratio_iqm_interval(sql: np.ndarray, sac: np.ndarray, n_boot: int = 10_000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of IQM(sql) / IQM(sac), seeds resampled within each algorithm
    (the stratified bootstrap of Agarwal et al. 2021, "Deep RL at the edge of the statistical
    precipice"). None where a resample's SAC IQM is not positive (the ratio is then meaningless) or
    an algorithm has one seed. A fixed generator: the report is a pure function of the runs."""
    sql, sac = np.asarray(sql, dtype=float), np.asarray(sac, dtype=float)
    if len(sql) < 2 or len(sac) < 2:
        return None
    rng = np.random.default_rng(seed)
    num, den = (_iqm_rows(x[rng.integers(0, len(x), size=(n_boot, len(x)))]) for x in (sql, sac))
    if np.any(den <= 0):
        return None
    lo, hi = np.quantile(num / den, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def probability_of_improvement(sql: np.ndarray, sac: np.ndarray) -> float:
    """P(X_SQL > X_SAC) + P(X_SQL = X_SAC) / 2 over all pairs of one SQL seed and one SAC seed (the
    Mann-Whitney U statistic over n m; Agarwal et al. 2021): 0.5 = neither algorithm ahead."""
    diff = np.asarray(sql, dtype=float)[:, None] - np.asarray(sac, dtype=float)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def summarise(runs: list[dict[str, Any]], task: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for algo in ALGOS:
        rs = sorted((r for r in runs if r["task"] == task and r["algo"] == algo), key=lambda r: r["seed"])
        if not rs:
            continue
        finals = np.array([r["final_return"] for r in rs])
        # Speed only from runs whose machine was not oversubscribed (a record with a
        # ``speed_note`` ran beside more processes than cores, or on a slower day: its CPU time
        # is not comparable). None timed: no speed figure ("n/a"), never an inflated one.
        timed = [r for r in rs if not r.get("speed_note")]
        out[algo] = {
            "seeds": [r["seed"] for r in rs],
            "final_returns": finals.tolist(),
            "final_iqm": iqm(finals),
            "final_mean": float(finals.mean()),
            # standard error over seeds; undefined for one seed
            "final_se": float(finals.std(ddof=1) / np.sqrt(len(finals))) if len(finals) > 1 else None,
            "speed_seeds": [r["seed"] for r in timed],
            "learn_steps_per_s_cpu": _mean([r["learn_steps_per_s_cpu"] for r in timed]),
            "learn_steps_per_s_wall": _mean([r["learn_steps_per_s_wall"] for r in timed]),
            "steps_per_s_cpu": _mean([r["steps_per_s_cpu"] for r in timed]),
            "steps_per_s_wall": _mean([r["steps_per_s_wall"] for r in timed]),
        }
    if "SQL" in out and "SAC" in out:
        sql, sac = out["SQL"], out["SAC"]
        # a ratio of returns means nothing when the baseline's is not positive
        out["ratio_final_iqm"] = sql["final_iqm"] / sac["final_iqm"] if sac["final_iqm"] > 0 else None
        out["ratio_final_iqm_ci95"] = ratio_iqm_interval(np.array(sql["final_returns"]),
                                                         np.array(sac["final_returns"]))
        out["p_sql_above_sac"] = probability_of_improvement(np.array(sql["final_returns"]),
                                                            np.array(sac["final_returns"]))
        out["ratio_learn_steps_per_s_cpu"] = (
            sql["learn_steps_per_s_cpu"] / sac["learn_steps_per_s_cpu"]
            if sql["learn_steps_per_s_cpu"] and sac["learn_steps_per_s_cpu"] else None)
    return out


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    dev = meta["device"]
    sac_args = ", ".join(f"{k}={v!r}" for k, v in meta["settings"]["SAC"]["kwargs"].items())
    lines = [
        "# SQL vs SB3 SAC on MuJoCo (Gymnasium v5)",
        "",
        f"Report written by: `{meta['report_command']}` ({meta['date']})  ",
        "Runs trained by: " + (", ".join(f"`{c}`" for c in meta["train_commands"]) or "none yet") + "  ",
        f"Runs summarised: {meta['n_runs']} from `{meta['jsonl']}` (key: {', '.join(KEY_FIELDS)}); "
        f"{meta['n_ignored']} other run(s) in it have different settings or code and are ignored.  ",
        f"Machine: {meta['machine']}",
        "",
        f"Settings: SQL is `SQL(\"MlpPolicy\", env, seed=seed, device=\"{dev}\")`, its frozen defaults "
        f"(settings hash {meta['settings']['SQL']['hash']}, which covers the keyword defaults of SQL and "
        "SQLPolicy), chosen on a "
        "tuning set of Pendulum-v1 and HalfCheetah-v5: HalfCheetah-v5 is a tuning task, Hopper-v5 and "
        "Walker2d-v5 (and Ant-v5) are held-out tasks. SAC is "
        f"`SAC(\"MlpPolicy\", env, {sac_args}, "
        f"seed=seed, device=\"{dev}\")` (rl-baselines3-zoo MuJoCo hyperparameters; everything else SB3 "
        f"defaults: 2x256 nets, lr 3e-4, batch 256, auto entropy; settings hash "
        f"{meta['settings']['SAC']['hash']}).",
        "",
        f"Evaluation: deterministic, {meta['eval_episodes']} episodes (5 envs at a time, seeded "
        f"10000 + seed) every {meta['eval_every']} env steps and at the end; final = last point. "
        "IQM = interquartile mean over seeds (scipy.stats.trim_mean(x, 0.25): the plain mean for up "
        "to 3 seeds); s.e. = standard error over seeds. Speed excludes evaluation; the learning phase "
        f"is env steps {meta['learn_from']} to the end (SAC does no updates before step "
        f"{meta['settings']['SAC']['kwargs']['learning_starts']}), "
        "CPU = process time of the run (one torch thread).",
        "",
    ]
    for task, s in summary.items():
        role = "tuning task" if task in TUNING_TASKS else "held-out task"
        lines += [
            f"## {TASKS[task]} ({role})",
            "",
            "| algorithm | seeds | steps | final return per seed | final IQM | final mean ± s.e. "
            "| learning-phase steps/s (CPU) | learning-phase steps/s (wall) | all steps/s (CPU) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for algo in ALGOS:
            if algo not in s:
                continue
            a = s[algo]
            per_seed = " / ".join(f"{x:.1f}" for x in a["final_returns"])
            lines.append(
                f"| {algo} | {len(a['seeds'])} | {meta['steps']} | {per_seed} | {a['final_iqm']:.1f} "
                f"| {a['final_mean']:.1f} ± {_fmt(a['final_se'])} | {_fmt(a['learn_steps_per_s_cpu'])} "
                f"| {_fmt(a['learn_steps_per_s_wall'])} | {_fmt(a['steps_per_s_cpu'])} |")
        lines.append("")
        if "SQL" in s and "SAC" in s:
            ci = s.get("ratio_final_iqm_ci95")
            ci_text = "n/a" if ci is None else f"{ci[0]:.2f}-{ci[1]:.2f}"
            lines += [f"SQL / SAC: final IQM {_fmt(s['ratio_final_iqm'], '.2f')} (95 % stratified "
                      f"bootstrap interval over seeds {ci_text}; P(SQL seed > SAC seed) "
                      f"{_fmt(s.get('p_sql_above_sac'), '.2f')}), learning-phase CPU "
                      f"steps/s {_fmt(s['ratio_learn_steps_per_s_cpu'], '.2f')}.", ""]
        partial = [f"{algo} from seed(s) {', '.join(map(str, s[algo]['speed_seeds'])) or '(none)'}"
                   for algo in ALGOS if algo in s and len(s[algo]["speed_seeds"]) < len(s[algo]["seeds"])]
        if partial:
            lines += [f"Speed columns: {'; '.join(partial)} only; the other runs have a "
                      "`speed_note` in the runs file (they ran on an oversubscribed or slower machine, "
                      "so their CPU time is not comparable; their returns count). Side-by-side speed: "
                      "experiments/results/sql_profile.md.", ""]
        adopted = [r for r in meta["runs"] if r["task"] == task and r.get("adopted_from")]
        if adopted:
            src = adopted[0]["adopted_from"]
            which = ", ".join(f"{r['algo']} seed {r['seed']}" for r in adopted)
            lines += [f"Adopted runs: {which} were "
                      f"trained as a tuning candidate with `{src['kwargs']}` (file {src['file']}, "
                      f"settings hash {src['settings_hash']}), arguments that are SQL's defaults now.", ""]
        few = [f"{algo}: {len(s[algo]['seeds'])} seed(s) ({', '.join(map(str, s[algo]['seeds']))})"
               for algo in ALGOS if algo in s and len(s[algo]["seeds"]) < 3]
        if few:
            lines += [f"Note: fewer than 3 seeds ran ({'; '.join(few)}), {meta['steps']} steps each: "
                      "preliminary figures.", ""]
    if not summary:
        lines += ["No runs with these settings yet.", ""]
    return "\n".join(lines)


def plot(runs: list[dict[str, Any]], tasks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(tasks), 1), figsize=(5.5 * max(len(tasks), 1), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=False):
        for algo in ALGOS:
            rs = [r for r in runs if r["task"] == task and r["algo"] == algo]
            if not rs:
                continue
            n = min(len(r["curve"]) for r in rs)
            steps = np.array([p[0] for p in rs[0]["curve"][:n]])
            returns = np.array([[p[1] for p in r["curve"][:n]] for r in rs])
            mean = returns.mean(0)
            if len(rs) > 1:  # ± standard error over seeds
                se = returns.std(0, ddof=1) / np.sqrt(len(rs))
                lo, hi, band = mean - se, mean + se, "± s.e."
            else:  # one seed: no spread over seeds, so min/max over its evaluation episodes
                lo, hi = np.array(rs[0]["curve_min_max"][:n]).T
                band = "episode min/max"
            ax.plot(steps, mean, label=f"{algo} ({len(rs)} seed{'s' if len(rs) > 1 else ''}, {band})")
            ax.fill_between(steps, lo, hi, alpha=0.25)
        ax.set_title(f"{TASKS[task]} ({'tuning' if task in TUNING_TASKS else 'held out'})")
        ax.set_xlabel("env steps")
        ax.set_ylabel("deterministic eval return")
        ax.legend()
    if not tasks:
        axes[0][0].text(0.5, 0.5, "no runs yet", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(prefix: Path, jsonl: Path, args: argparse.Namespace, settings: dict[str, Any],
                  report_command: str) -> str:
    """Rebuild <prefix>.{json,md,png} from the whole jsonl: the runs whose key matches these settings."""
    wanted = {"steps": args.steps, "eval_every": args.eval_every, "eval_episodes": args.eval_episodes,
              "device": args.device, "learn_from": args.learn_from}
    all_runs = load_runs(jsonl)
    runs = sorted(
        (r for r in all_runs if all(r[k] == v for k, v in wanted.items())
         and r["settings_hash"] == settings[r["algo"]]["hash"]),
        key=lambda r: (list(TASKS).index(r["task"]), r["algo"], r["seed"]))
    tasks = [t for t in TASKS if any(r["task"] == t for r in runs)]
    summary = {t: summarise(runs, t) for t in tasks}
    first = runs[0] if runs else {}
    meta = {
        "report_command": report_command,
        "train_commands": sorted({r["command"] for r in runs}),
        "jsonl": str(jsonl.relative_to(ROOT)) if jsonl.is_relative_to(ROOT) else str(jsonl),
        "n_runs": len(runs),
        "n_ignored": len(all_runs) - len(runs),
        "machine": (f"{first.get('platform')}, {first.get('cpu_count')} CPU cores, "
                    f"torch {first.get('torch')}, SB3 {first.get('sb3')}, "
                    f"gymnasium {first.get('gymnasium')}, mujoco {first.get('mujoco')}" if runs else "n/a"),
        **wanted,
        "settings": settings,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(
        json.dumps({"meta": meta, "summary": summary, "runs": runs}, indent=1))
    md = markdown(summary, {**meta, "runs": runs})
    prefix.with_suffix(".md").write_text(md)
    plot(runs, tasks, prefix.with_suffix(".png"))
    return md


# ---------------------------------------------------------------- command line

def start_ray(address: str | None, device: str) -> None:
    """Like ebrl.experiments.sweep.start_ray, but with the trials' progress lines sent to this terminal."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # read when ray is imported: keep every progress line
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        gpus = 0
        if device == "cuda":
            import torch

            gpus = torch.cuda.device_count()
        ray.init(num_cpus=os.cpu_count(), num_gpus=gpus, include_dashboard=False, log_to_driver=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=DEFAULT_TASKS)
    parser.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=50_000, help="env steps per run")
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--max-concurrent", type=int, default=1, metavar="N",
                        help="runs at a time (one CPU and one torch thread each)")
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster ('auto', or host:port); default: Ray here")
    parser.add_argument("--storage", default="runs/sweeps", help="where the Ray Tune trials are kept")
    parser.add_argument("--no-ray", action="store_true",
                        help="run the jobs one after another in this process, without Ray")
    parser.add_argument("--fresh", action="store_true",
                        help="run every job again even if the jsonl has it (the new line supersedes)")
    parser.add_argument("--out-prefix", type=Path, default=RESULTS / "mujoco",
                        help="writes <prefix>_runs.jsonl, <prefix>.json, .md, .png")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--report-only", action="store_true",
                        help="rebuild the json/md/png from the jsonl without training")
    parser.add_argument("--sac-learning-starts", type=int, default=SAC_LEARNING_STARTS,
                        help="smoke tests only (changes SAC's settings hash)")
    parser.add_argument("--learn-from", type=int, default=SAC_LEARNING_STARTS,
                        help="env step where the learning phase starts for the speed (smoke tests only)")
    parser.add_argument("--sql-kwargs", default="{}",
                        help='JSON keyword arguments added to SQL\'s (a different settings hash), e.g. '
                             '\'{"policy_kwargs": {"compile_act": true}}\'')
    parser.add_argument("--adopt-runs", nargs=2, default=None, metavar=("JSONL", "HASH"),
                        help="first copy in, as runs of SQL's defaults, the SQL runs of JSONL with settings "
                             "hash HASH: the tuning runs of the candidate that became the defaults")
    args = parser.parse_args(argv)

    # absolute: Ray runs each trial in its own directory
    prefix = args.out_prefix.resolve()
    jsonl = prefix.with_name(prefix.name + "_runs.jsonl")
    given = sys.argv[1:] if argv is None else argv
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *given])
    settings: dict[str, dict[str, Any]] = {}
    for algo in ALGOS:
        kwargs = algo_kwargs(algo, args.sac_learning_starts)
        if algo == "SQL":
            kwargs = {**kwargs, **json.loads(args.sql_kwargs)}
        settings[algo] = {"kwargs": kwargs, "hash": settings_hash(algo, kwargs)}

    if args.adopt_runs is not None:
        if args.sql_kwargs != "{}":
            parser.error("--adopt-runs copies runs as runs of SQL's defaults: it takes no --sql-kwargs")
        src, old_hash = Path(args.adopt_runs[0]), args.adopt_runs[1]
        print(f"adopted {adopt_runs(src, old_hash, jsonl, settings['SQL'])} run(s) from {src}")
    failed: Exception | None = None
    if not args.report_only:
        # seed-major (every task gets seed 0 first), the algorithms of a seed next to each other
        jobs = [
            {"task": t, "env_id": TASKS[t], "algo": algo, "seed": seed, "steps": args.steps,
             "eval_every": args.eval_every, "eval_episodes": args.eval_episodes, "device": args.device,
             "learn_from": args.learn_from, "kwargs": settings[algo]["kwargs"],
             "settings_hash": settings[algo]["hash"], "jsonl": str(jsonl), "command": command}
            for seed in args.seeds for t in args.tasks for algo in args.algos
        ]
        done = set() if args.fresh else {run_key(r) for r in load_runs(jsonl)}
        todo = [j for j in jobs if run_key(j) not in done]
        print(f"{len(jobs)} runs asked, {len(jobs) - len(todo)} already in {jsonl} (skipped), "
              f"{len(todo)} to run; settings: " + ", ".join(f"{a} {settings[a]['hash']}" for a in ALGOS),
              flush=True)
        if todo and args.no_ray:
            # In this process, one run after another (a machine without Ray, e.g. the GPU check).
            for job in todo:
                run_one(job)
        elif todo:
            start_ray(args.address, args.device)
            try:
                run_parallel(run_one, todo, name=prefix.name, storage=args.storage, address=args.address,
                             max_concurrent=args.max_concurrent,
                             gpus_per_job=1.0 / args.max_concurrent if args.device == "cuda" else 0.0,
                             resume=not args.fresh)
            except Exception as exc:  # the finished runs are in the jsonl: still write what there is
                failed = exc
            finally:
                import ray

                ray.shutdown()
    md = write_outputs(prefix, jsonl, args, settings, command)
    print(md)
    print(f"wrote {prefix}.json, .md, .png from {jsonl}")
    if failed is not None:
        print(f"error: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
