"""SQL through the stable-baselines3 workflow (in the spirit of sb3-contrib's test_run)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.callbacks import CheckpointCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from ebrl import BoltzmannPolicy, StateActionEnergy
from ebrl.agents import SQL
from ebrl.agents.sql import SQLPolicy
from ebrl.energies import PessimisticEnergy
from ebrl.estimators import mixture_soft_value, soft_value, uniform_particles, uniform_soft_value

# Tiny settings: every test runs in about a second on one CPU thread.
TINY = {"net_arch": (32, 32), "search_steps": 3, "n_chains": 4}
FAST = {"learning_starts": 50, "batch_size": 32, "n_particles": 4}


def short_pendulum(n_envs: int = 1, seed: int = 0, steps: int = 50):
    """Pendulum-v1 with short episodes, for evaluations that should not cost 200 steps each."""
    return make_vec_env(lambda: gym.make("Pendulum-v1", max_episode_steps=steps), n_envs=n_envs, seed=seed)


def tiny_sql(env, policy_kwargs=None, **kwargs) -> SQL:
    return SQL("MlpPolicy", env, policy_kwargs={**TINY, **(policy_kwargs or {})}, **{**FAST, **kwargs})


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "MountainCarContinuous-v0"])
@pytest.mark.parametrize("n_envs", [1, 4])
def test_learn(env_id: str, n_envs: int) -> None:
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    model = tiny_sql(env, seed=0)
    model.learn(200)
    assert model.num_timesteps >= 200
    assert model.replay_buffer.size() * n_envs >= 200


@pytest.mark.parametrize(
    ("policy_kwargs", "estimator"),
    [
        ({"sampler": "mala"}, "uniform"),
        ({"sampler": "dfo", "n_chains": 8}, "mixture"),
        ({"sampler": "langevin", "warm_start": True, "explore_chains": 2}, "stratified"),
    ],
)
def test_samplers_estimators_and_warm_start(policy_kwargs: dict, estimator: str) -> None:
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    # Pendulum episodes are 200 steps: 420 steps with 2 envs cross episode ends (chain resets).
    model = tiny_sql(env, policy_kwargs, seed=0, value_estimator=estimator)
    model.learn(420)
    result = model.policy.boltzmann.last_result
    assert result is not None and result.samples.shape[0] == 2
    assert model.policy.boltzmann.warm_start == policy_kwargs.get("warm_start", False)
    assert np.isfinite(model.logger.name_to_value["train/soft_value"])


@pytest.mark.parametrize(("target_entropy", "expected"), [("auto", -2.0), ("auto_0.5", -1.0), (-0.25, -0.25)])
def test_target_entropy_resolves_per_action_dimension(target_entropy: str | float, expected: float) -> None:
    import ebrl.envs  # noqa: F401  (registers ebrl/MultiGoal-v0, a 2-D action task)

    model = SQL("MlpPolicy", "ebrl/MultiGoal-v0", target_entropy=target_entropy, seed=0)
    assert model.target_entropy == pytest.approx(expected)


def test_auto_alpha_moves_and_is_logged() -> None:
    model = tiny_sql("Pendulum-v1", seed=0, alpha="auto_0.5", target_entropy=-1.0)
    model.learn(200)
    alpha = float(model.log_alpha.detach().exp())
    assert alpha != pytest.approx(0.5)
    assert model.policy.temperature == pytest.approx(alpha, rel=1e-5)
    assert model.policy.boltzmann.temperature == pytest.approx(alpha, rel=1e-5)
    model.train(1, 32)
    logged = model.logger.name_to_value
    expected = {"train/q_loss", "train/q_values", "train/soft_value", "train/alpha", "train/entropy",
                "train/n_updates", "train/alpha_loss", "sampler/energy_drop", "sampler/grad_norm"}
    assert expected <= set(logged), sorted(expected - set(logged))
    assert np.isfinite(logged["train/q_loss"])


def test_forward_proposal_loss_trains_the_proposal_only_through_its_own_loss() -> None:
    """proposal_loss='forward' fits q_phi by the self-normalised forward KL: the proposal moves,
    its loss and entropy are logged finite, and the critics' update is the same code path."""
    model = tiny_sql("Pendulum-v1", seed=0, proposal_loss="forward")
    before = [p.detach().clone() for p in model.proposal.parameters()]
    model.learn(120)
    model.train(2, 32)
    logged = model.logger.name_to_value
    assert np.isfinite(logged["train/proposal_loss"]) and np.isfinite(logged["train/proposal_entropy"])
    assert any(not torch.equal(b, p) for b, p in zip(before, model.proposal.parameters(), strict=True))


