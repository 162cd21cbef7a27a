"""Energies: shapes, broadcasting of the context over chains, the pinned sign, bad input."""

import pytest
import torch

from ebrl import BoltzmannPolicy, Energy, MLPEnergy, StateActionEnergy
from ebrl.samplers import MALA


@pytest.mark.parametrize("lead", [(), (5,), (3, 4), (2, 3, 4)])
def test_mlp_energy_any_leading_shape(lead):
    energy = MLPEnergy(3, hidden_sizes=(16,))
    x = torch.randn(*lead, 3)
    assert energy(x).shape == lead


def test_state_action_energy_broadcasts_state_over_chains():
    torch.manual_seed(0)
    energy = StateActionEnergy(4, 2, hidden_sizes=(16, 16))
    s = torch.randn(5, 4)
    a = torch.rand(5, 7, 2) * 2 - 1
    e = energy(s, a)
    assert e.shape == (5, 7)
    # Same as evaluating each (state, action) pair with the state repeated explicitly.
    e_pairs = energy(s[:, None, :].expand(5, 7, 4).reshape(-1, 4), a.reshape(-1, 2)).reshape(5, 7)
    torch.testing.assert_close(e, e_pairs)
    # The split first layer equals one linear layer on the concatenation (s, a).
    w = torch.cat([energy.state_in.weight, energy.action_in.weight], dim=1)
    h = energy.act(torch.cat([s[:, None].expand(5, 7, 4), a], -1) @ w.T + energy.state_in.bias)
    torch.testing.assert_close(e, energy.trunk(h).squeeze(-1))
    # condition() gives the same energies, and the generic form takes (x=actions, context=states).
    torch.testing.assert_close(energy.condition(s)(a), e)
    torch.testing.assert_close(energy.energy(a, s), e)
    torch.testing.assert_close(energy.q_value(s, a), -e)


def test_conditional_mlp_energy():
    energy = MLPEnergy(2, hidden_sizes=(8,), context_dim=3)
    assert energy(torch.randn(4, 6, 2), torch.randn(4, 3)).shape == (4, 6)
    with pytest.raises(ValueError, match="context"):
        energy(torch.randn(4, 2))


