"""ebrl/MultiGoal-v0: API checks, seeding, the paper's dynamics/reward/termination, rendering, errors."""

import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import ebrl.envs as envs
from ebrl.envs.multigoal import MultiGoalEnv

ENV_ID = "ebrl/MultiGoal-v0"


def test_registered_with_paper_horizon_and_makes_without_warnings(no_warnings):
    env = no_warnings(gymnasium.make, ENV_ID)
    assert env.spec.max_episode_steps == 30
    assert isinstance(env.unwrapped, MultiGoalEnv)
    assert env.observation_space.dtype == np.float32
    assert np.all(np.isfinite(env.observation_space.low)) and np.all(np.isfinite(env.observation_space.high))


def test_envs_imports_only_gymnasium_and_numpy():
    # A fresh interpreter: this test process has already imported torch and SB3 elsewhere. ebrl.envs
    # lives under the ebrl name, whose __init__ loads its torch-based names lazily.
    forbidden = ["torch", "stable_baselines3", "wandb", "matplotlib", "pygame"]
    code = ("import sys, ebrl.envs;"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({forbidden!r})));"
            "print(sorted(m for m in sys.modules if m.startswith('ebrl') and not m.startswith('ebrl.envs')))")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).parents[2],
    )
    assert out.stdout.split("\n")[:2] == ["[]", "['ebrl']"], out.stdout


def test_reimport_does_not_reregister(no_warnings):
    no_warnings(importlib.reload, envs)
    assert ENV_ID in gymnasium.registry


def test_gymnasium_and_sb3_env_checkers_pass_without_warnings(no_warnings):
    env = gymnasium.make(ENV_ID)
    no_warnings(gym_check_env, env.unwrapped)
    no_warnings(sb3_check_env, env.unwrapped, warn=True)


def test_seeded_resets_and_episodes_reproduce():
    def rollout(seed):
        env = gymnasium.make(ENV_ID)
        env.action_space.seed(seed)
        obs, _ = env.reset(seed=seed)
        trace = [obs]
        for _ in range(5):
            obs, reward, *_ = env.step(env.action_space.sample())
            trace += [obs, np.array([reward])]
        return np.concatenate(trace)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


def test_start_is_gaussian_around_origin():
    env = MultiGoalEnv(init_sigma=0.1)
    starts = np.stack([env.reset(seed=s)[0] for s in range(400)])
    assert np.all(np.abs(starts.mean(0)) < 0.03)
    assert np.all(np.abs(starts.std(0) - 0.1) < 0.02)
    assert np.array_equal(MultiGoalEnv(init_sigma=0.0).reset(seed=0)[0], np.zeros(2, np.float32))


def test_reward_formula_on_a_hand_computed_step():
    env = MultiGoalEnv(init_sigma=0.0)
    env.reset(seed=0)
    obs, reward, terminated, truncated, info = env.step(np.array([1.0, 0.5], np.float32))
    np.testing.assert_allclose(obs, [1.0, 0.5])
    # action cost 30·(1 + 0.25) = 37.5; nearest goal (5, 0): 4² + 0.5² = 16.25
    assert reward == pytest.approx(-(37.5 + 16.25))
    assert (info["action_cost"], info["goal_cost"]) == (pytest.approx(37.5), pytest.approx(16.25))
    assert not terminated and not truncated and info["goal_index"] == -1 and not info["is_success"]


def test_out_of_range_actions_are_clipped_and_charged_clipped():
    env = MultiGoalEnv(init_sigma=0.0)
    env.reset(seed=0)
    obs, _, _, _, info = env.step(np.array([3.0, -0.25]))
    np.testing.assert_allclose(obs, [1.0, -0.25])
    assert info["action_cost"] == pytest.approx(30 * (1 + 0.0625))


