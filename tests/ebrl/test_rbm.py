"""RBM, GaussianBernoulliRBM and DBN: energies and conditionals against brute force, Gibbs sampling
against the exact joint distribution, training, the scikit-learn-like API and bad input."""

import itertools
import math

import numpy as np
import pytest
import torch

from ebrl.boltzmann_machines import DBN, RBM, GaussianBernoulliRBM

torch.set_num_threads(1)


def all_states(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def random_rbm(n_visible: int, n_hidden: int, seed: int = 0, scale: float = 1.0) -> RBM:
    g = torch.Generator().manual_seed(seed)
    rbm = RBM(n_hidden, n_visible, init_std=scale, dtype=torch.float64, generator=g)
    with torch.no_grad():
        rbm.visible_bias.normal_(generator=g)
        rbm.hidden_bias.normal_(generator=g)
    return rbm


def joint_table(rbm: RBM) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact p(v, h) over all states, from E(v, h) = -b.v - c.h - v.W.h written out here."""
    v, h = all_states(rbm.n_visible), all_states(rbm.n_hidden)
    W, b, c = rbm.weight, rbm.visible_bias, rbm.hidden_bias
    neg_energy = (v @ b)[:, None] + (h @ c)[None, :] + v @ W @ h.T
    return v, h, torch.softmax(neg_energy.flatten(), 0).reshape(len(v), len(h))


def digits_like(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Binary data from three noisy prototypes of 12 pixels."""
    g = torch.Generator().manual_seed(seed)
    prototypes = (torch.rand(3, 12, generator=g) < 0.5).double()
    rows = prototypes[torch.randint(3, (n,), generator=g)]
    flip = torch.rand(rows.shape, generator=g) < 0.05
    return torch.where(flip, 1 - rows, rows)


# ------------------------------------------------------------------ energies and conditionals
def test_energy_free_energy_and_conditionals_match_brute_force():
    rbm = random_rbm(4, 3)
    v, h, joint = joint_table(rbm)
    energy = rbm.energy(v[:, None, :], h[None, :, :])
    assert energy.shape == (16, 8)
    assert torch.allclose(torch.softmax(-energy.flatten(), 0).reshape(16, 8), joint)
    # F(v) = -log sum_h exp(-E(v, h)).
    assert torch.allclose(rbm.free_energy(v), -torch.logsumexp(-energy, 1))
    # p(h_j = 1 | v) and p(v_i = 1 | h) from the joint table.
    p_h_given_v = joint / joint.sum(1, keepdim=True)
    assert torch.allclose(rbm.hidden_probabilities(v), p_h_given_v @ h)
    p_v_given_h = joint / joint.sum(0, keepdim=True)
    assert torch.allclose(rbm.visible_probabilities(h), p_v_given_h.T @ v)
    # log p(v | h) normalises over v.
    log_lik = rbm.log_visible_likelihood(v[:, None, :], h[None, :, :])
    assert torch.allclose(torch.logsumexp(log_lik, 0), torch.zeros(8, dtype=torch.float64), atol=1e-12)


def test_free_energy_batch_shapes_dtype_and_gradient():
    rbm = random_rbm(5, 3)
    v = torch.rand(2, 3, 5, dtype=torch.float64, requires_grad=True)
    f = rbm.free_energy(v)
    assert f.shape == (2, 3) and f.dtype == torch.float64
    f.sum().backward()  # differentiable in v, for gradient-based heads
    assert v.grad is not None and rbm.weight.grad is None
    assert rbm(v).shape == (2, 3) and rbm.n_visible == 5


def test_gibbs_chain_reaches_exact_joint_distribution():
    rbm = random_rbm(3, 2, seed=4)
    _, _, joint = joint_table(rbm)
    g = torch.Generator().manual_seed(0)
    start = torch.zeros(100_000, 3, dtype=torch.float64)
    v = rbm.gibbs(start, k=30, generator=g)
    assert start.abs().sum() == 0  # the input is not modified
    h = (torch.rand(100_000, 2, generator=g, dtype=torch.float64) < rbm.hidden_probabilities(v)).double()
    index = (v @ torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)) * 4 + h @ torch.tensor(
        [2.0, 1.0], dtype=torch.float64
    )
    empirical = torch.bincount(index.long(), minlength=32).double() / len(index)
    tv = 0.5 * (empirical - joint.flatten()).abs().sum().item()
    assert tv < 0.02


