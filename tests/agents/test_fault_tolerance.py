"""Divergence guard (skip / roll back / count / stop) and safe loading of model files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env

from ebrl.agents import SQL, DiscreteSQL
from ebrl.agents.common.guard import DivergenceGuardMixin
from ebrl.agents.common.safe_load import ModelFileError, UnsafeModelError, safe_load, save_model
from ebrl.errors import NonFiniteError
from ebrl.experiments.checkpoints import CheckpointDir, save_training_checkpoint

if issubclass(SQL, DivergenceGuardMixin):
    GuardedSQL = SQL
else:

    class GuardedSQL(DivergenceGuardMixin, SQL):
        """Until SQL mixes the guard in itself (the issue-7 diff): the guard around SQL's own train()."""

        def train(self, gradient_steps: int, batch_size: int = 256) -> None:
            self._guard_begin()
            super().train(gradient_steps, batch_size)
            self._guard_end()


TINY = {
    "learning_starts": 20,
    "batch_size": 16,
    "n_particles": 4,
    "policy_kwargs": {"net_arch": [16, 16], "search_steps": 2, "n_chains": 4},
}


def sql(cls: type = GuardedSQL, steps: int = 40, **kwargs) -> SQL:
    model = cls(
        "MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, device="cpu", **{**TINY, **kwargs}
    )
    model.learn(steps)
    return model


def poison_rewards(model: SQL, times: int | None) -> list[int]:
    """Make the next ``times`` minibatches (all, with None) carry NaN rewards."""
    calls = [0]
    original = model.replay_buffer.sample

    def sample(*args, **kwargs):
        data = original(*args, **kwargs)
        calls[0] += 1
        if times is None or calls[0] <= times:
            data.rewards[:] = float("nan")
        return data

    model.replay_buffer.sample = sample
    return calls


def snapshot(model: SQL) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.policy.state_dict().items()}


def test_one_bad_batch_is_rolled_back_and_counted() -> None:
    model = sql()
    before = snapshot(model)
    poison_rewards(model, times=1)
    model.train(gradient_steps=1, batch_size=16)
    after = snapshot(model)
    for k in before:  # the NaN update left no trace
        assert torch.equal(before[k], after[k]), k
    assert model.n_diverged == 1 and model.logger.name_to_value["train/diverged"] == 1
    model.train(gradient_steps=1, batch_size=16)  # the next good batch trains normally
    assert model._consecutive_divergences == 0
    assert all(torch.isfinite(v).all() for v in model.policy.state_dict().values())
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())


def test_consecutive_failures_stop_training_naming_the_quantity(caplog: pytest.LogCaptureFixture) -> None:
    model = sql()
    model.max_divergences = 3
    poison_rewards(model, times=None)
    with pytest.raises(NonFiniteError, match=r"training diverged: .*(q_loss|parameters).* 3 consecutive"):
        model.learn(20, reset_num_timesteps=False)
    assert ("non-finite" in caplog.text and "rolled back" in caplog.text) or "skipped" in caplog.text
    assert all(torch.isfinite(v).all() for v in model.policy.state_dict().values())


def test_a_checkpoint_never_holds_nan(tmp_path: Path) -> None:
    model = sql(SQL, steps=30)
    with torch.no_grad():
        next(model.policy.critics.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"params.policy.critics.0.* holds NaN or inf"):
        save_training_checkpoint(model, CheckpointDir(tmp_path / "checkpoints"))
    assert not list((tmp_path / "checkpoints").glob("step_*"))
    assert CheckpointDir(tmp_path / "checkpoints").latest() is None


# ----------------------------------------------------------------------------- safe loading


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[SQL, Path, Path]:
    tmp = tmp_path_factory.mktemp("models")
    model = sql(SQL, steps=30)
    ours = save_model(model, tmp / "sql.zip")
    model.save(tmp / "plain_sb3.zip")  # SB3's own save: no ebrl.json
    return model, ours, tmp / "plain_sb3.zip"


