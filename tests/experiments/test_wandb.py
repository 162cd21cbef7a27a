"""W&B: one real offline run read back from run-*.wandb; W&B failures never stop training."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import ebrl.experiments.wandb_logger as wl
from ebrl.experiments.cli import main


def test_offline_run_records_metrics_and_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # `make test` exports WANDB_MODE=disabled; this test wants a real offline run.
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = tmp_path / "sql.yaml"
    cfg.write_text(yaml.safe_dump({"ebrl/MultiGoal-v0": {
        "learning_starts": 40, "batch_size": 32, "n_particles": 4, "n_eval_episodes": 3,
        "policy_kwargs": {"net_arch": [16, 16], "search_steps": 3}}}))
    rc = main(["train", "--algo", "sql", "--env-id", "ebrl/MultiGoal-v0", "--total-timesteps", "150",
               "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--no-progress-bar", "--track",
               "--wandb-project", "ebrl-test"])
    assert rc == 0
    assert "wandb sync" in capsys.readouterr().out
    (run_file,) = (tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb")
    records = wl.read_wandb_run(run_file.parent, timeout=30)

    prefixes = {name.split("/")[0] for name in records.metric_names}
    assert {"train", "rollout", "sampler", "eval"} <= prefixes, sorted(records.metric_names)
    assert {"train/q_loss", "rollout/ep_rew_mean", "eval/goal_entropy"} <= records.metric_names
    assert any(k.startswith("plots/") for row in records.history for k in row)
    assert records.config["algo"] == "sql"
    assert records.config["env_id"] == "ebrl/MultiGoal-v0"
    assert records.config["hyperparams"]["n_particles"] == 4
    # The settings the run really used (defaults included), and W&B's grouping (issue 14).
    resolved = records.config["resolved"]
    assert resolved["n_particles"] == 4 and resolved["alpha"] == "auto" and resolved["batch_size"] == 32
    assert resolved["policy_kwargs"]["search_steps"] == 3 and resolved["policy_kwargs"]["sampler"] == "mala"
    assert (records.group, records.job_type) == ("ebrl/MultiGoal-v0", "train")
    assert set(records.tags) == {"sql", "sampler:mala"}
    assert any(name.startswith("model-") for name in records.artifacts)
    # history steps are env steps (num_timesteps), not dump counts
    steps = [row["_step"] for row in records.history if "rollout/ep_rew_mean" in row]
    assert steps == sorted(steps) and steps[-1] <= 150


def test_reader_rejects_other_files(tmp_path: Path) -> None:
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not a wandb log at all")
    with pytest.raises(ValueError, match="not a W&B run file"):
        wl.read_wandb_run(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        wl.read_wandb_run(empty)


def test_wandb_failure_never_stops_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wandb

    def broken_init(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no network")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", broken_init)
    cfg = tmp_path / "sac.yaml"
    cfg.write_text(yaml.safe_dump({"ebrl/MultiGoal-v0": {
        "learning_starts": 20, "batch_size": 16, "n_eval_episodes": 2, "policy_kwargs": {"net_arch": [8]}}}))
    with pytest.warns(UserWarning, match="W&B could not start"):
        rc = main(["train", "--algo", "sac", "--env-id", "ebrl/MultiGoal-v0", "--total-timesteps", "40",
                   "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--no-progress-bar",
                   "--track"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "model.zip").is_file() and (run / "metrics.csv").is_file()


def test_writer_disables_itself_after_a_failure() -> None:
    class Run:
        calls = 0

        def log(self, data: dict, step: int) -> None:
            Run.calls += 1
            raise ConnectionError("gone")

    writer = wl.WandbOutputFormat(Run())
    with pytest.warns(UserWarning, match="W&B logging failed"):
        writer.write({"train/loss": 1.0}, {"train/loss": None}, step=5)
    writer.write({"train/loss": 2.0}, {"train/loss": None}, step=6)
    assert Run.calls == 1