def test_gaussian_rbm_free_energy_and_conditionals():
    g = torch.Generator().manual_seed(0)
    gb = GaussianBernoulliRBM(3, 2, sigma=0.5, init_std=0.5, dtype=torch.float64, generator=g)
    with torch.no_grad():
        gb.visible_bias.copy_(torch.tensor([0.2, -0.4]))
        gb.hidden_bias.copy_(torch.tensor([0.1, -0.3, 0.4]))
    v = torch.randn(7, 2, generator=g, dtype=torch.float64)
    h = all_states(3)
    energy = gb.energy(v[:, None, :], h[None, :, :])
    assert torch.allclose(gb.free_energy(v), -torch.logsumexp(-energy, 1))
    posterior = torch.softmax(-energy, 1)
    assert torch.allclose(gb.hidden_probabilities(v), posterior @ h)
    # p(v | h) = N(b + sigma W h, sigma^2): the conditional mean and its normalised log-density.
    expected_mean = gb.visible_bias + 0.5 * (h @ gb.weight.T)
    assert torch.allclose(gb.visible_mean(h), expected_mean)
    log_lik = gb.log_visible_likelihood(expected_mean, h)
    assert torch.allclose(
        log_lik, torch.full((8,), -2 * math.log(0.5 * math.sqrt(2 * math.pi)), dtype=torch.float64)
    )
    samples = gb.gibbs(torch.zeros(20_000, 2, dtype=torch.float64), k=20, generator=g)
    # The visible marginal is a mixture of Gaussians: its mean is sum_h p(h) (b + sigma W h).
    log_ph = gb.log_marginal("hidden", h)
    mixture_mean = torch.softmax(log_ph, 0) @ expected_mean
    assert torch.allclose(samples.mean(0), mixture_mean, atol=0.02)


# ------------------------------------------------------------------------------- training
def test_fast_update_reproduces_generic_update():
    data = digits_like(200)
    for centering, method in itertools.product((True, False), ("pcd", "cd")):
        models = []
        for fast in (True, False):
            rbm = RBM(
                6, method=method, centering=centering, k=2, weight_decay=1e-3, dtype=torch.float64, n_epochs=2
            )
            rbm._fast_path = fast
            models.append(rbm.fit(data, generator=torch.Generator().manual_seed(0)))
        for a, b in zip(models[0].state_dict().values(), models[1].state_dict().values(), strict=True):
            assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("method", ["pcd", "cd"])
def test_fit_learns_and_score_samples_is_exact_log_likelihood(method):
    data = digits_like(300)
    rbm = RBM(4, method=method, n_epochs=30, learning_rate=0.1, batch_size=10, dtype=torch.float64)
    rbm.fit(data, generator=torch.Generator().manual_seed(0))
    scores = rbm.score_samples(data)
    assert isinstance(scores, torch.Tensor) and scores.shape == (300,)
    # score_samples is log p(v) = -F(v) - log Z with log Z summed over every joint state.
    _, _, joint = joint_table(rbm)
    log_p = torch.log(joint.sum(1))
    index = (data @ (2.0 ** torch.arange(11, -1, -1, dtype=torch.float64))).long()
    assert torch.allclose(scores, log_p[index], atol=1e-8)
    # Three prototypes with 5 % flips: about log 3 + 12 H(0.05) = 3.44 nats; independent pixels: 6.5.
    p = data.mean(0).clamp(1e-3, 1 - 1e-3)
    independent = (data * torch.log(p) + (1 - data) * torch.log1p(-p)).sum(1).mean().item()
    assert scores.mean().item() > independent + 1.5
    assert rbm.score(data.numpy()) == pytest.approx(scores.mean().item())


def test_pcd_chain_count_is_independent_of_batch_size_and_fit_is_reproducible():
    data = digits_like(100)
    shapes = []
    for bs in (7, 50):
        rbm = RBM(5, batch_size=bs, n_chains=13, n_epochs=2).fit(
            data, generator=torch.Generator().manual_seed(1)
        )
        shapes.append(tuple(rbm.chains.shape))
    assert shapes == [(13, 12), (13, 12)]
    a = RBM(5, n_epochs=2).fit(data, generator=torch.Generator().manual_seed(3))
    b = RBM(5, n_epochs=2).fit(data, generator=torch.Generator().manual_seed(3))
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert len(a.history_) == 2
    a.partial_fit(data, generator=torch.Generator().manual_seed(4))
    assert len(a.history_) == 3