@pytest.mark.parametrize("which", ["ebrl", "sb3"])
def test_safe_load_never_unpickles_and_predicts_the_same(
    saved, which: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model, ours, plain = saved
    import pickle

    import cloudpickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    loaded = safe_load(SQL, ours if which == "ebrl" else plain, device="cpu")
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert loaded.train_freq == model.train_freq


def _rewrite(src: Path, dst: Path, change) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.namelist():
            data = change(item, zin.read(item))
            if data is not None:
                zout.writestr(item, data)
    return dst


def _meta(**changes):
    def change(name: str, data: bytes):
        if name != "ebrl.json":
            return data
        return json.dumps({**json.loads(data), **changes}).encode()

    return change


@pytest.mark.parametrize("which", ["ebrl", "sb3"])
def test_a_file_saved_before_the_ebrl_agents_rename_still_loads(saved, which: str, tmp_path: Path) -> None:
    """Model files written when the agents were installed as top-level ``agents`` name their
    classes agents.<...> (in ebrl.json and in SB3's readable fields): they load as
    ebrl.agents.<...> and act the same."""
    model, ours, plain = saved

    def legacy(name: str, data: bytes) -> bytes:
        if name == "data":  # SB3's JSON: the readable module of every pickled class
            return data.replace(b'"__module__": "ebrl.agents.', b'"__module__": "agents.')
        if name == "ebrl.json":
            meta = json.loads(data)
            return json.dumps({k: v.removeprefix("ebrl.") if k.endswith("_class") and v else v
                               for k, v in meta.items()}).encode()
        return data

    src = ours if which == "ebrl" else plain
    old = _rewrite(src, tmp_path / "legacy.zip", legacy)
    assert b'"__module__": "agents.sql.policies"' in zipfile.ZipFile(old).read("data")
    loaded = safe_load(SQL, old, device="cpu")
    assert loaded.policy_class is model.policy_class
    obs = np.zeros((3, 3), np.float32)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )


def test_safe_load_errors(saved, tmp_path: Path) -> None:
    _, ours, plain = saved
    raw = ours.read_bytes()
    (tmp_path / "truncated.zip").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        safe_load(SQL, tmp_path / "truncated.zip")
    flipped = bytearray(raw)
    start = raw.index(b"policy.pth") + 200  # inside the compressed policy tensors
    flipped[start : start + 8] = b"\x00" * 8
    (tmp_path / "flipped.zip").write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError, match=r"corrupt|checksum"):
        safe_load(SQL, tmp_path / "flipped.zip")
    with pytest.raises(ModelFileError, match="holds a SQL model, not DiscreteSQL"):
        safe_load(DiscreteSQL, ours)
    with pytest.raises(ModelFileError, match=r"another algorithm .its policy comes from ebrl\.agents\.sql"):
        safe_load(SAC, plain)
    with pytest.raises(ModelFileError, match=r"written by ebrl 9\.0\.0 \(model format 2\)"):
        safe_load(SQL, _rewrite(ours, tmp_path / "future.zip", _meta(ebrl_format=2, ebrl_version="9.0.0")))
    sb3_1 = _rewrite(
        ours, tmp_path / "sb3v1.zip", lambda n, d: b"1.8.0" if n == "_stable_baselines3_version" else d
    )
    with pytest.raises(ModelFileError, match=r"stable-baselines3 1\.8\.0"):
        safe_load(SQL, sb3_1)
    with pytest.raises(ModelFileError, match=r"observation_space of the env .* does not match"):
        safe_load(SQL, ours, env=make_vec_env("MountainCarContinuous-v0", n_envs=1))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        safe_load(SQL, tmp_path / "absent.zip")


def test_pickled_code_needs_an_opt_in(saved, tmp_path: Path) -> None:
    model = saved[0]
    model.learning_rate = lambda progress: 1e-3 * progress  # a custom schedule: only storable as code
    model.policy_kwargs = {**model.policy_kwargs, "activation": torch.nn.Tanh}
    model.save(tmp_path / "custom.zip")
    with pytest.raises(UnsafeModelError, match=r"policy_kwargs.* allow_pickle=True"):
        safe_load(SQL, tmp_path / "custom.zip")
    with pytest.raises((TypeError, ValueError)):  # the opt-in unpickles; SQLPolicy then rejects the class
        safe_load(SQL, tmp_path / "custom.zip", allow_pickle=True)


def test_a_pickled_schedule_falls_back_to_the_saved_rate_then_to_the_default(saved, tmp_path: Path) -> None:
    import inspect
    import zipfile

    from ebrl.agents.common.safe_load import _optimizer_lr

    model, _, plain = saved
    saved_rate = model.policy.optimizer.param_groups[0]["lr"]
    assert _optimizer_lr(SQL, plain) == pytest.approx(saved_rate)
    stripped = tmp_path / "no_optimizer.zip"  # an archive without the optimiser's state
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(stripped, "w") as dst:
        for name in src.namelist():
            if name != "policy.optimizer.pth":
                dst.writestr(name, src.read(name))
    assert _optimizer_lr(SQL, stripped) == inspect.signature(SQL.__init__).parameters["learning_rate"].default
