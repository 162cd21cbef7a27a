"""rl-baselines3-zoo interop both ways: zoo's env keys and schedules in ebrl runs, ebrl's agents and
shipped configs in rl_zoo3's own ``train`` (a real rl_zoo3, installed by the dev extra)."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import yaml
from stable_baselines3.common.vec_env import VecFrameStack, VecNormalize

from ebrl.agents import SQL, DiscreteSQL
from ebrl.experiments.cli import main
from ebrl.experiments.config import RUN_SECTION, load_hyperparams, resolve
from ebrl.experiments.train import build_model
from ebrl.experiments.zoo import NORMALIZER_FILE, LinearSchedule, ObsNormalizer
from ebrl.experiments.zoo_train import HINT
from ebrl.experiments.zoo_train import main as zoo_main

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
ZOO_KEYS = {"n_timesteps", "policy", "n_envs", "normalize", "env_kwargs", "env_wrapper", "vec_env_wrapper",
            "frame_stack", "callback", "monitor_kwargs"}
WRAPPED = {
    "learning_starts": 30, "batch_size": 16, "n_particles": 4,
    "policy_kwargs": "dict(net_arch=[16, 16], search_steps=1)",
    "learning_rate": "lin_1e-3",
    "normalize": "dict(norm_obs=True, norm_reward=False)",
    "frame_stack": 2,
    "env_wrapper": [{"gymnasium.wrappers.ClipReward": {"min_reward": -10.0, "max_reward": 10.0}}],
}


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_config_entries_hold_only_what_rl_zoo3_accepts(config: Path) -> None:
    """rl_zoo3 passes every key it does not know itself to the constructor: run-level keys such as
    eval_freq must live in the ebrl_run section, where zoo never looks."""
    import rl_zoo3.utils

    from ebrl.experiments.zoo_train import register

    algo = config.stem.replace("-", "_")
    cls = register()[algo] if algo in rl_zoo3.utils.ALGOS or algo in ("sql", "discrete_sql") else None
    accepted = set(inspect.signature(cls.__init__).parameters) | ZOO_KEYS
    data = yaml.safe_load(config.read_text())
    for env_id, entry in data.items():
        if env_id == RUN_SECTION:
            continue
        assert set(entry) <= accepted, (env_id, sorted(set(entry) - accepted))


def test_run_section_and_default_entry(tmp_path: Path) -> None:
    path = write(tmp_path, {"default": {"batch_size": 8}, "Pendulum-v1": {"batch_size": 16},
                            RUN_SECTION: {"Pendulum-v1": {"eval_freq": 100},
                                          "default": {"n_eval_episodes": 3}}})
    assert load_hyperparams(path, "Pendulum-v1") == {"batch_size": 16, "eval_freq": 100}
    assert load_hyperparams(path, "ebrl/Fork-v0") == {"batch_size": 8, "n_eval_episodes": 3}
    cfg = resolve("sql", "Pendulum-v1", 0, config_file=path)
    assert (cfg.eval_freq, cfg.hyperparams) == (100, {"batch_size": 16})


def test_zoo_env_keys_and_linear_schedule_build_the_wrapped_env(tmp_path: Path) -> None:
    cfg = resolve("sql", "ebrl/MultiGoal-v0", 0, config_file=write(tmp_path, {"ebrl/MultiGoal-v0": WRAPPED}))
    assert set(cfg.wrappers) == {"normalize", "frame_stack", "env_wrapper"}
    assert "normalize" not in cfg.hyperparams and cfg.hyperparams["learning_rate"] == "lin_1e-3"
    model = build_model(cfg)
    venv = model.get_env()
    # VecNormalize outermost: SB3's off-policy buffers store its original (stacked) observations
    assert isinstance(venv, VecNormalize) and isinstance(venv.venv, VecFrameStack)
    assert venv.norm_reward is False and venv.gamma == model.gamma
    assert model.observation_space.shape == (4,)  # MultiGoal's 2-D position, stacked twice
    assert type(venv.venv.venv.envs[0].env).__name__ == "ClipReward"
    assert isinstance(model.learning_rate, LinearSchedule)  # SB3 wraps it in a FloatSchedule
    assert model.lr_schedule(1.0) == pytest.approx(1e-3) and model.lr_schedule(0.25) == pytest.approx(2.5e-4)


def test_a_normalised_stacked_run_trains_resumes_evaluates_and_plots(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, {"ebrl/MultiGoal-v0": {**WRAPPED, "n_timesteps": 120},
                            RUN_SECTION: {"ebrl/MultiGoal-v0": {"n_eval_episodes": 3, "eval_freq": 60}}})
    rc = main(["train", "--algo", "sql", "--env-id", "ebrl/MultiGoal-v0", "--config", str(path),
               "--seed", "1", "--runs-dir", str(tmp_path / "runs"), "--no-progress-bar"])
    assert rc == 0
    (run,) = (tmp_path / "runs").iterdir()
    normalizer = ObsNormalizer.load(run / NORMALIZER_FILE)
    assert normalizer.mean.shape == (4,) and np.all(normalizer.var > 0)  # of the stacked positions
    capsys.readouterr()
    assert main(["eval", str(run), "--n-episodes", "3", "--no-gif"]) == 0
    assert main(["plot", str(run), "--states", "0,0;2.5,2.5"]) == 0
    assert (run / "plots" / "energy_landscape.png").is_file()
    assert main(["train", "--resume", str(run), "--total-timesteps", "150", "--no-progress-bar"]) == 0
    assert "resuming" in capsys.readouterr().out


def test_evaluation_sees_observations_as_training_made_them(tmp_path: Path) -> None:
    """The evaluation loop steps plain envs; its pipeline must give the policy what the training
    VecEnv (VecFrameStack, then VecNormalize) gives it for the same episode."""
    from ebrl.experiments.zoo import ObsPipeline, ZooEnvKeys

    cfg = resolve("sql", "ebrl/MultiGoal-v0", 0, config_file=write(tmp_path, {"ebrl/MultiGoal-v0": WRAPPED}))
    model = build_model(cfg)
    normalize = model.get_env()
    normalize.seed(7)
    normalize.obs_rms.mean[:] = [0.5, -0.25, 0.1, 0.2]  # as if trained for a while
    normalize.obs_rms.var[:] = [4.0, 2.0, 3.0, 0.5]
    normalize.training = False  # freeze the statistics for the comparison
    seen_train = [normalize.reset()]
    base = normalize.venv.venv  # the DummyVecEnv: raw observations come from its envs
    raw = [base.buf_obs[None].copy()]
    actions = [np.array([[0.3, -0.2]], np.float32), np.array([[-0.5, 0.9]], np.float32)]
    for a in actions:
        seen_train.append(normalize.step(a)[0])
        raw.append(base.buf_obs[None].copy())
    keys = ZooEnvKeys.from_config(cfg.wrappers)
    frozen = ObsNormalizer.from_vec_normalize(normalize)
    pipeline = ObsPipeline(base.observation_space, 1, keys.frame_stack, frozen)
    seen_eval = [pipeline.reset(raw[0])] + [pipeline.step(r) for r in raw[1:]]
    for t, (a, b) in enumerate(zip(seen_train, seen_eval, strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6, err_msg=f"step {t}")


@pytest.mark.parametrize(("algo", "env_id", "cls", "from_config"), [
    ("sql", "ebrl/MultiGoal-v0", SQL, {"n_particles": 16, "reward_scale": 0.1}),
    ("discrete_sql", "CartPole-v1", DiscreteSQL, {"gradient_steps": 128, "target_update_interval": 10}),
])
def test_rl_zoo3_trains_ebrl_agents_from_the_shipped_configs(
    tmp_path: Path, monkeypatch, algo: str, env_id: str, cls: type, from_config: dict
) -> None:
    monkeypatch.chdir(tmp_path)
    tiny = ["learning_starts:40", "batch_size:16", "policy_kwargs:dict(net_arch=[16])"]
    rc = zoo_main(["--algo", algo, "--env", env_id, "-n", "120", "--eval-freq", "-1", "-f", "logs",
                   "--seed", "3", "--hyperparams", *tiny])
    assert rc == 0
    (saved,) = (tmp_path / "logs" / algo).glob("*/*.zip")
    model = cls.load(saved, device="cpu")
    # the command line's batch size; train_freq may overshoot the budget
    assert model.num_timesteps >= 120 and model.batch_size == 16
    for name, value in from_config.items():  # the shipped entry's values, read by rl_zoo3
        assert getattr(model, name) == value, name
    obs = model.observation_space.sample()
    assert model.action_space.contains(model.predict(obs, deterministic=True)[0])


def test_zoo_train_without_rl_zoo3_is_a_one_line_hint(monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "rl_zoo3.train", None)  # as if rl_zoo3 were not installed
    assert zoo_main(["--algo", "sql"]) == 2
    assert capsys.readouterr().err.strip() == "error: " + HINT
