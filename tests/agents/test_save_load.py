"""Save and load for SQL and DiscreteSQL (in the spirit of sb3-contrib's test_save_load)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from ebrl.agents import SQL, DiscreteSQL
from ebrl.agents.discrete_sql import DiscreteSQLPolicy
from ebrl.agents.sql import SQLPolicy

CASES = {
    "sql": (
        SQL,
        SQLPolicy,
        "Pendulum-v1",
        {"policy_kwargs": {"net_arch": (32, 32), "search_steps": 3, "n_chains": 4}, "n_particles": 4},
    ),
    "sql_auto_dfo": (
        SQL,
        SQLPolicy,
        "Pendulum-v1",
        {
            "policy_kwargs": {"net_arch": (32, 32), "sampler": "dfo", "search_steps": 2, "n_chains": 8},
            "n_particles": 4,
            "alpha": "auto_0.3",
        },
    ),
    "sql_layer_norm": (
        SQL,
        SQLPolicy,
        "Pendulum-v1",
        {"policy_kwargs": {"net_arch": (32, 32), "critic_layer_norm": True}},
    ),
    "discrete_sql": (
        DiscreteSQL,
        DiscreteSQLPolicy,
        "CartPole-v1",
        {"policy_kwargs": {"net_arch": (32, 32)}, "train_freq": 1},
    ),
}


def trained(name: str, seed: int = 0):
    algo, _, env_id, kwargs = CASES[name]
    model = algo(
        "MlpPolicy",
        make_vec_env(env_id, n_envs=1, seed=seed),
        seed=seed,
        learning_starts=50,
        batch_size=32,
        **kwargs,
    )
    model.learn(150)
    return model


def observations(model, n: int = 5) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *model.observation_space.shape)).astype(np.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_save_load_identical_and_learn_continues(name: str, tmp_path) -> None:
    algo, _, env_id, _ = CASES[name]
    model = trained(name)
    obs = observations(model)
    before = model.predict(obs, deterministic=True)[0]
    params = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.save(tmp_path / "model.zip")
    del model

    loaded = algo.load(tmp_path / "model.zip", env=make_vec_env(env_id, n_envs=1, seed=1))
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], before)
    for key, value in loaded.policy.state_dict().items():
        torch.testing.assert_close(value, params[key], rtol=0, atol=0, msg=key)
    if hasattr(loaded, "log_alpha"):
        # alpha is stored once: the algorithm's log_alpha is the policy's buffer, which the acting
        # Boltzmann policy reads, through load and further learning.
        assert loaded.log_alpha is loaded.policy.log_temperature
        assert loaded.policy.temperature == pytest.approx(float(loaded.log_alpha.detach().exp()), rel=1e-6)
    steps = loaded.num_timesteps
    loaded.learn(100, reset_num_timesteps=False)
    assert loaded.num_timesteps == steps + 100
    if hasattr(loaded, "log_alpha"):
        assert loaded.log_alpha is loaded.policy.log_temperature
    if hasattr(loaded.policy, "boltzmann"):  # SQL's acting Boltzmann policy reads the same alpha
        assert loaded.policy.boltzmann.temperature == pytest.approx(loaded.policy.temperature, rel=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_policy_only_save_load(name: str, tmp_path) -> None:
    _, policy_class, _, _ = CASES[name]
    model = trained(name)
    obs = observations(model)
    before = model.policy.predict(obs, deterministic=True)[0]
    model.policy.save(str(tmp_path / "policy.pt"))
    policy = policy_class.load(str(tmp_path / "policy.pt"))
    np.testing.assert_array_equal(policy.predict(obs, deterministic=True)[0], before)
    assert policy.temperature == pytest.approx(model.policy.temperature)


@pytest.mark.parametrize("name", list(CASES))
def test_get_set_parameters(name: str) -> None:
    model, other = trained(name, seed=0), trained(name, seed=1)
    obs = observations(model)
    before = model.predict(obs, deterministic=True)[0]
    params = model.get_parameters()
    assert "policy" in params and "policy.optimizer" in params
    other.set_parameters(params, exact_match=True)
    np.testing.assert_array_equal(other.predict(obs, deterministic=True)[0], before)


@pytest.mark.parametrize("name", ["sql", "discrete_sql"])
def test_replay_buffer_save_load(name: str, tmp_path) -> None:
    model = trained(name)
    size = model.replay_buffer.size()
    observations_before = model.replay_buffer.observations[:size].copy()
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    fresh = trained(name, seed=3)
    fresh.load_replay_buffer(tmp_path / "buffer.pkl")
    assert fresh.replay_buffer.size() == size
    np.testing.assert_array_equal(fresh.replay_buffer.observations[:size], observations_before)
    fresh.learn(50, reset_num_timesteps=False)


def test_sql_saves_its_critic_design_and_loads_files_saved_without_it(tmp_path) -> None:
    """The critics' layer normalisation is saved with every SQL model (SB3 saves policy_kwargs as
    given, so a later change of the default would rebuild a saved model's critics differently); a
    file saved before that (no ``critic_layer_norm`` key) had critics without it and loads as such."""
    import inspect

    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    user_kwargs = {"net_arch": (16, 16)}
    model = SQL("MlpPolicy", env, seed=0, policy_kwargs=user_kwargs)
    default = inspect.signature(SQLPolicy.__init__).parameters["critic_layer_norm"].default
    assert model.policy.critic_layer_norm == model.policy_kwargs["critic_layer_norm"] == default
    assert "critic_layer_norm" not in user_kwargs  # the user's dict is not changed
    old = SQL("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": (16, 16), "critic_layer_norm": False})
    obs = observations(old)
    before = old.predict(obs, deterministic=True)[0]
    del old.policy_kwargs["critic_layer_norm"]  # the policy_kwargs an earlier version saved
    old.save(tmp_path / "old.zip")
    loaded = SQL.load(tmp_path / "old.zip", env=env)
    assert loaded.policy.critic_layer_norm is False
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in loaded.policy.critics.modules())
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0], before)