def test_spectral_norm_bounds_layers():
    torch.manual_seed(0)
    energy = MLPEnergy(3, hidden_sizes=(32, 32), spectral_norm=True)
    for _ in range(20):  # power iterations converge in training mode
        energy(torch.randn(8, 3))
    energy.eval()
    for layer in energy.net:
        if isinstance(layer, torch.nn.Linear):
            assert torch.linalg.matrix_norm(layer.weight, ord=2) <= 1.05


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"obs_dim": 0, "act_dim": 2}, ValueError, "obs_dim"),
        ({"obs_dim": 3, "act_dim": 2.5}, TypeError, "act_dim"),
        ({"obs_dim": 3, "act_dim": 2, "activation": "swish!"}, ValueError, "activation"),
        ({"obs_dim": 3, "act_dim": 2, "hidden_sizes": ()}, ValueError, "hidden_sizes"),
        ({"obs_dim": 3, "act_dim": 2, "hidden_sizes": (0,)}, ValueError, "hidden_sizes"),
        ({"obs_dim": 3, "act_dim": 2, "hidden_sizes": 64}, TypeError, "hidden_sizes"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        StateActionEnergy(**kwargs)


def test_shape_mismatches_are_named():
    energy = StateActionEnergy(4, 2, hidden_sizes=(8,))
    with pytest.raises(ValueError, match="states"):
        energy(torch.randn(5, 4), torch.rand(6, 3, 2))  # batch mismatch
    with pytest.raises(ValueError, match="states"):
        energy(torch.randn(5, 3), torch.rand(5, 3, 2))  # wrong obs dim
    with pytest.raises(ValueError, match="actions"):
        energy(torch.randn(5, 4), torch.rand(5, 3, 3))  # wrong act dim
    with pytest.raises(TypeError, match="actions"):
        energy(torch.randn(5, 4), torch.ones(5, 3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="actions"):
        energy.condition(torch.randn(5, 4))(torch.rand(6, 3, 2))


def relu_twins(hidden, layer_norm=False):
    """Two ReLU state-action energies; with layer_norm, gains and biases moved off their (1, 0)
    start so that they count."""
    torch.manual_seed(0)
    members = [StateActionEnergy(5, 3, hidden, "relu", layer_norm=layer_norm) for _ in range(2)]
    with torch.no_grad():
        for mod in (mod for m in members for mod in m.modules() if isinstance(mod, torch.nn.LayerNorm)):
            mod.weight.uniform_(0.5, 1.5)
            mod.bias.uniform_(-0.3, 0.3)
    return members


@pytest.mark.parametrize("layer_norm", [False, True, "last"])
def test_ensemble_energy_matches_the_members_and_their_gradients(layer_norm):
    from ebrl.energies import ensemble_energy, stackable

    members = relu_twins((16, 16), layer_norm)
    assert stackable(members)
    states = torch.randn(7, 5)
    for actions in (torch.rand(7, 3) * 2 - 1, torch.rand(7, 4, 3) * 2 - 1):
        out = ensemble_energy(members, states, actions)
        assert out.shape == (2, *actions.shape[:-1])
        torch.testing.assert_close(out, torch.stack([m(states, actions) for m in members]))
    out.sum().backward()
    grads = [p.grad.clone() for m in members for p in m.parameters()]
    for m in members:
        m.zero_grad()
    torch.stack([m(states, actions) for m in members]).sum().backward()
    for g, p in zip(grads, (p for m in members for p in m.parameters()), strict=True):
        torch.testing.assert_close(g, p.grad)


def test_pessimistic_energy_is_the_twin_minimum_in_forward_and_condition():
    from ebrl.energies import PessimisticEnergy

    torch.manual_seed(0)
    members = [StateActionEnergy(5, 3, (16, 16), "relu") for _ in range(2)]
    energy = PessimisticEnergy(members)
    states, actions = torch.randn(4, 5), torch.rand(4, 6, 3) * 2 - 1
    expected = torch.stack([m(states, actions) for m in members]).max(0).values
    torch.testing.assert_close(energy(states, actions), expected)
    torch.testing.assert_close(energy.condition(states)(actions), expected)
    assert list(energy.parameters()) == []  # the members belong to their owner
    with pytest.raises(ValueError, match="do not match"):
        energy.condition(states)(torch.zeros(3, 6, 3))
    with pytest.raises(TypeError, match="members"):
        PessimisticEnergy([])


@pytest.mark.parametrize("layer_norm", [False, True, "last"])
@pytest.mark.parametrize("hidden", [(16,), (16, 16), (8, 8, 8)])
def test_closed_form_gradient_of_relu_twins_equals_autograd(hidden, layer_norm) -> None:
    """The samplers' E and dE/da for ReLU twin critics (with or without layer normalisation) come
    without autograd: same values."""
    from ebrl.energies import PessimisticEnergy
    from ebrl.samplers.base import energy_and_grad

    energy = PessimisticEnergy(relu_twins(hidden, layer_norm))
    states, actions = torch.randn(4, 5), torch.rand(4, 6, 3) * 2 - 1
    fn = energy.condition(states)
    assert fn.closed_form_grad is not None
    e, g = energy_and_grad(fn, actions)
    x = actions.clone().requires_grad_(True)
    expected = energy(states, x)
    (expected_g,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(e, expected.detach())
    torch.testing.assert_close(g, expected_g)
    # Both members attain the max somewhere: the gradient follows the right one per point.
    per_member = torch.stack([m(states, actions) for m in energy.members])
    assert 0 < int((per_member[0] > per_member[1]).sum()) < actions.shape[0] * actions.shape[1]


def test_smooth_twins_take_the_autograd_gradient() -> None:
    from ebrl.energies import PessimisticEnergy
    from ebrl.samplers.base import energy_and_grad

    torch.manual_seed(0)
    energy = PessimisticEnergy([StateActionEnergy(5, 3, (16,), "silu") for _ in range(2)])
    states, actions = torch.randn(2, 5), torch.rand(2, 3, 3) * 2 - 1
    fn = energy.condition(states)
    assert fn.closed_form_grad is None  # no closed form for SiLU: autograd
    x = actions.clone().requires_grad_(True)
    (expected_g,) = torch.autograd.grad(energy(states, x).sum(), x)
    torch.testing.assert_close(energy_and_grad(fn, actions)[1], expected_g)


def test_energy_without_parameters_reports_its_buffers_device_and_dtype() -> None:
    # A hand-written energy may hold only fixed data (buffers): the policy needs its device/dtype.
    class Quadratic(Energy):
        def __init__(self) -> None:
            super().__init__()
            self.x_dim, self.context_dim = 1, 1
            self.register_buffer("center", torch.tensor([0.25], dtype=torch.float64))

        def energy(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
            return ((x - self.center) ** 2).sum(-1) * 50.0

    energy = Quadratic()
    assert energy.device == torch.device("cpu") and energy.dtype == torch.float64
    policy = BoltzmannPolicy(energy, MALA(n_steps=30, adapt_steps=10), temperature=1.0)
    states = torch.zeros(64, 1, dtype=torch.float64)
    actions = policy.sample(states, n=8, generator=torch.Generator().manual_seed(0))
    # pi ∝ exp(-50 (a - 0.25)^2): a Gaussian of mean 0.25, std 0.1 (well inside the box).
    assert actions.dtype == torch.float64
    assert abs(actions.mean().item() - 0.25) < 0.02 and abs(actions.std().item() - 0.1) < 0.02
