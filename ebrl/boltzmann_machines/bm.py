"""General Boltzmann machine with arbitrary symmetric couplings (Ackley, Hinton & Sejnowski 1985)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..partition import small_batch_threads
from ..samplers.gibbs import GibbsSampler
from ..validation import check_bool, check_data, check_generator, check_int, check_units
from ._estimator import BoltzmannEstimator
from ._ops import bernoulli
from .rbm import base_rate_logits

MAX_ENUMERATED_HIDDEN = 20  # free_energy sums over 2**n_hidden states when hidden units interact


class BoltzmannMachine(BoltzmannEstimator):
    """Binary Boltzmann machine ``E(x) = -1/2 x.J.x - a.x`` over ``x = (v, h)``; lower = more likely.

    ``J`` is symmetric with a zero diagonal; visible-visible and hidden-hidden couplings can be
    switched off (both off gives an RBM). Sampling is Gibbs sampling that updates, in turn, each
    unit of a layer with lateral couplings and a whole layer at once otherwise. Training is the
    procedure of Salakhutdinov & Hinton (2009): the data term from mean-field posteriors over the
    hidden units (exact when hidden units do not interact), the model term from persistent
    chains (PCD, Tieleman 2008).

    Args:
        n_visible: number of visible units (the first ``n_visible`` entries of ``x``).
        n_hidden: number of hidden units (0 gives a fully visible Boltzmann machine).
        visible_visible: allow couplings between visible units (``L`` in Salakhutdinov 2008).
        hidden_hidden: allow couplings between hidden units (``J`` in Salakhutdinov 2008).
        n_chains: number of persistent (fantasy) chains.
        n_gibbs: Gibbs sweeps of the persistent chains per update.
        n_mean_field: fixed-point iterations of the mean-field posterior (when hidden units interact).
        learning_rate: step size of the gradient ascent on the log-likelihood.
        momentum: momentum coefficient.
        weight_decay: L2 penalty on the couplings.
        batch_size: mini-batch size.
        n_epochs: passes over the data made by ``fit``.
        init_std: standard deviation of the initial couplings.
        device: device of the parameters (``"auto"``: CUDA when present).
        dtype: ``torch.float32`` or ``torch.float64``.
        progress: show a tqdm progress bar in ``fit``.
        generator: random source for the initial couplings.
    """

    # One line per topic (structure, sampling, optimiser, passes over the data, set-up); every
    # argument after ``*`` is keyword-only, so the grouping is layout alone.
    def __init__(
        self,
        n_visible: int,
        n_hidden: int = 0,
        *,
        visible_visible: bool = True, hidden_hidden: bool = True,
        n_chains: int = 100, n_gibbs: int = 1, n_mean_field: int = 10,
        learning_rate: float = 0.05, momentum: float = 0.5, weight_decay: float = 1e-4,
        batch_size: int = 32, n_epochs: int = 20,
        init_std: float = 0.01, device: Any = None, dtype: torch.dtype = torch.float32,
        progress: bool = False, generator: torch.Generator | None = None,
    ) -> None:  # fmt: skip
        super().__init__()
        self.n_visible = self._fixed_n_visible = check_int("n_visible", n_visible, minimum=1)
        self.n_hidden = check_int("n_hidden", n_hidden, minimum=0)
        self.visible_visible = check_bool("visible_visible", visible_visible)
        self.hidden_hidden = check_bool("hidden_hidden", hidden_hidden)
        self.n_gibbs = check_int("n_gibbs", n_gibbs, minimum=1)
        self.n_mean_field = check_int("n_mean_field", n_mean_field, minimum=1)
        device, dtype = self._set_training_args(
            n_chains, learning_rate, momentum, weight_decay, batch_size, n_epochs, init_std, progress,
            device, dtype, generator,
        )  # fmt: skip
        n = self.n_visible + self.n_hidden
        vis = torch.arange(n, device=device) < self.n_visible
        allowed = vis[:, None] != vis[None, :]
        if self.visible_visible:
            allowed |= vis[:, None] & vis[None, :]
        if self.hidden_hidden:
            allowed |= ~vis[:, None] & ~vis[None, :]
        allowed &= ~torch.eye(n, dtype=torch.bool, device=device)
        self.register_buffer("mask", allowed.to(dtype))
        self.couplings = nn.Parameter(torch.zeros(n, n, device=device, dtype=dtype), requires_grad=False)
        self.bias = nn.Parameter(torch.zeros(n, device=device, dtype=dtype), requires_grad=False)
        self.register_buffer("data_mean", None)
        self.register_buffer("chains", None)
        self.history_: list[dict[str, float]] = []
        self._init_couplings(generator)

    def _init_couplings(self, generator: torch.Generator | None) -> None:
        n = self.n_visible + self.n_hidden
        w = (
            torch.randn(n, n, generator=generator, device=self.mask.device, dtype=self.mask.dtype)
            * self.init_std
        )
        self.couplings.copy_(torch.triu(w, 1) + torch.triu(w, 1).T).mul_(self.mask)
        self.bias.zero_()
        self._velocity = [torch.zeros_like(self.couplings), torch.zeros_like(self.bias)]

    @property
    def effective_couplings(self) -> Tensor:
        """The couplings the model uses: ``couplings * mask``. Entries the mask forbids (set by hand,
        say) are ignored by every computation (energy, free energy, Gibbs, exact and AIS log Z), so
        the mask is the one source of truth for the structure."""
        return self.couplings * self.mask

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.couplings.device

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype."""
        return self.couplings.dtype

    def _groups(self, reverse: bool = False) -> list[slice]:
        """Update groups of a Gibbs sweep: single units where a layer has lateral couplings."""
        nv, n = self.n_visible, self.n_visible + self.n_hidden
        groups = [slice(i, i + 1) for i in range(nv)] if self.visible_visible else [slice(0, nv)]
        if self.n_hidden:
            groups += [slice(i, i + 1) for i in range(nv, n)] if self.hidden_hidden else [slice(nv, n)]
        return groups[::-1] if reverse else groups

    # ------------------------------------------------------------------- energy functions
    def energy(self, v: Tensor, h: Tensor | None = None) -> Tensor:
        """``E(v, h) = -1/2 x.J.x - a.x`` with ``x = (v, h)``, shape ``v.shape[:-1]``."""
        v = check_units("v", v, size=self.n_visible, like=self.couplings)
        if self.n_hidden:
            if h is None:
                raise ValueError(
                    f"h must be a tensor of shape (..., {self.n_hidden}) for a model with hidden units"
                )
            v = torch.cat(
                [v, check_units("h", h, size=self.n_hidden, like=self.couplings, size_name="n_hidden")], -1
            )
        return -0.5 * ((v @ self.effective_couplings) * v).sum(-1) - v @ self.bias

    def free_energy(self, v: Tensor) -> Tensor:
        """``F(v) = -log sum_h exp(-E(v, h))``, shape ``v.shape[:-1]``; ``log p(v) = -F(v) - log Z``.

        Closed form when hidden units do not interact, else a sum over all ``2**n_hidden`` states
        (at most 2**20).
        """
        v = check_units("v", v, size=self.n_visible, like=self.couplings)
        return self._free_energy(v, self.effective_couplings, self.bias)

    def _free_energy(self, v: Tensor, J: Tensor, a: Tensor) -> Tensor:
        nv = self.n_visible
        visible_term = 0.5 * ((v @ J[:nv, :nv]) * v).sum(-1) + v @ a[:nv]
        if not self.n_hidden:
            return -visible_term
        field = v @ J[:nv, nv:] + a[nv:]
        if not self.hidden_hidden:
            return -visible_term - nn.functional.softplus(field).sum(-1)
        if self.n_hidden > MAX_ENUMERATED_HIDDEN:
            raise ValueError(
                f"free_energy of a BoltzmannMachine with interacting hidden units sums 2**n_hidden states; "
                f"n_hidden={self.n_hidden} exceeds {MAX_ENUMERATED_HIDDEN}"
            )
        hs = _all_states(self.n_hidden, v.device, v.dtype)
        pair = 0.5 * ((hs @ J[nv:, nv:]) * hs).sum(-1)
        return -visible_term - torch.logsumexp(field @ hs.T + pair, dim=-1)

    def forward(self, v: Tensor) -> Tensor:
        """Same as :meth:`free_energy`, so that the model is an energy of ``v``."""
        return self.free_energy(v)

    def chain_energy(self, x: Tensor) -> Tensor:
        """``E(x)`` of full states ``x = (v, h)``: the energy the Gibbs chain on ``x`` samples."""
        return -0.5 * ((x @ self.effective_couplings) * x).sum(-1) - x @ self.bias

    def gibbs_sweep(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """One sweep over all units of full states ``x`` ``(n, n_visible + n_hidden)``, in place (the
        kernel of :class:`ebrl.samplers.GibbsSampler`; no argument checks)."""
        return self._sweep(x, self._groups(), generator)

    def _sweep(
        self,
        x: Tensor,
        groups: list[slice],
        generator: torch.Generator | None,
        params: tuple[Tensor, Tensor] | None = None,
        base: Tensor | None = None,
        beta: Tensor | float = 1.0,
    ) -> Tensor:
        """One Gibbs sweep over ``groups`` of ``(1-beta) base.x - beta E(x)`` (couplings, biases
        ``params``, default the model's), in place."""
        J, a = (self.effective_couplings, self.bias) if params is None else params
        for g in groups:
            field = x @ J[:, g] + a[g]
            if base is not None:
                field = beta * field + (1.0 - beta) * base[g]
            x[:, g] = bernoulli(torch.sigmoid(field), generator)
        return x

    def _mean_field(self, v: Tensor) -> Tensor:
        """Mean-field posterior ``q(h_j = 1) = mu_j`` by coordinate ascent (Salakhutdinov & Hinton 2009)."""
        nv, J = self.n_visible, self.effective_couplings
        field = v @ J[:nv, nv:] + self.bias[nv:]
        mu = torch.sigmoid(field)
        if self.hidden_hidden:
            for _ in range(self.n_mean_field):
                for j in range(self.n_hidden):
                    mu[:, j] = torch.sigmoid(field[:, j] + mu @ J[nv:, nv + j])
        return mu

    def _start_states(self, v: Tensor | None, n: int, generator: torch.Generator | None) -> Tensor:
        nv = self.n_visible
        if v is None:
            base = self._base_logits()
            v = bernoulli(torch.sigmoid(base[:nv]).expand(n, -1), generator)
        h = bernoulli(self._mean_field(v), generator) if self.n_hidden else v[:, :0]
        return torch.cat([v, h], -1)

    def gibbs(self, v: Tensor, k: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """``k`` Gibbs sweeps from visible states ``v`` (hidden units drawn from their mean-field
        posterior); returns the visible part, shape ``v.shape``. ``v`` is not modified."""
        v = check_units("v", v, size=self.n_visible, like=self.couplings)
        k = check_int("k", k, minimum=1)
        check_generator("generator", generator)
        with torch.no_grad(), small_batch_threads(v.numel()):
            x = self._start_states(v.reshape(-1, self.n_visible), 0, generator)
            x = GibbsSampler(k).run_chains(self, x, generator).samples[0]
        return x[:, : self.n_visible].reshape(v.shape)

    def sample(self, n: int, n_gibbs: int = 1000, generator: torch.Generator | None = None) -> Tensor:
        """``n`` visible samples after ``n_gibbs`` sweeps from base-rate start states."""
        n, n_gibbs = check_int("n", n, minimum=1), check_int("n_gibbs", n_gibbs, minimum=1)
        check_generator("generator", generator)
        with torch.no_grad(), small_batch_threads(n * self.n_visible):
            x = self._start_states(None, n, generator)
            x = GibbsSampler(n_gibbs).run_chains(self, x, generator).samples[0]
        return x[:, : self.n_visible]

    def mean_field_reconstruct(self, v: Tensor) -> Tensor:
        """``p(v_i = 1 | v_-i, h = mu(v))`` with ``mu`` the mean-field posterior (denoising)."""
        v = check_units("v", v, size=self.n_visible, like=self.couplings)
        flat = v.reshape(-1, self.n_visible)
        x = torch.cat([flat, self._mean_field(flat)], -1) if self.n_hidden else flat
        logits = x @ self.effective_couplings[:, : self.n_visible] + self.bias[: self.n_visible]
        return torch.sigmoid(logits).reshape(v.shape)

    # ----------------------------------------------------------------------------- training
    # fit / partial_fit (PCD on binary data) come from BoltzmannEstimator; these are its hooks.
    def _reset(self, data: Tensor, generator: torch.Generator | None) -> None:
        self._init_couplings(generator)
        self.bias[: self.n_visible] = base_rate_logits(data)
        self.data_mean, self.chains = data.mean(0), None

    def _features(self, data: Tensor) -> Tensor:
        return self._mean_field(data)

    def _train(self, data: Tensor, n_epochs: int, generator: torch.Generator | None, schedule: bool) -> None:
        n, bs = data.shape[0], min(self.batch_size, data.shape[0])
        if self.chains is None:
            self.chains = self._start_states(self._random_rows(data, generator), 0, generator)
        sampler = GibbsSampler(self.n_gibbs)
        with torch.no_grad(), small_batch_threads(self.n_chains * len(self.bias)):
            for _ in self._epochs(n_epochs, "BoltzmannMachine PCD"):
                shuffled = self._shuffled(data, generator)
                for i in range(0, n, bs):
                    v0 = shuffled[i : i + bs]
                    x0 = torch.cat([v0, self._mean_field(v0)], -1) if self.n_hidden else v0
                    xk = sampler.run(self, self.chains, generator)
                    # Gradient of the log-likelihood: <x x^T>_data - <x x^T>_model on allowed couplings.
                    grad_j = torch.addmm(xk.T @ xk, x0.T, x0, beta=-1.0 / len(xk), alpha=1.0 / len(x0))
                    grad_j.mul_(self.mask).add_(self.couplings, alpha=-self.weight_decay)
                    grad_a = x0.mean(0) - xk.mean(0)
                    vel_j, vel_a = self._velocity
                    vel_j.mul_(self.momentum).add_(grad_j, alpha=self.learning_rate)
                    vel_a.mul_(self.momentum).add_(grad_a, alpha=self.learning_rate)
                    self.couplings.add_(vel_j)
                    self.bias.add_(vel_a)
                self.history_.append({"epoch": float(len(self.history_) + 1)})

    # ------------------------------------------------------------------ partition function
    def log_z_layers(self) -> dict[str, int]:
        """``"all"`` units always; one layer alone when the other has no lateral couplings."""
        layers = {"all": self.n_visible + self.n_hidden}
        if not self.hidden_hidden or not self.n_hidden:
            layers["visible"] = self.n_visible
        if self.n_hidden and not self.visible_visible:
            layers["hidden"] = self.n_hidden
        return layers

    def log_marginal(self, layer: str, states: Tensor) -> Tensor:
        """``-E`` for full states, ``-F`` for visible ones, the analogous sum for hidden ones."""
        J, a, nv = self.effective_couplings.to(states.dtype), self.bias.to(states.dtype), self.n_visible
        if layer == "all":
            return 0.5 * ((states @ J) * states).sum(-1) + states @ a
        if layer == "visible":
            return -self._free_energy(states, J, a)
        if layer == "hidden":
            pair = 0.5 * ((states @ J[nv:, nv:]) * states).sum(-1) + states @ a[nv:]
            return pair + nn.functional.softplus(states @ J[nv:, :nv] + a[:nv]).sum(-1)
        raise ValueError(f"layer must be one of {list(self.log_z_layers())}, got {layer!r}")

    def _base_logits(self, data: Tensor | None = None) -> Tensor:
        if data is None and self.data_mean is not None:
            data = self.data_mean[None]
        visible = base_rate_logits(data) if data is not None else self.bias[: self.n_visible].clone()
        return torch.cat([visible, torch.zeros(self.n_hidden, device=self.device, dtype=self.dtype)])

    def ais_path(self, data: Tensor | None = None, dtype: torch.dtype | None = None) -> BMAISPath:
        """AIS path from independent units with base-rate visible biases (and zero hidden biases)."""
        if data is not None:
            data, _ = check_data(
                "data", data, n_features=self.n_visible, device=self.device, dtype=self.dtype, values="unit"
            )
        return BMAISPath(self, self._base_logits(data).to(dtype or self.dtype))


class BMAISPath:
    """``f_beta(x) = exp((1-beta) a_A.x + beta (1/2 x.J.x + a.x))``; ``log Z_A = sum softplus(a_A)``."""

    def __init__(self, model: BoltzmannMachine, base: Tensor) -> None:
        self.model, self.base = model, base
        self.J, self.a = model.effective_couplings.to(base.dtype), model.bias.to(base.dtype)
        self.state_size = len(base)
        self.log_z_base = float(nn.functional.softplus(base).sum())

    def sample_base(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` exact draws of the base model p_A (independent units)."""
        return bernoulli(torch.sigmoid(self.base).expand(n, -1), generator)

    def log_f(self, x: Tensor, betas: Tensor) -> Tensor:
        """log f_beta(x) of the states ``x`` at each inverse temperature in ``betas``, ``(len(betas), n)``."""
        model_term = 0.5 * ((x @ self.J) * x).sum(-1) + x @ self.a
        beta = betas[:, None]
        return (1.0 - beta) * (x @ self.base) + beta * model_term

    def transition(
        self, x: Tensor, beta: Tensor, generator: torch.Generator | None, reverse: bool = False
    ) -> Tensor:
        # A systematic scan; its time reversal (for reverse AIS) is the scan in the opposite order.
        """One Gibbs sweep leaving p_beta invariant (``reverse`` sweeps in the opposite order)."""
        groups = self.model._groups(reverse=reverse)
        return self.model._sweep(x.clone(), groups, generator, (self.J, self.a), self.base, beta)


def _all_states(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    index = torch.arange(2**n, device=device)
    return ((index[:, None] >> torch.arange(n, device=device)) & 1).to(dtype)