@pytest.mark.parametrize("goal_index, direction", [(0, (1, 0)), (1, (-1, 0)), (2, (0, 1)), (3, (0, -1))])
def test_walking_to_each_goal_terminates_with_bonus_and_goal_index(goal_index, direction):
    env = MultiGoalEnv(init_sigma=0.0)
    env.reset(seed=0)
    action = np.array(direction, np.float32)
    for _ in range(4):
        # After 4 unit steps the distance is exactly 1: termination is strict, as in the paper.
        _, reward, terminated, _, info = env.step(action)
        assert not terminated and info["goal_index"] == -1
    obs, reward, terminated, _, info = env.step(action)
    np.testing.assert_allclose(obs, 5 * np.array(direction))
    assert terminated and info["goal_index"] == goal_index and info["is_success"]
    assert reward == pytest.approx(-30.0 + 10.0)  # action cost 30, distance 0, bonus 10


def test_position_is_clipped_to_the_box_and_time_limit_truncates():
    env = gymnasium.make(ENV_ID, init_sigma=0.0)
    env.reset(seed=0)
    for t in range(30):
        obs, _, terminated, truncated, info = env.step(np.ones(2, np.float32))
        assert obs in env.observation_space and not terminated
        assert truncated == (t == 29) and info["goal_index"] == -1
    np.testing.assert_array_equal(obs, [7.0, 7.0])


def test_render_draws_frames_that_follow_the_agent():
    env = gymnasium.make(ENV_ID, render_mode="rgb_array", init_sigma=0.0)
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (280, 280, 3) and first.dtype == np.uint8
    assert (first == [30, 120, 30]).all(-1).sum() >= 4 * 9  # four goal centres drawn
    env.step(np.array([1.0, 1.0], np.float32))
    second = env.render()
    assert second.shape == first.shape and not np.array_equal(first, second)
    # The agent marker (red) sits at the new position, (1, 1) -> pixel (row 120, col 160).
    assert tuple(second[120, 160]) == (210, 40, 40)


def test_render_without_render_mode_warns_and_returns_none():
    env = MultiGoalEnv()
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode"):
        assert env.render() is None


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"goal_radius": -1.0}, "goal_radius"),
        ({"goal_radius": 0.0}, "goal_radius"),
        ({"render_mode": "ansi"}, "render_mode"),
        ({"init_sigma": -0.1}, "init_sigma"),
        ({"action_cost_coeff": float("nan")}, "action_cost_coeff"),
        ({"bound": 0.0}, "bound"),
        ({"goals": [1.0, 2.0]}, "goals"),
        ({"goals": [(9.0, 0.0)]}, "goals"),
    ],
)
def test_bad_constructor_input_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MultiGoalEnv(**kwargs)
    with warnings.catch_warnings():
        # gymnasium.make itself warns about an undeclared render mode before the env refuses it.
        warnings.filterwarnings("ignore", message=".*not in the possible render_modes")
        with pytest.raises(ValueError, match=name):
            gymnasium.make(ENV_ID, **kwargs)


def test_human_render_mode_is_refused():
    # Through gymnasium.make, "human" is served by gymnasium's HumanRendering wrapper over
    # "rgb_array" (pygame); the environment itself accepts only None and "rgb_array".
    with pytest.raises(ValueError, match="render_mode"):
        MultiGoalEnv(render_mode="human")


def test_bad_actions_raise_before_the_state_changes():
    env = MultiGoalEnv(init_sigma=0.0)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))
    obs, _ = env.reset(seed=0)
    for bad in (np.array([np.nan, 0.0]), np.zeros(3)):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    np.testing.assert_array_equal(env.step(np.zeros(2))[0], obs)


def test_custom_goals_are_indexed_in_the_given_order():
    env = MultiGoalEnv(goals=[(0.0, 2.0), (2.0, 0.0)], init_sigma=0.0)
    env.reset(seed=0)
    env.step(np.array([1.0, 0.0]))
    *_, terminated, _, info = env.step(np.array([1.0, 0.0]))
    assert terminated and info["goal_index"] == 1
