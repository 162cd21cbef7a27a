"""The fused act (``compile_act=True``): the same policy as the eager SIR + MALA path, compiled."""

from __future__ import annotations

import copy

import gymnasium as gym
import pytest
import torch
from scipy import stats

from ebrl import BoltzmannPolicy, StateActionEnergy
from ebrl._fused import FusedAct, fusable
from ebrl.energies import PessimisticEnergy
from ebrl.errors import NonFiniteError
from ebrl.proposals import TanhGaussianProposal
from ebrl.samplers import MALA, Langevin

OBS, ACT = 3, 2


def make_policy(compile_act=False, activation="relu", proposal=True, sampler=None, n_candidates=16):
    torch.manual_seed(0)
    members = [StateActionEnergy(OBS, ACT, (32, 32), activation) for _ in range(2)]
    with torch.no_grad():  # a peaked, multimodal exp(-E/alpha): the test has something to see
        for m in members:
            m.trunk[-1].weight.mul_(20.0)
    prop = TanhGaussianProposal(OBS, ACT, (32, 32)) if proposal else None
    return BoltzmannPolicy(
        PessimisticEnergy(members), sampler or MALA(n_steps=3, step_size=0.05), temperature=0.3,
        proposal=prop, n_candidates=n_candidates, compile_act=compile_act,
    )


def fused_of(policy, compiled=False):
    p = policy
    return FusedAct(p.energy, p.sampler, p.proposal, p.n_candidates, p.defensive, compiled)


def test_fused_act_applies_only_to_sir_mala_on_stackable_relu_critics():
    ok = make_policy()
    assert fusable(ok.energy, ok.sampler, ok.proposal, ok.n_candidates)
    for policy in (
        make_policy(activation="silu"),  # no closed-form gradient
        make_policy(proposal=False),  # no SIR
        make_policy(n_candidates=1),  # nothing to resample
        make_policy(sampler=Langevin(n_steps=3)),
        make_policy(sampler=MALA(n_steps=3, adapt_steps=1)),  # in-call adaptation is not fused
    ):
        assert not fusable(policy.energy, policy.sampler, policy.proposal, policy.n_candidates)


def test_fused_and_eager_paths_draw_the_same_policy():
    """One state repeated 4000 times, one action per row: the two paths' actions have the same
    distribution per coordinate (two-sample KS, fixed seeds, p > 0.001) and acceptance (+-0.03)."""
    policy = make_policy()
    states = torch.randn(1, OBS).expand(4000, OBS).contiguous()
    eager = policy.sample(states, 1, generator=torch.Generator().manual_seed(1))[:, 0]
    eager_accept = float(policy.last_result.acceptance)
    result = fused_of(policy)(states, 1, torch.Generator().manual_seed(2), 0.3, torch.zeros(()))
    fused = result.samples[:, 0]
    assert fused.shape == eager.shape and bool(((fused >= -1) & (fused <= 1)).all())
    for j in range(ACT):
        assert stats.ks_2samp(eager[:, j].numpy(), fused[:, j].numpy()).pvalue > 1e-3
    # The target is not trivial: the actions are far from uniform.
    assert stats.kstest((eager[:, 0].numpy() + 1) / 2, "uniform").pvalue < 1e-6
    assert abs(float(result.acceptance) - eager_accept) < 0.03


def test_compiled_fused_act_equals_the_eager_function_for_the_same_draws():
    """torch.compile changes the execution, not the numbers: within 1e-5 for the same draws."""
    policy = make_policy()
    fused = fused_of(policy, compiled=True)
    states = torch.randn(2, OBS)
    draws = fused.draws(states, 3, torch.Generator().manual_seed(0))
    args = (states, *draws, torch.tensor(0.3), torch.zeros(()))
    with torch.no_grad():
        eager = fused.act(*args)
        compiled = torch.compile(fused.act, fullgraph=True, dynamic=False)(*args)
    for e, c in zip(eager, compiled, strict=True):
        torch.testing.assert_close(c, e, atol=1e-5, rtol=1e-5)


def test_a_non_finite_energy_falls_back_to_the_eager_path_and_its_error():
    policy = make_policy(compile_act=True)
    policy._fused = fused_of(policy)  # the same function uncompiled, to keep the test fast
    with torch.no_grad():
        policy.energy.members[0].trunk[0].weight.fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="MALA"):
        policy.sample(torch.randn(2, OBS), 1)


def test_compile_act_must_be_a_bool():
    with pytest.raises(TypeError, match="compile_act must be True or False, got 'yes'"):
        make_policy(compile_act="yes")


def test_sql_learns_and_saves_with_compile_act(tmp_path):
    """SQL(policy_kwargs={"compile_act": True}) acts through the compiled function while learning
    on a real env, keeps the setting through save/load and deep copies; a bad value is refused
    before anything is built."""
    from ebrl.agents import SQL

    env = gym.make("Pendulum-v1")
    for bad in (1, "yes"):
        with pytest.raises(ValueError, match=f"compile_act must be True, False or 'auto', got {bad!r}"):
            SQL("MlpPolicy", env, policy_kwargs={"compile_act": bad}, device="cpu")
    model = SQL("MlpPolicy", env, learning_starts=50, seed=0, device="cpu",
                policy_kwargs={"compile_act": True, "net_arch": [32, 32]})
    model.learn(120)
    assert isinstance(model.policy.boltzmann._fused, FusedAct)
    assert model.policy.boltzmann.last_result.acceptance is not None
    copy.deepcopy(model.policy)  # the compiled function is not copied
    model.save(tmp_path / "m.zip")
    loaded = SQL.load(tmp_path / "m.zip", device="cpu")
    assert loaded.policy.compile_act is True and loaded.policy.boltzmann.compile_act is True


def test_compile_act_auto_compiles_only_for_long_learn_runs():
    """"auto" (the default): a short learn() and predict() act eagerly; a run of COMPILE_ACT_MIN_STEPS or more
    (counted from step 0 when continuing) switches the compiled act on for good."""
    from ebrl.agents import SQL
    from ebrl.agents.sql.policies import COMPILE_ACT_MIN_STEPS

    model = SQL("MlpPolicy", gym.make("Pendulum-v1"), learning_starts=50, seed=0, device="cpu",
                policy_kwargs={"net_arch": [32, 32]})
    assert model.policy.compile_act == "auto" and model.policy.boltzmann.compile_act is False
    model.learn(80)
    assert model.policy.boltzmann.compile_act is False and model.policy.boltzmann._fused is None
    model.policy.plan_acting(COMPILE_ACT_MIN_STEPS - 1)
    assert model.policy.boltzmann.compile_act is False
    model.policy.plan_acting(COMPILE_ACT_MIN_STEPS)
    assert model.policy.boltzmann.compile_act is True
    model.learn(10)  # a short run after a long one: the compile is paid, it stays on
    assert model.policy.boltzmann.compile_act is True
