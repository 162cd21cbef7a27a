"""The MuJoCo suite's bookkeeping (no MuJoCo needed): which candidate runs count as runs of the defaults."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_suite():
    path = ROOT / "experiments" / "benchmarks" / "mujoco_suite.py"
    spec = importlib.util.spec_from_file_location("mujoco_suite", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adopt_runs_takes_only_runs_whose_arguments_are_todays_defaults(tmp_path):
    suite = load_suite()
    import inspect

    from ebrl.agents.sql import SQL

    default_te = inspect.signature(SQL.__init__).parameters["target_entropy"].default
    other_lr = inspect.signature(SQL.__init__).parameters["learning_rate"].default / 10  # not a default
    base = {"task": "halfcheetah", "algo": "SQL", "steps": 50_000, "eval_every": 5000, "eval_episodes": 10,
            "device": "cpu", "learn_from": 10_000, "settings_hash": "cand", "command": "x",
            "final_return": 1.0}
    src = tmp_path / "candidates_runs.jsonl"
    rows = [{**base, "seed": 0, "kwargs": {"target_entropy": default_te}},  # the candidate: adopted
            # another candidate, and the old defaults, whose arguments are today's defaults too:
            # only the named hash says which runs had today's effective settings
            {**base, "seed": 1, "kwargs": {"learning_rate": other_lr}, "settings_hash": "other"},
            {**base, "seed": 2, "kwargs": {"learning_starts": 10_000}, "settings_hash": "old"},
            {**base, "seed": 3, "algo": "SAC", "kwargs": {"target_entropy": default_te}}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "mujoco_runs.jsonl"
    sql = {"kwargs": {}, "hash": suite.settings_hash("SQL", {})}

    assert suite.adopt_runs(src, "cand", dst, sql) == 1
    (adopted,) = suite.load_runs(dst)
    assert adopted["seed"] == 0 and adopted["kwargs"] == {} and adopted["settings_hash"] == sql["hash"]
    assert adopted["adopted_from"]["kwargs"] == {"target_entropy": default_te}
    assert adopted["adopted_from"]["settings_hash"] == "cand"
    # a second call adds nothing: the run is already there
    assert suite.adopt_runs(src, "cand", dst, sql) == 0
    assert len(dst.read_text().splitlines()) == 1
    # runs that passed an argument which is not a default today are refused, and nothing is written
    with pytest.raises(ValueError, match="learning_rate"):
        suite.adopt_runs(src, "other", dst, sql)
    assert len(dst.read_text().splitlines()) == 1
    # policy_kwargs count item by item against the policy's defaults
    from ebrl.agents.sql import SQLPolicy

    default_act = inspect.signature(SQLPolicy.__init__).parameters["deterministic_act"].default
    other_act = "proposal" if default_act != "proposal" else "search"
    rows = [{**base, "seed": 4, "kwargs": {"policy_kwargs": {"deterministic_act": default_act}},
             "settings_hash": "pk"},
            {**base, "seed": 5, "kwargs": {"policy_kwargs": {"deterministic_act": other_act}},
             "settings_hash": "pk_other"}]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert suite.adopt_runs(src, "pk", dst, sql) == 1
    with pytest.raises(ValueError, match="deterministic_act"):
        suite.adopt_runs(src, "pk_other", dst, sql)
    assert len(dst.read_text().splitlines()) == 2


def test_ratio_interval_and_probability_of_improvement_on_known_cases():
    suite = load_suite()
    import numpy as np

    # every SQL seed above every SAC seed: P = 1; all seeds tied: P = 0.5; below: 0
    assert suite.probability_of_improvement(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert suite.probability_of_improvement(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert suite.probability_of_improvement(np.array([0.0]), np.array([1.0, 2.0])) == 0.0
    # the interval holds the point ratio, narrows as seeds agree, and is a pure function of the runs
    rng = np.random.default_rng(1)
    sql, sac = 200 + 50 * rng.standard_normal(10), 100 + 50 * rng.standard_normal(10) + 100
    lo, hi = suite.ratio_iqm_interval(sql, sac)
    assert lo < suite.iqm(sql) / suite.iqm(sac) < hi
    assert suite.ratio_iqm_interval(sql, sac) == (lo, hi)
    lo_t, hi_t = suite.ratio_iqm_interval(200 + 0.1 * (sql - 200), 200 + 0.1 * (sac - 200))
    assert hi_t - lo_t < 0.2 * (hi - lo)
    # undefined: one seed, or a baseline whose resampled IQM can be <= 0
    assert suite.ratio_iqm_interval(sql[:1], sac) is None
    assert suite.ratio_iqm_interval(sql, np.array([-5.0, 1.0, 2.0])) is None
