"""General Boltzmann machine: energies, conditionals and Gibbs sampling against brute force, PCD
training against a known distribution, and bad input."""

import itertools

import numpy as np
import pytest
import torch

from ebrl.boltzmann_machines import BoltzmannMachine
from ebrl.partition import exact_log_z

torch.set_num_threads(1)


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_bm(n_visible: int, n_hidden: int, seed: int = 0, **kwargs) -> BoltzmannMachine:
    g = torch.Generator().manual_seed(seed)
    bm = BoltzmannMachine(n_visible, n_hidden, init_std=1.0, dtype=torch.float64, generator=g, **kwargs)
    with torch.no_grad():
        bm.bias.normal_(generator=g)
    return bm


def joint(bm: BoltzmannMachine) -> tuple[torch.Tensor, torch.Tensor]:
    """All states x = (v, h) (visible bits first, most significant first) and p(x), from
    E(x) = -1/2 x.J.x - a.x written out here."""
    x = all_states(bm.n_visible + bm.n_hidden)
    neg_energy = 0.5 * torch.einsum("si,ij,sj->s", x, bm.couplings, x) + x @ bm.bias
    return x, torch.softmax(neg_energy, 0)


def test_couplings_are_symmetric_masked_and_energy_matches_formula():
    bm = random_bm(3, 2, hidden_hidden=False)
    J = bm.couplings
    assert torch.equal(J, J.T) and torch.all(J.diagonal() == 0)
    assert torch.all(J[3:, 3:] == 0) and torch.any(J[:3, :3] != 0)
    x, _ = joint(bm)
    expected = -0.5 * torch.einsum("si,ij,sj->s", x, J, x) - x @ bm.bias
    assert torch.allclose(bm.energy(x[:, :3], x[:, 3:]), expected)


@pytest.mark.parametrize("hidden_hidden", [True, False])
def test_free_energy_matches_brute_force(hidden_hidden):
    bm = random_bm(3, 3, seed=1, hidden_hidden=hidden_hidden)
    _, p = joint(bm)
    p_v = p.reshape(8, 8).sum(1)  # visible bits are the most significant
    log_z = exact_log_z(bm)
    v = all_states(3)
    assert torch.allclose(-bm.free_energy(v) - log_z, torch.log(p_v))
    assert torch.allclose(torch.from_numpy(bm.score_samples(v.numpy())), torch.log(p_v))
    assert bm.free_energy(v.reshape(2, 4, 3)).shape == (2, 4)


def test_conditionals_of_a_fully_visible_machine():
    bm = random_bm(4, 0, seed=2)
    x, p = joint(bm)
    # p(x_i = 1 | x_-i) from the table: compare with the model's one-step reconstruction.
    recon = bm.mean_field_reconstruct(x)
    for i in range(4):
        flipped = x.clone()
        flipped[:, i] = 1 - flipped[:, i]
        index_flip = (flipped @ (2.0 ** torch.arange(3, -1, -1, dtype=torch.float64))).long()
        p_one = torch.where(x[:, i] == 1, p, p[index_flip]) / (p + p[index_flip])
        assert torch.allclose(recon[:, i], p_one)


def test_mean_field_is_a_fixed_point():
    bm = random_bm(3, 4, seed=3, n_mean_field=50)
    v = all_states(3)
    mu = torch.from_numpy(bm.transform(v.numpy()))
    J, a = bm.couplings, bm.bias
    assert torch.allclose(mu, torch.sigmoid(a[3:] + v @ J[:3, 3:] + mu @ J[3:, 3:]), atol=1e-6)


@pytest.mark.parametrize(("vv", "hh"), [(True, True), (False, False)])
def test_gibbs_sampling_reaches_exact_joint_distribution(vv, hh):
    bm = random_bm(3, 2, seed=4, visible_visible=vv, hidden_hidden=hh)
    _, p = joint(bm)
    g = torch.Generator().manual_seed(0)
    x = bm._start_states(None, 100_000, g)
    for _ in range(30):
        x = bm._sweep(x, bm._groups(), g)
    index = (x @ (2.0 ** torch.arange(4, -1, -1, dtype=torch.float64))).long()
    empirical = torch.bincount(index, minlength=32).double() / len(index)
    assert 0.5 * (empirical - p).abs().sum().item() < 0.02
    # The visible marginal through the public sampler.
    samples = bm.sample(50_000, n_gibbs=30, generator=g)
    v_index = (samples @ torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)).long()
    empirical_v = torch.bincount(v_index, minlength=8).double() / len(v_index)
    assert 0.5 * (empirical_v - p.reshape(8, 4).sum(1)).abs().sum().item() < 0.02
    start = torch.zeros(3, 3, dtype=torch.float64)
    assert bm.gibbs(start, k=2, generator=g).shape == (3, 3) and start.sum() == 0


