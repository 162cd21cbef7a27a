"""Partition functions of Boltzmann machines: exact enumeration and annealed importance sampling.

``log p(v) = -F(v) - log Z``: these functions give ``log Z`` for any model that implements the two
small protocols below (every model in :mod:`ebrl.boltzmann_machines` does).

* :func:`exact_log_z` enumerates all states of the model's smallest enumerable layer in chunks and
  sums the other layer out analytically (for an RBM, ``2**min(n_visible, n_hidden)`` terms).
* :func:`ais_log_z` is annealed importance sampling (Neal 2001) from a base-rate model along
  geometric averages ``f_beta = f_A^(1-beta) f_B^beta`` (Salakhutdinov & Murray 2008), many runs in
  parallel as one batch, with confidence bounds and optionally reverse AIS (Burda, Grosse &
  Salakhutdinov 2015), whose estimate errs on the other side.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ebrl.estimators import log_mean_bounds

__all__ = ["AISPath", "AISResult", "Enumerable", "ais_log_z", "beta_schedule", "exact_log_z"]


SMALL_BATCH = 2**18  # entries in a batch of states up to which loops run on one intra-op thread


@contextmanager
def small_batch_threads(n_entries: int) -> Iterator[None]:
    """Run a loop of many small tensor operations on one intra-op thread, then restore the setting.

    With two or more threads the BLAS behind a small ``mm`` synchronises its threads at every call;
    on a busy machine each synchronisation waits for a time slice, and a 14,500-step AIS run on a
    64 x 20 RBM took 23-35 s instead of 0.4 s here. Large batches keep every thread. (scikit-learn's
    KMeans limits its BLAS threads the same way.) Exact enumeration in chunks of 2**18 numbers took
    1.0 s on one thread and 35 s on two. ``torch.set_num_threads`` is process-wide.
    """
    threads = torch.get_num_threads()
    if n_entries > SMALL_BATCH or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@runtime_checkable
class Enumerable(Protocol):
    """A model whose ``log Z`` can be summed over the states of one layer."""

    def log_z_layers(self) -> dict[str, int]:
        """Layers that can be enumerated, with their number of binary units."""
        ...

    def log_marginal(self, layer: str, states: Tensor) -> Tensor:
        """``log sum_rest exp(-E)`` for each row of binary ``states`` of ``layer``, in ``states.dtype``."""
        ...


class AISPath(Protocol):
    """The annealing path ``f_beta(x)`` from a tractable base model (beta = 0) to the model (beta = 1)."""

    log_z_base: float
    state_size: int

    def sample_base(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` exact samples of the base model."""
        ...

    def log_f(self, x: Tensor, betas: Tensor) -> Tensor:
        """Unnormalised log density at each beta: shape ``(len(betas), len(x))``."""
        ...

    def transition(
        self, x: Tensor, beta: Tensor, generator: torch.Generator | None, reverse: bool = False
    ) -> Tensor:
        """One MCMC step that leaves ``f_beta`` invariant; ``reverse`` runs its time reversal."""
        ...


@runtime_checkable
class Annealable(Protocol):
    def ais_path(self, data: Tensor | None = None, dtype: torch.dtype | None = None) -> AISPath:
        """The model's annealing path for :func:`ais_log_z` (base model, log f_beta, transitions)."""
        ...


def _check_model(model: object, protocol: type, what: str) -> None:
    if not isinstance(model, protocol):
        raise TypeError(
            f"model must be a Boltzmann machine that supports {what} (RBM, GaussianBernoulliRBM, "
            f"BoltzmannMachine), got {type(model).__name__}"
        )


def _check_dtype(dtype: object) -> None:
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")


def _model_device(model: object) -> torch.device:
    params = list(model.parameters()) if hasattr(model, "parameters") else []
    return params[0].device if params else torch.device("cpu")