def test_mala_logs_acceptance() -> None:
    model = tiny_sql("Pendulum-v1", {"sampler": "mala", "search_steps": 4}, seed=0)
    model.learn(100)
    model.train(1, 32)
    assert 0.0 <= model.logger.name_to_value["sampler/acceptance"] <= 1.0


def test_callbacks_and_progress_bar(tmp_path) -> None:
    eval_env = short_pendulum(seed=1)
    eval_cb = EvalCallback(eval_env, n_eval_episodes=1, eval_freq=100, log_path=str(tmp_path / "eval"))
    ckpt_cb = CheckpointCallback(save_freq=100, save_path=str(tmp_path / "ckpt"), name_prefix="sql")
    model = tiny_sql(make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0)
    model.learn(200, callback=[eval_cb, ckpt_cb], progress_bar=True)
    assert (tmp_path / "eval" / "evaluations.npz").exists()
    assert len(np.load(tmp_path / "eval" / "evaluations.npz")["results"]) == 2
    checkpoints = sorted((tmp_path / "ckpt").glob("sql_*_steps.zip"))
    assert len(checkpoints) == 2
    SQL.load(checkpoints[-1])


def test_predict_shapes_and_bounds() -> None:
    env = gym.make("MountainCarContinuous-v0")
    model = tiny_sql(env, seed=0)
    obs, _ = env.reset(seed=0)
    for deterministic in (True, False):
        action, state = model.predict(obs, deterministic=deterministic)
        assert action.shape == (1,) and state is None
        assert env.action_space.contains(action)
    batch = np.stack([obs, obs, obs])
    actions, _ = model.predict(batch, deterministic=True)
    assert actions.shape == (3, 1)
    np.testing.assert_allclose(actions[0], actions[1])  # same state, noise-free search


def test_actions_rescaled_to_env_box() -> None:
    # Pendulum's box is [-2, 2]: predict returns env-scale actions, the buffer stores [-1, 1].
    model = tiny_sql("Pendulum-v1", seed=0, learning_starts=0)
    model.learn(100)
    stored = model.replay_buffer.actions[: model.replay_buffer.size()]
    assert np.all(np.abs(stored) <= 1.0)
    obs = model.env.reset()
    actions = np.concatenate([model.predict(obs)[0] for _ in range(50)])
    assert np.all(np.abs(actions) <= 2.0) and np.abs(actions).max() > 1.0


def test_evaluate_policy() -> None:
    model = tiny_sql("Pendulum-v1", seed=0)
    mean, std = evaluate_policy(model, short_pendulum(n_envs=2, seed=3), n_eval_episodes=2)
    assert np.isfinite(mean) and np.isfinite(std)


def test_same_seed_same_actions() -> None:
    runs = []
    for _ in range(2):
        model = tiny_sql(make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=5)
        model.learn(100)
        obs = np.zeros((3, 3), dtype=np.float32)
        runs.append((model.predict(obs)[0], model.predict(obs, deterministic=True)[0]))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


def test_policy_energy_is_core_state_action_energy() -> None:
    first = tiny_sql("Pendulum-v1", {"policy_energy": "first"}, seed=0).policy
    assert type(first.energy) is StateActionEnergy and first.energy is first.critics[0]
    model = tiny_sql("Pendulum-v1", seed=0)
    energy = model.policy.energy
    # The default: E = -min(Q_1, Q_2), one core energy over the twin critics.
    assert type(energy) is PessimisticEnergy
    states, actions = torch.randn(5, 3), torch.rand(5, 4, 1) * 2 - 1
    twin = torch.stack([c(states, actions) for c in model.policy.critics])
    torch.testing.assert_close(energy(states, actions), twin.max(0).values)
    assert "critics.0.trunk.0.weight" in model.policy.state_dict()
    assert not any(k.startswith("_energy") for k in model.policy.state_dict())
    # Any core consumer takes it: a fresh Boltzmann policy samples from it.
    states = torch.zeros(2, 3)
    assert BoltzmannPolicy(energy, n_chains=2).sample(states, n=2).shape == (2, 2, 1)
    assert energy(states, torch.zeros(2, 1)).shape == (2,)
    heads = pytest.importorskip("ebrl.heads")
    scorer = heads.AnomalyScorer(energy, temperature=model.policy.temperature, n_partition=16)
    assert scorer.score_states(states).shape == (2,)


