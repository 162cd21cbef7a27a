"""Layer-normalised state-action energies: the modules, the fused act and the SQL policy (the
stacked passes and the closed-form input gradient are checked against autograd in
test_energies.py, with and without layer normalisation)."""

import pytest
import torch

# the test file's folder is on sys.path (pytest's rootdir-less "prepend" import mode)
from test_energies import relu_twins

from ebrl import StateActionEnergy
from ebrl.energies import PessimisticEnergy, stackable


def test_layer_norm_normalises_every_hidden_pre_activation():
    energy = relu_twins((8, 8), layer_norm=True)[0]
    norms = [m for m in energy.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 and energy.layer_norm
    plain = StateActionEnergy(5, 3, (8, 8), "relu")
    # without the option: the parameter names of every earlier version (old state dicts load)
    assert set(plain.state_dict()) == {"state_in.weight", "state_in.bias", "action_in.weight",
                                       "trunk.0.weight", "trunk.0.bias", "trunk.2.weight", "trunk.2.bias"}
    with pytest.raises(TypeError, match="layer_norm must be True, False or 'last', got 'yes'"):
        StateActionEnergy(5, 3, (8,), layer_norm="yes")


@pytest.mark.parametrize(("hidden", "normalised"), [((8,), [8]), ((8, 6), [6]), ((8, 6, 4), [4])])
def test_last_normalises_only_the_last_hidden_layer(hidden, normalised):
    energy = StateActionEnergy(5, 3, hidden, "relu", layer_norm="last")
    norms = [m.normalized_shape[0] for m in energy.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms == normalised
    # ... Linear -> LayerNorm -> ReLU -> head: the head reads normalised features
    assert isinstance(energy.trunk[-3] if len(hidden) > 1 else energy.in_norm, torch.nn.LayerNorm)


def test_only_members_of_one_design_stack():
    twins = relu_twins((16, 16), layer_norm=True)
    assert stackable(twins) and not stackable([twins[0], relu_twins((16, 16))[0]])


def test_fused_act_takes_layer_normalised_critics_and_draws_the_same_policy():
    """The fused (compiled) act runs on layer-normalised twins: the same action distribution as the
    eager SIR + MALA path (two-sample KS per coordinate, fixed seeds, p > 0.001), and compiling
    changes no number for the same draws (within 1e-5)."""
    from scipy import stats

    from ebrl import BoltzmannPolicy
    from ebrl._fused import FusedAct, fusable
    from ebrl.proposals import TanhGaussianProposal
    from ebrl.samplers import MALA

    members = relu_twins((32, 32), layer_norm=True)
    with torch.no_grad():  # a peaked exp(-E/alpha), far from uniform
        for m in members:
            m.trunk[-1].weight.mul_(5.0)
    torch.manual_seed(1)
    policy = BoltzmannPolicy(PessimisticEnergy(members), MALA(n_steps=3, step_size=0.05), temperature=0.3,
                             proposal=TanhGaussianProposal(5, 3, (32, 32)), n_candidates=16,
                             compile_act=False)
    assert fusable(policy.energy, policy.sampler, policy.proposal, policy.n_candidates)
    p = policy
    fused = FusedAct(p.energy, p.sampler, p.proposal, p.n_candidates, p.defensive, False)
    states = torch.randn(1, 5).expand(4000, 5).contiguous()
    eager = policy.sample(states, 1, generator=torch.Generator().manual_seed(1))[:, 0]
    fast = fused(states, 1, torch.Generator().manual_seed(2), 0.3, torch.zeros(())).samples[:, 0]
    assert stats.kstest((eager[:, 0].numpy() + 1) / 2, "uniform").pvalue < 1e-6
    for j in range(3):
        assert stats.ks_2samp(eager[:, j].numpy(), fast[:, j].numpy()).pvalue > 1e-3
    few = torch.randn(2, 5)
    args = (few, *fused.draws(few, 3, torch.Generator().manual_seed(0)), torch.tensor(0.3), torch.zeros(()))
    with torch.no_grad():
        plain = fused.act(*args)
        compiled = torch.compile(fused.act, fullgraph=True, dynamic=False)(*args)
    for a, b in zip(plain, compiled, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sql_policy_builds_layer_normalised_critics_and_refuses_a_non_bool(tmp_path):
    import gymnasium as gym

    from ebrl.agents import SQL

    env = gym.make("Pendulum-v1")
    model = SQL("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": (16, 16), "critic_layer_norm": True})
    critics = [*model.policy.critics, *model.policy.critic_targets]
    assert all(c.layer_norm for c in critics)
    assert model.policy.proposal is not None and not any(
        isinstance(m, torch.nn.LayerNorm) for m in model.policy.proposal.modules())  # critics only
    last = SQL("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": (16, 16), "critic_layer_norm": "last"})
    assert all(c.layer_norm == "last" and isinstance(c.trunk[1], torch.nn.LayerNorm)
               and isinstance(c.in_norm, torch.nn.Identity) for c in last.policy.critics)
    with pytest.raises(TypeError, match="critic_layer_norm"):
        SQL("MlpPolicy", env, policy_kwargs={"critic_layer_norm": "yes"})