def exact_log_z(
    model: Enumerable,
    *,
    max_units: int = 24,
    chunk_size: int | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Exact ``log Z`` by enumerating the states of the model's smallest enumerable layer.

    For an RBM the smaller of the two layers is enumerated and the other summed analytically
    (``log Z = logsumexp_h [c.h + sum_i softplus(b_i + W_i.h)]``), so the cost is
    ``2**min(n_visible, n_hidden)`` rows, processed ``chunk_size`` at a time on the model's device.

    Args:
        model: a model implementing :class:`Enumerable` (any model of ``ebrl.boltzmann_machines``).
        max_units: refuse layers with more units than this (``2**24`` states is a few seconds).
        chunk_size: states per chunk; ``None`` picks one that keeps a chunk near 2**18 numbers.
        dtype: the precision of the sum (float64 by default, whatever the model's dtype).

    Returns:
        ``log Z`` as a Python float.
    """
    _check_model(model, Enumerable, "exact enumeration")
    if isinstance(max_units, bool) or not isinstance(max_units, int) or not 1 <= max_units <= 40:
        raise ValueError(f"max_units must be an int in [1, 40], got {max_units!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be None or an int >= 1, got {chunk_size!r}")
    _check_dtype(dtype)
    layers = model.log_z_layers()
    layer, n_units = min(layers.items(), key=lambda item: item[1])
    if n_units > max_units:
        raise ValueError(
            f"exact_log_z enumerates 2**{n_units} states of layer {layer!r} (the smallest enumerable "
            f"layer; layers: {layers}), more than max_units={max_units} allows; use ais_log_z instead, "
            f"or raise max_units"
        )
    device = _model_device(model)
    total_units = sum(layers.values())
    if chunk_size is None:
        # A chunk's working set (states x the other layer's units) near 2**18 numbers stays in cache:
        # on a 64 x 20 RBM this was 1.6x faster than 2**22.
        chunk_size = max(1, min(2**n_units, 2**18 // max(1, total_units - n_units)))
    bits = 2 ** torch.arange(n_units, device=device, dtype=torch.int64)
    partial = []
    with torch.no_grad(), small_batch_threads(chunk_size * max(1, total_units - n_units)):
        for start in range(0, 2**n_units, chunk_size):
            index = torch.arange(start, min(start + chunk_size, 2**n_units), device=device)
            states = ((index[:, None] & bits) > 0).to(dtype)
            partial.append(torch.logsumexp(model.log_marginal(layer, states), dim=0))
        return float(torch.logsumexp(torch.stack(partial), dim=0))


def beta_schedule(kind: str = "salakhutdinov-murray", n_betas: int | None = None) -> Tensor:
    """Inverse temperatures ``0 = beta_0 < ... < beta_K = 1`` for AIS (float64, CPU).

    Args:
        kind: ``"salakhutdinov-murray"``: steps of 1/1000 to 0.5, 1/10,000 to 0.9 and 1/100,000 to
            1.0 (14,500 steps; Salakhutdinov & Murray 2008); with ``n_betas`` the same three pieces
            share ``n_betas`` steps in the same proportions. ``"linear"``: evenly spaced.
            ``"sigmoid"``: the sigmoid schedule of Grosse, Maddison & Salakhutdinov (2013), dense at
            both ends.
        n_betas: number of steps ``K`` (default 14,500 for Salakhutdinov-Murray, 1000 otherwise).
    """
    kinds = ("salakhutdinov-murray", "linear", "sigmoid")
    if kind not in kinds:
        raise ValueError(f"kind must be one of {list(kinds)}, got {kind!r}")
    if n_betas is not None and (isinstance(n_betas, bool) or not isinstance(n_betas, int) or n_betas < 1):
        raise ValueError(f"n_betas must be None or an int >= 1, got {n_betas!r}")
    if kind == "salakhutdinov-murray":
        counts = [500, 4000, 10000]
        if n_betas is not None:
            if n_betas < 3:
                raise ValueError(f"n_betas must be >= 3 for the salakhutdinov-murray schedule, got {n_betas}")
            counts = [max(1, round(n_betas * c / 14500)) for c in counts]
            counts[2] = n_betas - counts[0] - counts[1]
        edges = [0.0, 0.5, 0.9, 1.0]
        pieces = [
            torch.linspace(edges[i], edges[i + 1], counts[i] + 1, dtype=torch.float64)[:-1] for i in range(3)
        ]
        return torch.cat([*pieces, torch.ones(1, dtype=torch.float64)])
    n = 1000 if n_betas is None else n_betas
    t = torch.linspace(0.0, 1.0, n + 1, dtype=torch.float64)
    if kind == "linear":
        return t
    s = torch.sigmoid(4.0 * (2.0 * t - 1.0))  # delta = 4 as in Grosse et al. (2013)
    return (s - s[0]) / (s[-1] - s[0])


def _resolve_betas(betas: str | int | Sequence[float] | Tensor) -> Tensor:
    if isinstance(betas, str):
        return beta_schedule(betas)
    if isinstance(betas, int) and not isinstance(betas, bool):
        return beta_schedule("linear", betas)
    try:
        b = torch.as_tensor(betas, dtype=torch.float64).flatten().cpu()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(
            f"betas must be a schedule name, a number of linear steps or a sequence of floats, "
            f"got {type(betas).__name__}"
        ) from err
    if b.numel() < 2 or b[0] != 0.0 or b[-1] != 1.0 or bool((b[1:] < b[:-1]).any()):
        raise ValueError(
            f"betas must be non-decreasing from exactly 0.0 to exactly 1.0 with at least 2 entries, "
            f"got {b.numel()} entries from {b[0].item() if b.numel() else None} "
            f"to {b[-1].item() if b.numel() else None}"
        )
    return b


@dataclass
class AISResult:
    """Estimate of ``log Z`` by AIS.

    Attributes:
        log_z: ``log Z_A + log mean(w)``: unbiased in ``Z``, so in expectation it underestimates
            ``log Z`` (the log-likelihood it gives errs on the optimistic side).
        log_z_lower, log_z_upper: ``log Z_A + log(mean(w) -/+ n_std * standard error)``, the bounds
            reported by Salakhutdinov & Murray (2008) (``-inf`` when the lower one is not positive).
        log_weights: the ``n_runs`` log importance weights ``log w``.
        log_z_base: ``log Z_A`` of the base-rate model.
        effective_sample_size: ``(sum w)^2 / sum w^2``.
        reverse_log_z: reverse-AIS estimate ``log Z_A - log mean(w_rev)`` (Burda et al. 2015) from
            approximate model samples; in expectation it overestimates ``log Z`` when the start
            samples are exact (the pessimistic side). ``None`` when not requested.
        reverse_log_weights: the reverse runs' log weights, or ``None``.
    """

    log_z: float
    log_z_lower: float
    log_z_upper: float
    log_weights: Tensor = field(repr=False)
    log_z_base: float
    effective_sample_size: float
    n_betas: int
    reverse_log_z: float | None = None
    reverse_log_weights: Tensor | None = field(default=None, repr=False)

    def __float__(self) -> float:
        return self.log_z


def _check_ais_args(
    n_runs: object, n_std: object, reverse_burn_in: object, generator: object, dtype: object
) -> None:
    _check_dtype(dtype)
    if isinstance(n_runs, bool) or not isinstance(n_runs, int) or n_runs < 1:
        raise ValueError(f"n_runs must be an int >= 1, got {n_runs!r}")
    if isinstance(n_std, bool) or not isinstance(n_std, int | float) or not n_std >= 0:
        raise ValueError(f"n_std must be a number >= 0, got {n_std!r}")
    if isinstance(reverse_burn_in, bool) or not isinstance(reverse_burn_in, int) or reverse_burn_in < 0:
        raise ValueError(f"reverse_burn_in must be an int >= 0, got {reverse_burn_in!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _reverse_ais(
    path: AISPath,
    b: Tensor,
    n_runs: int,
    reverse_init: Tensor | None,
    burn_in: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Log-weights of reverse AIS (Burda et al. 2015): from approximate model samples (``reverse_init``,
    or ``burn_in`` Gibbs steps at beta = 1 from the base model) down the schedule ``b`` to the base."""
    if reverse_init is None:
        x = path.sample_base(n_runs, generator)
        for _ in range(burn_in):
            x = path.transition(x, b[-1], generator)
    else:
        x = reverse_init.to(device=b.device, dtype=b.dtype)
    log_w = torch.zeros(len(x), device=b.device, dtype=b.dtype)
    for k in range(len(b) - 1, 0, -1):
        lf = path.log_f(x, b[k - 1 : k + 1])
        log_w += lf[0] - lf[1]
        if k > 1:
            x = path.transition(x, b[k - 1], generator, reverse=True)
    return log_w


def ais_log_z(
    model: Annealable,
    *,
    n_runs: int = 100,
    betas: str | int | Sequence[float] | Tensor = "salakhutdinov-murray",
    data: Tensor | None = None,
    n_std: float = 3.0,
    reverse: bool = False,
    reverse_init: Tensor | None = None,
    reverse_burn_in: int = 1000,
    dtype: torch.dtype = torch.float64,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AISResult:
    """Estimate ``log Z`` by annealed importance sampling (Neal 2001; Salakhutdinov & Murray 2008).

    The ``n_runs`` runs move together as one batch on the model's device: per temperature one
    vectorised Gibbs transition and one weight update, ``log w += log f_k(x) - log f_{k-1}(x)``.

    Args:
        model: a model with an ``ais_path`` method (RBM, GaussianBernoulliRBM, BoltzmannMachine).
        n_runs: number of AIS runs ``M`` (100 in Salakhutdinov & Murray 2008).
        betas: the schedule: a name for :func:`beta_schedule` (``"salakhutdinov-murray"``,
            ``"linear"``, ``"sigmoid"``), an int (that many linear steps) or an explicit sequence
            from 0.0 to 1.0.
        data: training data for the base-rate model ``p_A`` (visible biases ``log(p/(1-p))`` of the
            pixel means); ``None`` uses the base rates stored by ``fit``, or the model's own biases.
        n_std: width of the reported bounds in standard errors of ``mean(w)``.
        reverse: also run reverse AIS from approximate model samples (Burda et al. 2015).
        reverse_init: the ``n`` start states of reverse AIS (full states of the model, e.g. visible
            rows for an RBM); ``None`` runs ``reverse_burn_in`` Gibbs steps at beta = 1 from ``p_A``.
        reverse_burn_in: Gibbs steps that make the reverse start states when ``reverse_init`` is None.
        dtype: precision of the annealing (float64 by default: thousands of small increments).
        generator: random source, for reproducible runs.
        progress: show a progress bar over the temperatures (14,500 by default).

    Returns:
        An :class:`AISResult`; ``float(result)`` is the estimate of ``log Z``.
    """
    _check_model(model, Annealable, "AIS")
    _check_ais_args(n_runs, n_std, reverse_burn_in, generator, dtype)
    schedule = _resolve_betas(betas)
    path = model.ais_path(data=data, dtype=dtype)
    if reverse_init is not None and (
        not isinstance(reverse_init, Tensor)
        or reverse_init.ndim != 2
        or reverse_init.shape[1] != path.state_size
    ):
        shape = getattr(reverse_init, "shape", type(reverse_init).__name__)
        raise ValueError(
            f"reverse_init must be a tensor of shape (n, {path.state_size}) of model states, got {shape}"
        )
    device = _model_device(model)
    b = schedule.to(device=device, dtype=dtype)
    with torch.no_grad(), small_batch_threads(n_runs * path.state_size):
        x = path.sample_base(n_runs, generator)
        log_w = torch.zeros(n_runs, device=device, dtype=dtype)
        for k in tqdm(range(1, len(b)), desc="AIS", unit="beta", leave=False, disable=not progress):
            lf = path.log_f(x, b[k - 1 : k + 1])
            log_w += lf[1] - lf[0]
            if k < len(b) - 1:
                x = path.transition(x, b[k], generator)
        log_mean, log_low, log_high = log_mean_bounds(log_w, float(n_std))
        w = torch.exp(log_w - log_w.max())
        ess = float(w.sum() ** 2 / (w**2).sum())
        result = AISResult(
            log_z=path.log_z_base + log_mean,
            log_z_lower=path.log_z_base + log_low,
            log_z_upper=path.log_z_base + log_high,
            log_weights=log_w,
            log_z_base=path.log_z_base,
            effective_sample_size=ess,
            n_betas=len(b) - 1,
        )
        if reverse:
            log_w_rev = _reverse_ais(path, b, n_runs, reverse_init, reverse_burn_in, generator)
            rev_mean, _, _ = log_mean_bounds(log_w_rev, float(n_std))
            result.reverse_log_z = path.log_z_base - rev_mean
            result.reverse_log_weights = log_w_rev
    return result