def test_progress_bar_records_reconstruction_error(capsys):
    rbm = RBM(3, n_epochs=2, progress=True).fit(digits_like(40))
    assert [set(r) for r in rbm.history_] == [{"epoch", "time_s", "reconstruction_error"}] * 2
    assert "RBM PCD-1" in capsys.readouterr().err


def test_sklearn_like_api_types_and_dtypes():
    data = digits_like(60).numpy()
    rbm = RBM(5, n_epochs=1).fit(data)
    features = rbm.transform(data)
    assert isinstance(features, np.ndarray) and features.shape == (60, 5)
    assert features.min() >= 0 and features.max() <= 1
    assert rbm.weight.dtype == torch.float32 and rbm.weight.requires_grad is False
    assert isinstance(rbm.transform(torch.tensor(data)), torch.Tensor)
    # transform accepts probabilities in [0, 1] (mean-field inputs), not only binary data.
    assert rbm.transform(np.full((2, 12), 0.5)).shape == (2, 5)
    samples = rbm.sample(9, n_gibbs=5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (9, 12) and set(samples.unique().tolist()) <= {0.0, 1.0}
    means = rbm.sample(4, n_gibbs=3, return_mean=True)
    assert means.shape == (4, 12) and ((means > 0) & (means < 1)).all()
    reconstruction = rbm.mean_field_reconstruct(torch.tensor(data[:3], dtype=torch.float32), n_steps=2)
    assert reconstruction.shape == (3, 12)


def test_gaussian_rbm_learns_real_valued_data():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[2.0, 0.0, -1.0], [-2.0, 1.0, 1.0]], dtype=torch.float64)
    data = centres[torch.randint(2, (400,), generator=g)] + 0.3 * torch.randn(
        400, 3, generator=g, dtype=torch.float64
    )
    gb = GaussianBernoulliRBM(4, sigma=0.3, n_epochs=40, learning_rate=0.003, dtype=torch.float64)
    gb.fit(data, generator=torch.Generator().manual_seed(1))
    # Two clusters of std 0.3: the true density scores -1.34 nats, a single Gaussian about -3.8.
    assert gb.score(data) > -2.2
    wide = GaussianBernoulliRBM(4, sigma="std", n_epochs=1, dtype=torch.float64).fit(data, generator=g)
    assert torch.allclose(wide.sigma, data.std(0))
    assert gb.transform(data).shape == (400, 4) and gb.sample(5, 10, generator=g).shape == (5, 3)


def test_dbn_greedy_stacking_generation_and_bound():
    data = digits_like(200)
    dbn = DBN([6, 3], n_epochs=5, batch_size=20).fit(data, generator=torch.Generator().manual_seed(0))
    assert dbn.n_visible == 12 and dbn.n_layers == 2
    assert dbn.rbms[1].n_visible == 6 and dbn.rbms[1].binary_data is False
    assert dbn.transform(data).shape == (200, 3)
    assert dbn.sample(7, n_gibbs=5, generator=torch.Generator().manual_seed(1)).shape == (7, 12)
    assert dbn.mean_field_reconstruct(data[:4].float()).shape == (4, 12)
    # The bound never exceeds the exact log p(v) = log sum_h1 p(v | h1) exp(-F_top(h1)) / Z_top.
    bottom, top = dbn.rbms
    h1 = all_states(6).float()
    log_prior = -top.free_energy(h1) - top.log_partition()
    v = data[:5].float()
    exact = torch.logsumexp(bottom.log_visible_likelihood(v[:, None], h1[None]) + log_prior, 1)
    bound = dbn.score_samples(v, n_samples=4000, generator=torch.Generator().manual_seed(2))
    assert (bound <= exact + 0.05).all() and (bound > exact - 3.0).all()
    # A one-layer DBN is its RBM.
    single = DBN([4], n_epochs=1).fit(data)
    assert torch.allclose(single.free_energy(data[:3].float()), single.rbms[0].free_energy(data[:3].float()))


def test_device_and_dtype_follow_parameters():
    rbm = RBM(3, 4, dtype=torch.float64, device="auto")
    assert rbm.device.type in ("cpu", "cuda") and rbm.dtype == torch.float64
    assert rbm.free_energy(torch.ones(2, 4)).dtype == torch.float64  # inputs move to the parameters
    if torch.cuda.is_available():
        rbm = rbm.to("cuda")
        assert rbm.free_energy(torch.ones(2, 4)).device.type == "cuda"


