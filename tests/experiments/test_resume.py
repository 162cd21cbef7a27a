"""Resumable runs: interrupted + resumed == uninterrupted (bitwise on CPU); SIGTERM, SIGKILL, failing envs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import BaseCallback

from ebrl.experiments.checkpoints import CheckpointDir, load_training_checkpoint
from ebrl.experiments.config import RunConfig
from ebrl.experiments.train import TrainingInterrupted, resume, train

ROOT = Path(__file__).resolve().parents[2]
SQL_TINY = {
    "learning_starts": 30,
    "batch_size": 16,
    "n_particles": 4,
    "alpha": "auto_0.3",
    "policy_kwargs": {"net_arch": [16, 16], "search_steps": 3, "n_chains": 4, "warm_start": True},
}
DSQL_TINY = {
    "learning_starts": 30,
    "batch_size": 16,
    "train_freq": 1,
    "target_update_interval": 20,
    "policy_kwargs": {"net_arch": [16, 16]},
}


def config(algo: str = "sql", env_id: str = "ebrl/MultiGoal-v0", total: int = 90, **changes) -> RunConfig:
    hyper = SQL_TINY if algo == "sql" else DSQL_TINY
    base = {
        "algo": algo,
        "env_id": env_id,
        "seed": 5,
        "total_timesteps": total,
        "device": "cpu",
        "n_eval_episodes": 2,
        "eval_freq": 40,
        "checkpoint_freq": 25,
        "hyperparams": dict(hyper),
    }
    return RunConfig(**{**base, **changes})


class SignalAt(BaseCallback):
    """Send ``signum`` to this process when the run reaches ``step`` env steps."""

    def __init__(self, step: int, signum: int = signal.SIGINT) -> None:
        super().__init__()
        self.step, self.signum, self.sent = step, signum, False

    def _on_step(self) -> bool:
        if not self.sent and self.num_timesteps >= self.step:
            self.sent = True
            signal.raise_signal(self.signum)
        return True


def final_state(run_dir: Path) -> tuple[dict, dict, dict]:
    latest = CheckpointDir(run_dir / "checkpoints").latest()
    assert latest is not None
    return load_training_checkpoint(latest)


def assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{k}]")
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b, err_msg=where)
    else:
        assert a == b, where


# zoo's env keys: VecNormalize's running statistics and VecFrameStack's stack are checkpointed too
ZOO_WRAPPERS = {"normalize": True, "frame_stack": 2}


@pytest.mark.parametrize(("algo", "env_id", "wrappers"), [
    ("sql", "ebrl/MultiGoal-v0", {}),
    ("discrete-sql", "CartPole-v1", {}),
    ("sql", "ebrl/MultiGoal-v0", ZOO_WRAPPERS),
])
def test_interrupted_and_resumed_run_equals_uninterrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], algo: str, env_id: str, wrappers: dict
) -> None:
    full = train(config(algo, env_id, wrappers=wrappers), runs_dir=tmp_path / "a", progress_bar=False)
    # (the handler in place before the run: Python's default, or SIG_IGN in a background job)
    handler_before = signal.getsignal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="resume with: ebrl train --resume") as info:
        train(config(algo, env_id, wrappers=wrappers), runs_dir=tmp_path / "b", progress_bar=False,
              callbacks=[SignalAt(57)])
    assert info.value.exit_code == 128 + signal.SIGINT
    run = info.value.run_dir
    assert not (run / "model.zip").exists()
    assert signal.getsignal(signal.SIGINT) is handler_before  # handlers restored
    resume(run, progress_bar=False)

    t_full, a_full, s_full = final_state(full)
    t_res, a_res, s_res = final_state(run)
    assert s_res["step"] == s_full["step"] == 90
    assert_same(t_res["params"], t_full["params"], "params")  # policy and every optimiser, bitwise
    assert_same(t_res["variables"], t_full["variables"], "variables")
    assert_same(t_res["torch_rng"], t_full["torch_rng"], "torch_rng")
    assert_same(a_res, a_full, "replay buffer")
    s_res["counters"].pop("_num_timesteps_at_start")  # where this process started (for the fps figure)
    s_full["counters"].pop("_num_timesteps_at_start")
    assert s_res["counters"] == s_full["counters"]
    assert s_res["extra"]["eval_next"] == s_full["extra"]["eval_next"]
    assert s_res["env"]["wrappers"] == s_full["env"]["wrappers"]  # VecNormalize statistics, frame stack
    kinds = [w["type"] for w in s_res["env"]["wrappers"]]
    assert kinds == (["VecNormalize", "VecFrameStack"] if wrappers else [])
    # metrics.csv continues (no duplicated rows past the checkpoint) and ends like the full run's
    rows = (run / "metrics.csv").read_text().splitlines()
    assert rows[0] == (full / "metrics.csv").read_text().splitlines()[0]
    assert len(rows) == len((full / "metrics.csv").read_text().splitlines())


def test_resume_can_extend_and_refuses_a_finished_run(tmp_path: Path) -> None:
    run = train(config(total=40, eval_freq=0), runs_dir=tmp_path, progress_bar=False)
    from ebrl.experiments.config import ConfigError

    with pytest.raises(ConfigError, match="total_timesteps is 40"):
        resume(run, progress_bar=False)
    resume(run, total_timesteps=60, progress_bar=False)
    assert final_state(run)[2]["step"] == 60


class Crashy(gym.Env):
    """Raises in ``step`` from its ``crash_at``-th step on."""

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, crash_at: int = 45, render_mode: str | None = None) -> None:
        self.crash_at, self.t, self.render_mode = crash_at, 0, render_mode

    def render(self) -> np.ndarray:
        return np.zeros((8, 8, 3), np.uint8)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        self.t += 1
        if self.t >= self.crash_at:
            raise RuntimeError("simulator exploded")
        return np.full(2, 0.1, np.float32), 0.0, self.t % 10 == 0, False, {}


gym.register("ebrl-test/Crashy-v0", entry_point=Crashy)


def test_env_exception_saves_a_checkpoint_and_names_env_step_and_exception(tmp_path: Path) -> None:
    cfg = config(env_id="ebrl-test/Crashy-v0", eval_freq=0, checkpoint_freq=0)
    with pytest.raises(TrainingInterrupted) as info:
        train(cfg, runs_dir=tmp_path, progress_bar=False)
    msg = str(info.value)
    assert "env 0 (ebrl-test/Crashy-v0)" in msg and "RuntimeError: simulator exploded" in msg
    assert "in step() at its step 44" in msg and "run step 44" in msg and "--resume" in msg
    assert info.value.exit_code == 1
    _, arrays, state = final_state(info.value.run_dir)
    assert state["step"] == 44 and state["env_reset"] and len(arrays["observations"]) == 44
    # the env now survives: the run resumes from the checkpoint with reset envs
    cfg_path = info.value.run_dir / "config.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("env_kwargs: {}", "env_kwargs: {crash_at: 1000}"))
    resume(info.value.run_dir, progress_bar=False)
    assert final_state(info.value.run_dir)[2]["step"] == 90


def test_sigterm_checkpoints_and_exits_with_the_resume_command(tmp_path: Path) -> None:
    cfg = tmp_path / "sql.yaml"
    cfg.write_text(json.dumps({"ebrl/MultiGoal-v0": {**SQL_TINY, "checkpoint_freq": 20}}))
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ebrl.experiments.cli",
            "train",
            "--algo",
            "sql",
            "--env-id",
            "ebrl/MultiGoal-v0",
            "--total-timesteps",
            "100000",
            "--config",
            str(cfg),
            "--runs-dir",
            str(tmp_path / "runs"),
            "--no-progress-bar",
            "--device",
            "cpu",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not list((tmp_path / "runs").glob("*/checkpoints/latest.json")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    (run,) = (tmp_path / "runs").iterdir()
    assert "SIGTERM: training stopped at step" in err and f"resume with: ebrl train --resume {run}" in err
    step = final_state(run)[2]["step"]
    assert 20 <= step < 100000


KILL_DURING_SAVE = """
import os, signal, sys
from ebrl.experiments.checkpoints import CheckpointDir
d = CheckpointDir(sys.argv[1])
d.save(10, {"a.bin": lambda f: f.write(b"complete")}, {"note": "first"})
def half_then_die(f):
    f.write(b"half")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
d.save(20, {"a.bin": half_then_die}, {"note": "second"})
"""


def test_sigkill_during_a_save_leaves_the_previous_checkpoint_latest(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path)], cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    directory = CheckpointDir(tmp_path)
    latest = directory.latest()
    assert latest is not None and latest.name == "step_000000000010"
    assert (latest / "a.bin").read_bytes() == b"complete"
    assert json.loads((latest / "state.json").read_text())["note"] == "first"
    assert list(tmp_path.glob(".tmp-*"))  # the half-written one is left aside, never renamed
    directory.save(30, {"a.bin": lambda f: f.write(b"x")}, {})
    assert not list(tmp_path.glob(".tmp-*")) and directory.latest().name == "step_000000000030"