def test_soft_value_matches_closed_form() -> None:
    # Q(s, a) = 0 on [-1, 1]: Z = 2, V = alpha log 2, H = log 2 (uniform policy).
    q = torch.zeros(4, 8)
    value, entropy = soft_value(q, 0.5, -np.log(2.0))
    torch.testing.assert_close(value, torch.full((4,), 0.5 * np.log(2.0)))
    torch.testing.assert_close(entropy, torch.full((4,), float(np.log(2.0))))
    # Stratified particles: marginally uniform, one per stratum per coordinate.
    p = uniform_particles(3, 8, 2, stratified=True, generator=torch.Generator().manual_seed(0))
    assert p.shape == (3, 8, 2) and p.abs().max() <= 1.0
    strata = ((p + 1) / 2 * 8).floor().long().sort(dim=1).values
    assert torch.equal(strata, torch.arange(8).expand(3, 8)[..., None].expand(3, 8, 2))


@pytest.mark.parametrize("estimator", ["uniform", "stratified", "mixture"])
def test_soft_value_estimators_unbiased_for_z(estimator: str) -> None:
    # Peaked Q on [-1, 1]^2 with a known partition function; E[Z_hat] = Z for every estimator.
    torch.manual_seed(0)
    alpha, centre = 0.2, torch.tensor([0.3, -0.5])

    def q_fn(a: torch.Tensor) -> torch.Tensor:
        return -((a - centre) ** 2).sum(-1) * 2.0

    grid = torch.linspace(-1, 1, 801)
    aa = torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1)
    z_true = torch.trapezoid(torch.trapezoid(torch.exp(q_fn(aa) / alpha), grid), grid)
    batch, m = 20_000, 8
    if estimator == "mixture":
        value, entropy = mixture_soft_value(q_fn, batch, m, 2, alpha)
    else:
        value, entropy = uniform_soft_value(q_fn, batch, m, 2, alpha, stratified=estimator == "stratified")
    z_hat = torch.exp(value / alpha)
    assert z_hat.mean().item() == pytest.approx(z_true.item(), rel=0.05)
    assert torch.isfinite(entropy).all()
    if estimator == "mixture":
        # The resampled stage lowers the spread of log Z over the paper's estimator.
        plain, _ = uniform_soft_value(q_fn, batch, m, 2, alpha, stratified=False)
        assert (value / alpha).std() < 0.8 * (plain / alpha).std()


def test_loss_only_touches_critics() -> None:
    model = tiny_sql("Pendulum-v1", seed=0)
    model.learn(100)
    targets = [p.detach().clone() for p in model.policy.critic_targets.parameters()]
    critics = [p.detach().clone() for p in model.policy.critics.parameters()]
    model.tau = 0.0
    model.train(2, 32)
    assert all(
        torch.equal(a, b) for a, b in zip(targets, model.policy.critic_targets.parameters(), strict=True)
    )
    assert any(not torch.equal(a, b) for a, b in zip(critics, model.policy.critics.parameters(), strict=True))