def test_pcd_learns_a_known_fully_visible_machine():
    truth = random_bm(5, 0, seed=5)
    x, p = joint(truth)
    g = torch.Generator().manual_seed(0)
    data = x[torch.multinomial(p, 4000, replacement=True, generator=g)]
    bm = BoltzmannMachine(5, n_epochs=30, batch_size=100, learning_rate=0.1, dtype=torch.float64)
    bm.fit(data, generator=g)
    _, q = joint(bm)
    kl = (p * (torch.log(p) - torch.log(q))).sum().item()
    assert kl < 0.02
    # The maximum-likelihood model matches the data's first and second moments.
    assert torch.allclose(q @ x, data.mean(0), atol=0.03)


def test_pcd_with_interacting_hidden_units_improves_likelihood():
    g = torch.Generator().manual_seed(0)
    prototypes = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]], dtype=torch.float64)
    data = prototypes[torch.randint(2, (400,), generator=g)]
    data = torch.where(torch.rand(data.shape, generator=g) < 0.05, 1 - data, data)
    bm = BoltzmannMachine(6, 2, n_epochs=40, learning_rate=0.05, dtype=torch.float64)
    bm.fit(data, generator=g)
    p = data.mean(0)
    independent = (data * torch.log(p) + (1 - data) * torch.log1p(-p)).sum(1).mean().item()
    assert bm.score(data) > independent + 1.5
    assert bm.score(data) == pytest.approx(bm.score_samples(data).mean().item())


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda m: m.fit(np.full((4, 3), 0.5)), ValueError, ["X", "binary"]),
        (lambda m: m.fit(np.ones((4, 5))), ValueError, ["X", "n_visible=3"]),
        (lambda m: m.partial_fit(np.ones((4, 5))), ValueError, ["X", "n_visible=3"]),
        (lambda m: m.transform(np.ones((4, 2))), ValueError, ["X", "n_visible=3"]),
        (lambda m: m.free_energy(torch.ones(2, 4)), ValueError, ["v", "n_visible=3"]),
        (lambda m: m.energy(torch.ones(2, 3)), ValueError, ["h"]),
        (lambda m: m.sample(5, n_gibbs=0), ValueError, ["n_gibbs"]),
        (lambda m: m.fit(np.ones((4, 3)), generator="seed"), TypeError, ["generator"]),
    ],
)
def test_bad_input_raises_clear_error_and_leaves_model_unchanged(call, exc, words):
    bm = random_bm(3, 2)
    before = {k: v.clone() for k, v in bm.state_dict().items()}
    with pytest.raises(exc) as err:
        call(bm)
    for word in words:
        assert word in str(err.value)
    after = bm.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"n_visible": 0}, ValueError, "n_visible"),
        ({"n_visible": 3, "n_hidden": -1}, ValueError, "n_hidden"),
        ({"n_visible": 3, "n_gibbs": 0}, ValueError, "n_gibbs"),
        ({"n_visible": 3, "hidden_hidden": 1}, TypeError, "hidden_hidden"),
        ({"n_visible": 3, "dtype": torch.float16}, TypeError, "dtype"),
    ],
)
def test_bad_constructor_arguments(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        BoltzmannMachine(**kwargs)


def test_free_energy_refuses_too_many_interacting_hidden_units():
    bm = BoltzmannMachine(2, 21)
    with pytest.raises(ValueError, match="n_hidden=21"):
        bm.free_energy(torch.ones(1, 2))


def test_couplings_the_mask_forbids_are_ignored_everywhere():
    # One source of truth for the structure (issue 14): a coupling set by hand where the mask
    # forbids it changes neither energy() nor exact log Z, so the two keep agreeing.
    bm = BoltzmannMachine(3, 2, visible_visible=False, hidden_hidden=False)
    states = torch.tensor(list(itertools.product([0.0, 1.0], repeat=5)))
    before = bm.energy(states[:, :3], states[:, 3:]).clone()
    with torch.no_grad():
        bm.couplings[0, 1] = bm.couplings[1, 0] = 2.0  # visible-visible: forbidden
    energies = bm.energy(states[:, :3], states[:, 3:])
    torch.testing.assert_close(energies, before)
    assert abs(float(torch.logsumexp(-energies.double(), 0)) - exact_log_z(bm)) < 1e-5
