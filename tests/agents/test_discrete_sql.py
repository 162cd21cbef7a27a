"""DiscreteSQL through the stable-baselines3 workflow."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from ebrl.agents import DiscreteSQL
from ebrl.agents.discrete_sql import DiscreteSQLPolicy

FAST = {"policy_kwargs": {"net_arch": (32, 32)}, "learning_starts": 50, "batch_size": 32, "train_freq": 1}


@pytest.mark.parametrize("n_envs", [1, 4])
def test_learn(n_envs: int) -> None:
    model = DiscreteSQL("MlpPolicy", make_vec_env("CartPole-v1", n_envs=n_envs, seed=0), seed=0, **FAST)
    model.learn(240)
    assert model.num_timesteps >= 240
    model.train(1, 32)
    logged = model.logger.name_to_value
    assert {"train/q_loss", "train/q_values", "train/soft_value", "train/alpha", "train/entropy",
            "train/n_updates"} <= set(logged), sorted(logged)
    # Entropy of a 2-action softmax lies in [0, log 2].
    assert 0.0 <= logged["train/entropy"] <= np.log(2.0) + 1e-6


def test_callbacks_and_progress_bar(tmp_path) -> None:
    eval_cb = EvalCallback(
        make_vec_env("CartPole-v1", n_envs=1, seed=1),
        n_eval_episodes=2,
        eval_freq=100,
        log_path=str(tmp_path / "eval"),
    )
    ckpt_cb = CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ckpt"), name_prefix="dsql")
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, **FAST)
    model.learn(300, callback=[eval_cb, ckpt_cb], progress_bar=True)
    assert len(np.load(tmp_path / "eval" / "evaluations.npz")["results"]) == 3
    assert len(list((tmp_path / "ckpt").glob("dsql_*_steps.zip"))) == 3


def test_predict_evaluate_and_seeding() -> None:
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    runs = []
    for _ in range(2):
        model = DiscreteSQL("MlpPolicy", env, seed=7, **FAST)
        batch = np.stack([obs] * 16)
        runs.append(model.predict(batch)[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == () and env.action_space.contains(int(action))
    actions, _ = model.predict(np.stack([obs, obs]), deterministic=True)
    assert actions.shape == (2,) and actions[0] == actions[1]
    mean, std = evaluate_policy(model, make_vec_env("CartPole-v1", n_envs=2, seed=2), n_eval_episodes=2)
    assert mean > 0 and np.isfinite(std)


def test_policy_is_exact_softmax() -> None:
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha=0.5, **FAST)
    obs = torch.zeros(1, 4)
    q = model.policy.q_values(obs)[0]
    probs = torch.softmax(q / 0.5, dim=0)
    samples = model.policy._predict(obs.expand(4000, 4)).float()
    assert samples.mean().item() == pytest.approx(probs[1].item(), abs=0.04)


def test_soft_target_uses_logsumexp() -> None:
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha=2.0, **FAST)
    model.learn(100)
    model.train(1, 32)
    value = model.logger.name_to_value["train/soft_value"]
    q_target = model.policy.q_values(
        torch.as_tensor(model.replay_buffer.next_observations[:64, 0]), target=True
    )
    # alpha logsumexp(Q/alpha) >= max Q: the soft value dominates the hard one.
    assert (2.0 * torch.logsumexp(q_target / 2.0, 1) >= q_target.max(1).values).all()
    assert np.isfinite(value)


def test_munchausen_target_adds_the_clipped_scaled_log_policy() -> None:
    """The target with munchausen=beta is the plain soft target plus
    beta * clip(alpha log pi_target(a|s), l0, 0), computed here by hand from the target network."""
    alpha, beta, l0 = 0.5, 0.9, -0.2
    plain = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha=alpha, **FAST)
    plain.learn(100)
    munch = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha=alpha, munchausen=beta,
                        munchausen_clip=l0, **FAST)
    munch.policy.load_state_dict(plain.policy.state_dict())
    data = plain.replay_buffer.sample(64)
    y_plain, value, _ = plain._soft_target(data, alpha)
    y_munch, value_m, _ = munch._soft_target(data, alpha)
    q = plain.policy.q_values(data.observations, target=True)
    log_pi = torch.log_softmax(q / alpha, 1).gather(1, data.actions.long()).reshape(-1)
    bonus = beta * (alpha * log_pi).clamp(l0, 0.0)
    torch.testing.assert_close(y_munch, y_plain + bonus)
    torch.testing.assert_close(value_m, value)
    assert (bonus <= 0).all() and (bonus >= beta * l0).all() and (bonus < 0).any()


def test_weight_average_acts_and_is_the_ema_of_the_q_network(tmp_path) -> None:
    """With average_decay=d the acting Q-network is the EMA of the Q-network's weights after each
    gradient step (the first step copies them), predict follows it, and save/load keeps it."""
    d = 0.9
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, average_decay=d, **FAST)
    assert DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, **FAST).policy.q_net_average is None
    # Follow the average by hand over a few real gradient steps.
    model.learn(60)  # fills the buffer past learning_starts (and trains a few steps)
    q_params = list(model.q_net.parameters())
    expected = [a.detach().clone() for a in model.policy.q_net_average.module.parameters()]
    for _ in range(3):
        model.train(gradient_steps=1, batch_size=32)
        expected = [d * e + (1 - d) * p.detach() for e, p in zip(expected, q_params, strict=True)]
    for e, a in zip(expected, model.policy.q_net_average.module.parameters(), strict=True):
        torch.testing.assert_close(a, e)
    # The targets do not use it; the acting Q does.
    obs = torch.as_tensor(np.random.default_rng(0).normal(size=(256, 4)), dtype=torch.float32)
    with torch.no_grad():
        for p in model.q_net.parameters():
            p.add_(torch.randn_like(p))  # the last iterate now disagrees with the average
        acting = model.policy.acting_q_values(obs)
        greedy = model.predict(obs.numpy(), deterministic=True)[0]
    np.testing.assert_array_equal(greedy, acting.argmax(1).numpy())
    assert not torch.equal(acting, model.policy.q_values(obs))
    model.save(tmp_path / "avg")
    loaded = DiscreteSQL.load(tmp_path / "avg")
    assert loaded.average_decay == d
    torch.testing.assert_close(loaded.policy.acting_q_values(obs), acting)


@pytest.mark.parametrize(
    ("env_fn", "kwargs", "error", "match"),
    [
        (lambda: gym.make("Pendulum-v1"), {}, TypeError, "action_space"),
        (lambda: "CartPole-v1", {"alpha": 0.0}, ValueError, "alpha"),
        (lambda: "CartPole-v1", {"alpha": -0.1}, ValueError, "alpha"),
        (lambda: "CartPole-v1", {"reward_scale": -1.0}, ValueError, "reward_scale"),
        (lambda: "CartPole-v1", {"target_update_interval": 0}, ValueError, "target_update_interval"),
        (lambda: "CartPole-v1", {"munchausen": -0.1}, ValueError, "munchausen must be a finite number in"),
        (lambda: "CartPole-v1", {"munchausen": "0.9"}, TypeError, "munchausen must be a real number"),
        (lambda: "CartPole-v1", {"munchausen_clip": 0.0}, ValueError, "munchausen_clip"),
        (lambda: "CartPole-v1", {"policy_kwargs": {"net_arch": "64"}}, TypeError, "net_arch"),
        (lambda: "CartPole-v1", {"policy_kwargs": {"activation": "swish"}}, ValueError, "activation"),
        (lambda: "CartPole-v1", {"policy_kwargs": {"temperature": 1.0}}, ValueError, "alpha"),
        (lambda: "CartPole-v1", {"average_decay": 1.0}, ValueError,
         r"average_decay must be a finite number in \[0"),
        (lambda: "CartPole-v1", {"average_decay": -0.1}, ValueError, "average_decay"),
        (lambda: "CartPole-v1", {"average_decay": float("nan")}, ValueError, "average_decay"),
        (lambda: "CartPole-v1", {"average_decay": "0.99"}, TypeError, "average_decay must be a real number"),
        (lambda: "CartPole-v1", {"policy_kwargs": {"average_decay": 0.9}}, ValueError,
         "pass average_decay instead"),
        (lambda: "CartPole-v1", {"alpha": "hot"}, ValueError, "alpha must be"),
        (lambda: "CartPole-v1", {"alpha": "auto_-1"}, ValueError, "alpha must be"),
        (lambda: "CartPole-v1", {"alpha": "auto", "target_entropy": 0.7}, ValueError,
         r"target_entropy for a Discrete\(2\) action space must lie in \[0, log 2"),
        (lambda: "CartPole-v1", {"alpha": "auto", "target_entropy": -0.1}, ValueError, "target_entropy"),
        (lambda: "CartPole-v1", {"target_entropy": "auto_1.5"}, ValueError, r"needs c in \[0, 1\)"),
        (lambda: "CartPole-v1", {"target_entropy": "auto_x"}, ValueError, "target_entropy"),
        (lambda: "CartPole-v1", {"target_entropy": "low"}, ValueError, "target_entropy"),
    ],
)
def test_bad_input_rejected_at_construction(env_fn, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        DiscreteSQL("MlpPolicy", env_fn(), **kwargs)


def test_dict_observation_rejected() -> None:
    class DictObs(gym.ObservationWrapper):
        def __init__(self, env: gym.Env) -> None:
            super().__init__(env)
            self.observation_space = gym.spaces.Dict({"x": env.observation_space})

        def observation(self, observation):
            return {"x": observation}

    with pytest.raises(TypeError, match="observation_space"):
        DiscreteSQL("MlpPolicy", DictObs(gym.make("CartPole-v1")))
    env = gym.make("CartPole-v1")
    with pytest.raises(TypeError, match="action_space"):
        DiscreteSQLPolicy(env.observation_space, gym.spaces.Box(-1, 1, (1,)), lambda _: 1e-3)


@pytest.mark.parametrize(("alpha", "direction"), [("auto_10", -1), ("auto_0.0001", 1)])
def test_auto_alpha_moves_toward_the_entropy_target(alpha: str, direction: int) -> None:
    """alpha="auto_<init>": log alpha follows L = log alpha (H(pi) - target). From alpha = 10 the
    policy is near uniform (H ~ log 2 = 0.69 > the target 0.069), so alpha must fall; from 1e-4 it
    is greedy (H ~ 0 < 0.069), so alpha must rise. The policy acts with the learned alpha."""
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha=alpha, learning_rate=1e-2, **FAST)
    start = model.policy.temperature
    assert model.target_entropy == pytest.approx(0.1 * np.log(2))
    model.learn(300)
    end = model.policy.temperature
    assert direction * (np.log(end) - np.log(start)) > 0.5  # moved by more than a factor 1.6
    assert model.logger.name_to_value["train/alpha"] == pytest.approx(end, rel=0.2)
    assert model.log_alpha is model.policy.log_temperature


def test_auto_alpha_entropy_is_the_acting_policys() -> None:
    """The alpha loss's gradient is H(softmax(Q(s, .)/alpha)) - target at the batch states (Q before
    the step): after one gradient step, log alpha moves with the sign of target - H, with H computed
    by hand over the states in the buffer (the batch is drawn from them; the test asks for a gap of
    0.05 nats so that the batch's mean entropy has the same sign)."""
    model = DiscreteSQL("MlpPolicy", "CartPole-v1", seed=0, alpha="auto_0.5", target_entropy=0.3,
                        gradient_steps=1, **FAST)
    model.learn(60)  # fill the buffer past learning_starts
    obs = torch.as_tensor(model.replay_buffer.observations[:60, 0])
    with torch.no_grad():
        log_pi = torch.log_softmax(model.policy.q_values(obs) / model.policy.temperature, dim=1)
    entropy = float(-(log_pi.exp() * log_pi).sum(1).mean())
    assert abs(entropy - 0.3) > 0.05  # the test needs a clear sign
    before = float(model.log_alpha.detach())
    model.train(gradient_steps=1, batch_size=32)
    assert np.sign(float(model.log_alpha.detach()) - before) == np.sign(0.3 - entropy)