class _Unbounded(gym.ActionWrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Box(-np.inf, np.inf, shape=(1,), dtype=np.float32)

    def action(self, action):
        return np.clip(action, -2.0, 2.0)


class _DictObs(gym.ObservationWrapper):
    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Dict({"x": env.observation_space})

    def observation(self, observation):
        return {"x": observation}


@pytest.mark.parametrize(
    ("env_fn", "kwargs", "error", "match"),
    [
        (lambda: gym.make("CartPole-v1"), {}, TypeError, "action_space"),
        (lambda: _Unbounded(gym.make("Pendulum-v1")), {}, ValueError, "action_space must be a bounded Box"),
        (lambda: _DictObs(gym.make("Pendulum-v1")), {}, TypeError, "observation_space"),
        (lambda: "Pendulum-v1", {"alpha": 0.0}, ValueError, "alpha"),
        (lambda: "Pendulum-v1", {"alpha": -1.0}, ValueError, "alpha"),
        (lambda: "Pendulum-v1", {"alpha": "warm"}, ValueError, "alpha"),
        (lambda: "Pendulum-v1", {"n_particles": 0}, ValueError, "n_particles"),
        (lambda: "Pendulum-v1", {"reward_scale": 0}, ValueError, "reward_scale"),
        (lambda: "Pendulum-v1", {"value_estimator": "svgd"}, ValueError, "value_estimator"),
        (lambda: "Pendulum-v1", {"target_entropy": "high"}, ValueError, "target_entropy"),
        (lambda: "Pendulum-v1", {"target_entropy": "auto_half"}, ValueError, "target_entropy"),
        (lambda: "Pendulum-v1", {"target_entropy": "auto_inf"}, ValueError, "target_entropy"),
        (lambda: "Pendulum-v1", {"target_entropy": float("nan")}, ValueError, "target_entropy"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"n_chains": 0}}, ValueError, "n_chains"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"explore_chains": 0}}, ValueError, "explore_chains"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"search_steps": 0}}, ValueError, "search_steps"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"sampler": "hmc"}}, ValueError, "sampler"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"step_size": -0.1}}, ValueError, "step_size"),
        (
            lambda: "Pendulum-v1",
            {"policy_kwargs": {"sampler_kwargs": {"bogus": 1}}},
            TypeError,
            "sampler_kwargs",
        ),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"temperature": 2.0}}, ValueError, "alpha"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"net_arch": 64}}, TypeError, "net_arch"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"n_chain": 4}}, TypeError, "n_chain"),
        (lambda: "Pendulum-v1", {"proposal_update_interval": 0}, ValueError, "proposal_update_interval"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"proposal": False}}, ValueError, "value_estimator"),
        (lambda: "Pendulum-v1", {"proposal_loss": "kl"}, ValueError, "proposal_loss"),
        (
            lambda: "Pendulum-v1",
            {"proposal_loss": "forward", "value_estimator": "uniform", "policy_kwargs": {"proposal": False}},
            ValueError,
            "proposal_loss",
        ),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"n_candidates": 0}}, ValueError, "n_candidates"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"defensive": 0.0}}, ValueError, "defensive"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"defensive": 2.0}}, ValueError, "defensive"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"policy_energy": "max"}}, ValueError, "policy_energy"),
        (lambda: "Pendulum-v1", {"policy_kwargs": {"deterministic_act": "median"}}, ValueError,
         "deterministic_act"),
        (
            lambda: "Pendulum-v1",
            {"value_estimator": "uniform",
             "policy_kwargs": {"proposal": False, "deterministic_act": "proposal"}},
            ValueError,
            "deterministic_act='proposal' needs a learned proposal",
        ),
    ],
)
def test_bad_input_rejected_at_construction(env_fn, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        SQL("MlpPolicy", env_fn(), **kwargs)


def test_policy_class_validates_spaces() -> None:
    env = gym.make("CartPole-v1")
    with pytest.raises(TypeError, match="action_space"):
        SQLPolicy(env.observation_space, env.action_space, lambda _: 1e-3)


def test_defaults_are_the_proposal_accelerated_boltzmann_policy(tmp_path) -> None:
    """What a user gets from SQL("MlpPolicy", env): a learned proposal, MALA acting on Q_1,
    a learned alpha, ReLU critics; after learning the proposal and alpha have moved, and a saved
    model predicts the same noise-free action."""
    model = SQL("MlpPolicy", "Pendulum-v1", seed=0, learning_starts=50, batch_size=32,
                policy_kwargs={"net_arch": (32, 32)})
    policy = model.policy
    assert model.value_estimator == "proposal" and model.alpha == "auto"
    assert policy.proposal is not None and policy.boltzmann.proposal is policy.proposal
    assert type(policy.boltzmann.sampler).__name__ == "MALA" and policy.activation == "relu"
    before = [p.detach().clone() for p in policy.proposal.parameters()]
    model.learn(150)
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.proposal.parameters(), strict=True))
    logged = model.logger.name_to_value
    assert logged["train/alpha"] < 1.0 and np.isfinite(logged["train/proposal_loss"])
    assert 0.0 <= logged["sampler/acceptance"] <= 1.0
    obs = model.env.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert np.all(np.abs(action) <= 2.0)
    model.save(tmp_path / "sql")
    loaded = SQL.load(tmp_path / "sql", device="cpu")
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, atol=1e-5)
    for a, b in zip(policy.proposal.parameters(), loaded.policy.proposal.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_training_mode_reaches_every_submodule() -> None:
    model = tiny_sql("Pendulum-v1")
    model.policy.set_training_mode(True)
    assert all(m.training for m in model.policy.modules())
    model.policy.set_training_mode(False)
    assert not any(m.training for m in model.policy.modules())


def test_policy_n_steps_is_a_deprecated_alias_of_search_steps():
    # One name, one meaning: SQL's n_steps is the n-step return; the policy's MCMC step count is
    # search_steps. Older configs and saved models that say policy_kwargs n_steps still load.
    kwargs = {k: v for k, v in TINY.items() if k != "search_steps"}
    with pytest.warns(DeprecationWarning, match="n_steps is now called search_steps"):
        model = SQL("MlpPolicy", "Pendulum-v1", policy_kwargs={**kwargs, "n_steps": 5}, **FAST)
    assert model.policy.search_steps == 5 and model.policy.boltzmann.sampler.n_steps == 5
    assert model.n_steps == 1  # the n-step return is untouched


@pytest.mark.parametrize("act", ["proposal", "mean"])
def test_deterministic_act_changes_evaluation_only(tmp_path, act: str) -> None:
    """deterministic_act="proposal" | "mean": predict(deterministic=True) is the proposal's mode or
    the Boltzmann policy's mean action (fixed draws) rescaled to the box; the behaviour act and every
    update are the default's (same seed, same parameters after learning with deterministic
    predictions in between), and save/load keeps the choice."""
    from ebrl.agents.sql.policies import MEAN_DRAWS
    from ebrl.samplers.base import FIXED_INIT_SEED

    models = {}
    for name in ("search", act):
        env = make_vec_env("Pendulum-v1", n_envs=1, seed=0)
        model = tiny_sql(env, policy_kwargs={"deterministic_act": name}, seed=0)
        # An evaluation every 50 steps, as the benchmarks do during training.
        model.learn(200, callback=EvalCallback(short_pendulum(seed=1), eval_freq=50, n_eval_episodes=1))
        models[name] = model
    searched, other = (models[name].policy.parameters() for name in ("search", act))
    for a, b in zip(searched, other, strict=True):
        assert torch.equal(a, b)
    model = models[act]
    policy = model.policy
    obs = short_pendulum(n_envs=3, seed=2).reset()
    states = policy.obs_to_tensor(obs)[0]
    with torch.no_grad():
        if act == "proposal":
            expected = policy.proposal.mode(states).numpy()
        else:
            fixed = torch.Generator().manual_seed(FIXED_INIT_SEED)
            expected = policy.boltzmann.mean_action(states, n=MEAN_DRAWS, generator=fixed).numpy()
    action, _ = model.predict(obs, deterministic=True)
    # Pendulum's box is [-2, 2]; rescaling goes through low + (a + 1)(high - low) / 2 in float32,
    # so the error is a few ulps of the box's scale (2), not of the action.
    np.testing.assert_allclose(action, 2.0 * expected, rtol=1e-6, atol=1e-6)
    assert not np.allclose(action, models["search"].predict(obs, deterministic=True)[0])
    model.save(tmp_path / "sql")
    loaded = SQL.load(tmp_path / "sql", device="cpu")
    assert loaded.policy.deterministic_act == act
    np.testing.assert_allclose(loaded.predict(obs, deterministic=True)[0], action, rtol=1e-6)
