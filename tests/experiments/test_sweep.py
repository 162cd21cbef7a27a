"""`ebrl sweep`: sweep files are validated before Ray starts; a tiny local sweep runs, reports and resumes."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ebrl.experiments.config import ConfigError, resolve
from ebrl.experiments.sweep import main, run_parallel
from ebrl.experiments.sweep_report import TrialResult, iqm, summarise
from ebrl.experiments.sweep_spec import apply_params, draw_configs, load_sweep

ray = pytest.importorskip("ray")
SWEEPS = Path(__file__).resolve().parents[2] / "experiments" / "sweeps"
SMOKE = yaml.safe_load((SWEEPS / "smoke.yaml").read_text())


def write_sweep(tmp_path: Path, **changes: object) -> Path:
    data = {**SMOKE, **changes}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in data.items() if v is not None}))
    return path


@pytest.mark.parametrize("changes, message", [
    ({"serach": {"alpha": {"grid": [0.1]}}}, "unknown key 'serach'"),
    ({"search": {}}, "search space is empty"),
    ({"search": None}, "search space is empty"),
    ({"algo": "ppo"}, "unknown algo 'ppo'"),
    ({"search": {"alpha": {"grid": []}}}, "non-empty list for grid"),
    ({"search": {"alpha": {"normal": [0, 1]}}}, "must be one of"),
    ({"search": {"learning_rate": {"loguniform": [0, 1e-3]}}}, "low > 0"),
    ({"search": {"lr": {"grid": [1e-3]}}}, "search key 'lr' is not accepted by algo 'discrete-sql'"),
    ({"hyperparams": {"gama": 0.9}}, "hyperparams key 'gama' is not accepted"),
    ({"seeds": []}, "seeds must be"),
    ({"metric": "rollout/ep_rew_mean"}, "metric must be an eval/"),
    ({"scheduler": {"type": "hyperband"}}, "scheduler must be"),
    ({"env_id": "CartPole-v9"}, "unknown env id"),
])
def test_bad_sweep_file_fails_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: dict, message: str
) -> None:
    path = write_sweep(tmp_path, **changes)
    with pytest.raises(ConfigError, match=message):
        load_sweep(path)
    assert main(["--config", str(path), "--storage", str(tmp_path / "sweeps")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ebrl: error: ") and message.split("'")[0] in err and err.count("\n") == 1
    assert not ray.is_initialized()
    assert not (tmp_path / "sweeps").exists()


def test_resume_of_a_directory_that_is_not_a_sweep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--resume", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
    assert not ray.is_initialized()


def test_random_dimensions_are_shared_by_seeds_and_reproducible() -> None:
    search = {"alpha": ("grid", [0.1, 1.0]), "learning_rate": ("loguniform", [1e-4, 1e-2]),
              "batch_size": ("choice", [16, 32])}
    configs = draw_configs(search, num_samples=3, seed=0)
    assert len(configs) == 6 and configs == draw_configs(search, num_samples=3, seed=0)
    assert [c["alpha"] for c in configs] == [0.1, 1.0] * 3
    assert all(1e-4 <= c["learning_rate"] <= 1e-2 and c["batch_size"] in (16, 32) for c in configs)
    assert configs[0]["learning_rate"] == configs[1]["learning_rate"]  # one draw, crossed with the grid


def test_params_reach_run_keys_constructor_args_and_nested_dicts(tmp_path: Path) -> None:
    spec = load_sweep(write_sweep(tmp_path, search={"alpha": {"grid": ["1e-2"]},
                                                    "policy_kwargs.net_arch": {"choice": [[8, 8]]}}))
    assert spec.configs == [{"alpha": 0.01, "policy_kwargs.net_arch": [8, 8]}]
    cfg = apply_params(spec.base, {**spec.configs[0], "n_timesteps": 50, "eval_freq": 25}, seed=4)
    assert (cfg.seed, cfg.total_timesteps, cfg.eval_freq) == (4, 50, 25)
    assert cfg.hyperparams["alpha"] == 0.01 and cfg.hyperparams["policy_kwargs"] == {"net_arch": [8, 8]}
    assert spec.base.hyperparams["policy_kwargs"] == {"net_arch": [16]}  # the base is not mutated


def test_shipped_sweep_files_are_valid() -> None:
    for path in sorted(SWEEPS.glob("*.yaml")):
        spec = load_sweep(path)
        assert spec.configs and spec.seeds, path
        resolve(spec.base.algo, spec.base.env_id, 0)


def test_table_statistics() -> None:
    assert iqm(np.array([0.0, 1.0, 2.0, 100.0])) == 1.5
    trials = [TrialResult("c0", {"a": 1}, s, [10, 20], [0.0, r]) for s, r in enumerate([1.0, 3.0])]
    trials += [TrialResult("c1", {"a": 2}, 0, [10, 20], [0.0, 5.0]),
               TrialResult("c1", {"a": 2}, 1, status="ERROR")]
    best, second = summarise(trials, mode="max")
    assert best["config"] == "c1" and best["n"] == 1 and best["stderr"] is None and best["errored"] == 1
    assert second["mean"] == 2.0 and math.isclose(second["stderr"], 1.0) and second["iqm"] == 2.0
    assert summarise(trials, mode="min")[0]["config"] == "c0"


def test_tiny_local_sweep_finishes_reports_and_resumes_without_rerunning(tmp_path: Path) -> None:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        storage = tmp_path / "sweeps"
        args = ["--config", str(SWEEPS / "smoke.yaml"), "--storage", str(storage), "--max-concurrent", "2",
                "--quiet"]
        assert main(args) == 0
        (sweep_dir,) = storage.iterdir()
        for name in ("results.csv", "results.md", "results.json", "returns.png"):
            assert (sweep_dir / name).stat().st_size > 0, name
        report = json.loads((sweep_dir / "results.json").read_text())
        configs = sorted(report["configs"], key=lambda c: c["config"])
        assert [(c["config"], c["n"], c["errored"]) for c in configs] == [("c0", 2, 0), ("c1", 2, 0)]
        trials = {(t["config"], t["seed"]) for t in report["trials"]}
        assert trials == {("c0", 0), ("c0", 1), ("c1", 0), ("c1", 1)}
        # eval_freq 100 over 300 steps: intermediate reports (what ASHA needs), then the final evaluation
        assert all(len(t["returns"]) >= 3 and t["timesteps"][-1] >= 300 for t in report["trials"])
        assert all((Path(t["run_dir"]) / "model.zip").is_file() for t in report["trials"])
        models = sorted(sweep_dir.glob("runs/*/*/model.zip"))
        assert len(models) == 4
        assert {json.loads((m.parent / "summary.json").read_text())["seed"] for m in models} == {0, 1}
        stamps = {m: m.stat().st_mtime_ns for m in models}

        assert main(["--resume", str(sweep_dir), "--quiet"]) == 0
        assert {m: m.stat().st_mtime_ns for m in sorted(sweep_dir.glob("runs/*/*/model.zip"))} == stamps
        assert json.loads((sweep_dir / "results.json").read_text())["configs"] == report["configs"]

        # the benchmarks' entry point: any function of a job, as parallel trials, results in job order;
        # called again with the same name and jobs, it runs nothing
        calls = tmp_path / "calls"
        calls.mkdir()

        def job_fn(job: dict) -> dict:
            (calls / f"{job['seed']}-{time.time_ns()}").touch()
            return {"twice": 2 * job["seed"]}

        jobs = [{"seed": 0}, {"seed": 1}, {"seed": 2}]
        for _ in range(2):
            out = run_parallel(job_fn, jobs, name="bench", storage=storage, max_concurrent=2)
            assert out == [{"twice": 0}, {"twice": 2}, {"twice": 4}]
            assert len(list(calls.iterdir())) == 3
    finally:
        ray.shutdown()


def test_a_trial_run_again_continues_its_own_run_from_its_checkpoint(tmp_path: Path) -> None:
    from stable_baselines3.common.callbacks import BaseCallback

    from ebrl.experiments.checkpoints import CheckpointDir
    from ebrl.experiments.checkpoints.directory import read_state
    from ebrl.experiments.sweep import _train_or_resume
    from ebrl.experiments.train import train

    class Interrupt(BaseCallback):  # the sweep stopped while this trial was in flight
        def _on_step(self) -> bool:
            if self.num_timesteps >= 250:
                raise KeyboardInterrupt
            return True

    cfg = apply_params(load_sweep(SWEEPS / "smoke.yaml").base,
                       {"n_timesteps": 400, "checkpoint_freq": 100, "eval_freq": 200}, seed=0)
    run_root = tmp_path / "c0_seed0"
    setup = {"track": False, "wandb_project": "ebrl"}
    with pytest.raises(KeyboardInterrupt):
        train(cfg, runs_dir=run_root, progress_bar=False, callbacks=[Interrupt()])
    (run_dir,) = [p for p in run_root.iterdir() if p.is_dir()]
    assert read_state(CheckpointDir(run_dir / "checkpoints").latest())["step"] < 400

    _train_or_resume(cfg, run_root, setup)  # what the trial does when `ebrl sweep --resume` reruns it
    assert [p for p in run_root.iterdir() if p.is_dir()] == [run_dir]  # no second run folder
    assert read_state(CheckpointDir(run_dir / "checkpoints").latest())["step"] == 400
    _train_or_resume(cfg, run_root, setup)  # a finished run: nothing is trained again
    assert [p for p in run_root.iterdir() if p.is_dir()] == [run_dir]


@pytest.mark.slow
def test_sweep_on_a_local_two_node_ray_cluster(tmp_path: Path) -> None:
    # Two Ray nodes on this machine (a head and a worker node, one CPU each, as `ray start --head`
    # and `ray start --address` would make); `ebrl sweep --address` must spread the trials over
    # both and collect every result in the sweep folder. Only this cluster's processes are stopped.
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        assert main(["--config", str(SWEEPS / "smoke.yaml"), "--address", cluster.address,
                     "--storage", str(tmp_path), "--quiet"]) == 0
        (results,) = tmp_path.glob("smoke-*/results.json")
        trials = json.loads(results.read_text())["trials"]
        assert len(trials) == 4
        assert all(t["status"] == "TERMINATED" and t["final"] is not None for t in trials)
        assert len({t["node_id"] for t in trials}) == 2, [t["node_id"] for t in trials]
    finally:
        ray.shutdown()
        cluster.shutdown()
