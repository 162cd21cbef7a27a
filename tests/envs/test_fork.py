"""ebrl/Fork-v0: API checks, seeding, dynamics/reward/termination, the side reported, rendering, errors."""


import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import ebrl.envs  # noqa: F401  (registers the ids)
from ebrl.envs.fork import LEFT, RIGHT, ForkEnv

ENV_ID = "ebrl/Fork-v0"


def run(env, actions):
    """Step through ``actions`` until termination; return the visited observations, rewards, last info."""
    observations, rewards = [], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(np.array([a], np.float32))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            return np.stack(observations), np.array(rewards), info, terminated
    return np.stack(observations), np.array(rewards), info, False


def test_registered_and_makes_without_warnings(no_warnings):
    env = no_warnings(gymnasium.make, ENV_ID)
    assert env.spec.max_episode_steps == 30
    assert isinstance(env.unwrapped, ForkEnv)
    assert env.action_space.shape == (1,) and env.observation_space.dtype == np.float32


@pytest.mark.parametrize("kwargs", [{}, {"init_sigma": 0.3}])
def test_gymnasium_and_sb3_env_checkers_pass_without_warnings(kwargs, no_warnings):
    env = gymnasium.make(ENV_ID, **kwargs)
    no_warnings(gym_check_env, env.unwrapped)
    no_warnings(sb3_check_env, env.unwrapped, warn=True)


def test_seeded_resets_reproduce_and_default_start_is_the_fork_point():
    env = ForkEnv(init_sigma=0.3)
    first, _ = env.reset(seed=5)
    again, _ = env.reset(seed=5)
    other, _ = env.reset(seed=6)
    np.testing.assert_array_equal(first, again)
    assert first[0] == 0.0 and first[1] != other[1]
    # Default: exactly on the centre line, so the side must come from the policy's randomness.
    np.testing.assert_array_equal(ForkEnv().reset(seed=5)[0], [0.0, 0.0])


def test_driving_straight_crashes_into_the_rock():
    env = ForkEnv()
    env.reset(seed=0)
    _, rewards, info, terminated = run(env, [0.0] * 30)
    # The rock spans x in [1.5, 3.5]; the 4th step (x 1.5 -> 2.0 on y = 0) enters it.
    assert terminated and len(rewards) == 4 and info["crashed"]
    assert info["goal_index"] == -1 and not info["is_success"]
    assert rewards[-1] == pytest.approx(-(1.5**2) - 10.0)  # lane cost at y = 0, crash penalty
    np.testing.assert_allclose(rewards[:-1], -(1.5**2))


@pytest.mark.parametrize("sign, side", [(+1, LEFT), (-1, RIGHT)])
def test_either_side_reaches_the_finish_with_its_goal_index(sign, side):
    env = gymnasium.make(ENV_ID)
    env.reset(seed=0)
    observations, rewards, info, terminated = run(env, [sign * 0.75] * 4 + [0.0] * 30)
    assert terminated and len(rewards) == 12 and not info["crashed"]
    assert info["goal_index"] == side and info["is_success"]
    np.testing.assert_allclose(observations[-1], [6.0, sign * 1.5])
    # Hand-computed: 4 steps at action cost 4·0.75² = 2.25; lane costs 1.125², 0.75², 0.375², 0; +10.
    lane = 1.125**2 + 0.75**2 + 0.375**2
    assert rewards.sum() == pytest.approx(-(4 * 2.25 + lane) + 10.0)


def test_goal_index_is_the_side_the_rock_was_passed_on():
    env = ForkEnv()
    env.reset(seed=0)
    # Pass on the left, then drift across the centre line before the finish.
    observations, _, info, terminated = run(env, [0.75] * 4 + [0.0] * 3 + [-1.0] * 5)
    assert terminated and observations[-1][1] < 0
    assert info["goal_index"] == LEFT


def test_lateral_position_is_clipped_to_the_road():
    env = ForkEnv()
    env.reset(seed=0)
    observations, _, info, _ = run(env, [5.0] * 12)  # out of range: clipped to 1
    assert np.all(observations[:, 1] <= 3.0) and observations[-1][1] == 3.0
    assert all(obs in env.observation_space for obs in observations)
    assert info["action_cost"] == pytest.approx(4.0) and info["goal_index"] == LEFT


def test_a_fast_step_cannot_tunnel_through_the_rock():
    env = ForkEnv(forward_speed=5.0)  # one step from x = 0 to x = 5 jumps over the whole rock
    env.reset(seed=0)
    _, _, info, terminated = run(env, [0.0])
    assert terminated and info["crashed"]


def test_gaussian_policies_either_crash_or_collapse_to_one_side():
    # The failure the docstring describes, with fixed Gaussians: centred between the lanes the
    # policy crashes often; centred on one lane every success takes the same side.
    rng = np.random.default_rng(0)
    env = ForkEnv()

    def outcomes(mean, std, episodes=100):
        out = []
        for seed in range(episodes):
            env.reset(seed=seed)
            _, _, info, _ = run(env, np.clip(rng.normal(mean, std, 12), -1, 1))
            out.append("crash" if info["crashed"] else info["goal_index"])
        return out

    between = outcomes(0.0, 0.5)
    assert between.count("crash") > 30
    one_lane = outcomes(0.75, 0.2)
    assert set(one_lane) == {LEFT}


def test_render_draws_frames_that_follow_the_agent():
    env = gymnasium.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (240, 280, 3) and first.dtype == np.uint8
    assert (first == [110, 100, 90]).all(-1).sum() > 3000  # the rock: π·40² ≈ 5000 pixels
    env.step(np.array([1.0], np.float32))
    second = env.render()
    assert not np.array_equal(first, second)
    # The agent is now at (0.5, 0.5): pixel column (0.5 + 0.5)·40 = 40, row (3 - 0.5)·40 = 100.
    assert tuple(second[100, 40]) == (210, 40, 40)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"obstacle_radius": -1.0}, "obstacle_radius"),
        ({"lane_offset": 0.5}, "lane_offset"),
        ({"lane_offset": 4.0}, "lane_offset"),
        ({"obstacle_x": 7.0}, "obstacle_x"),
        ({"forward_speed": 0.0}, "forward_speed"),
        ({"init_sigma": -1.0}, "init_sigma"),
        ({"crash_reward": float("inf")}, "crash_reward"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_constructor_input_raises_naming_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ForkEnv(**kwargs)


def test_bad_actions_raise_before_the_state_changes():
    env = ForkEnv()
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(1))
    env.reset(seed=0)
    for bad in (np.array([np.nan]), np.zeros(2)):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    assert env.step(np.zeros(1))[0][0] == 0.5  # the first real step is still step one