# ----------------------------------------------------------------------------- bad input
def fitted() -> RBM:
    return RBM(4, n_epochs=1).fit(digits_like(40), generator=torch.Generator().manual_seed(0))


def snapshot(model: torch.nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model: torch.nn.Module, before: dict) -> None:
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize(
    ("call", "exc", "words"),
    [
        (lambda m: m.fit(np.arange(24).reshape(2, 12)), ValueError, ["X", "binary", "Gaussian"]),
        (lambda m: m.fit(np.full((3, 12), 0.5)), ValueError, ["X", "binary"]),
        (lambda m: m.partial_fit(np.ones((3, 11))), ValueError, ["X", "11", "n_visible=12"]),
        (lambda m: m.transform(np.ones((3, 10))), ValueError, ["X", "10", "n_visible=12"]),
        (lambda m: m.transform(np.full((3, 12), 2.0)), ValueError, ["X", "[0, 1]"]),
        (lambda m: m.transform(np.ones(12)), ValueError, ["X", "2-D"]),
        (lambda m: m.transform("abc"), TypeError, ["X", "str"]),
        (lambda m: m.score_samples(np.full((3, 12), 0.5)), ValueError, ["X", "binary"]),
        (lambda m: m.fit(np.full((3, 12), np.nan)), ValueError, ["X", "finite"]),
        (lambda m: m.free_energy(torch.ones(3, 5)), ValueError, ["v", "n_visible=12"]),
        (lambda m: m.free_energy(np.ones((3, 12))), TypeError, ["v", "torch.Tensor"]),
        (lambda m: m.gibbs(torch.ones(3, 12), k=0), ValueError, ["k", ">= 1"]),
        (lambda m: m.sample(0), ValueError, ["n", ">= 1"]),
        (lambda m: m.fit(np.ones((3, 12)), generator=0), TypeError, ["generator", "torch.Generator"]),
        (lambda m: m.log_partition(method="guess"), ValueError, ["method", "exact"]),
        (lambda m: m.score_samples(np.ones((3, 12)), log_z=float("nan")), ValueError, ["log_z"]),
    ],
)
def test_bad_input_raises_clear_error_and_leaves_model_unchanged(call, exc, words):
    rbm = fitted()
    before = snapshot(rbm)
    with pytest.raises(exc) as err:
        call(rbm)
    for word in words:
        assert word in str(err.value)
    assert_unchanged(rbm, before)


@pytest.mark.parametrize(
    ("cls", "kwargs", "exc", "name"),
    [
        (RBM, {"n_hidden": 0}, ValueError, "n_hidden"),
        (RBM, {"n_hidden": 2.5}, TypeError, "n_hidden"),
        (RBM, {"n_hidden": True}, TypeError, "n_hidden"),
        (RBM, {"n_hidden": 3, "k": 0}, ValueError, "k"),
        (RBM, {"n_hidden": 3, "method": "ml"}, ValueError, "method"),
        (RBM, {"n_hidden": 3, "learning_rate": -0.1}, ValueError, "learning_rate"),
        (RBM, {"n_hidden": 3, "momentum": 1.0}, ValueError, "momentum"),
        (RBM, {"n_hidden": 3, "lr_schedule": "cosine"}, ValueError, "lr_schedule"),
        (RBM, {"n_hidden": 3, "dtype": torch.int32}, TypeError, "dtype"),
        (RBM, {"n_hidden": 3, "device": "gpu0"}, ValueError, "device"),
        (RBM, {"n_hidden": 3, "binary_data": "yes"}, TypeError, "binary_data"),
        (GaussianBernoulliRBM, {"n_hidden": 3, "sigma": -1.0}, ValueError, "sigma"),
        (GaussianBernoulliRBM, {"n_hidden": 3, "sigma": "mad"}, ValueError, "sigma"),
        (DBN, {"hidden_sizes": []}, TypeError, "hidden_sizes"),
        (DBN, {"hidden_sizes": [3, 0]}, ValueError, "hidden_sizes[1]"),
    ],
)
def test_bad_constructor_arguments(cls, kwargs, exc, name):
    with pytest.raises(exc) as err:
        cls(**kwargs)
    assert name in str(err.value)


def test_unfitted_model_says_how_to_fix_it():
    with pytest.raises(RuntimeError, match="fit"):
        RBM(3).free_energy(torch.ones(1, 4))
