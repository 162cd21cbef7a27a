"""A kernel density energy: E(x | c) = -log p(x | c) of a Gaussian kernel density estimate.

p(y) = 1/n sum_i N(y; y_i, h^2 Sigma), with y = x (or y = [x, c] for a conditional energy),
Sigma the data's covariance (Ledoit-Wolf shrunk, or only its diagonal) and h the bandwidth. The
energy is normalised (it is an exact negative log density), so energies of different bandwidths
and metrics are comparable, and h (and the metric) can be chosen by the leave-one-out
log-likelihood of the reference points themselves: every point is in turn the validation split,
no outlier and no label is needed. With a context c, E(x | c) = -log p(x, c) + log p(c), where
p(c) is the joint estimate's exact marginal (the same kernels restricted to c): the conditional
removes each context's own rarity, as -log pi(a|s) does for a policy.

Small h makes the energy local (close to a nearest-neighbour distance, what LOF and kNN
detectors use), large h makes it global (close to a Mahalanobis distance, the Gaussian fit).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebrl.energies import Energy, _joint_input
from ebrl.validation import (
    check_choice,
    check_finite,
    check_generator,
    check_int,
    check_positive_float,
    check_tensor,
)

METRICS = ("whitened", "diagonal", "identity", "auto")


def ledoit_wolf(y: Tensor) -> Tensor:
    """Ledoit-Wolf covariance: the sample covariance (1/n) shrunk toward (trace/d) I by the weight
    that minimises the expected Frobenius error (Ledoit & Wolf 2004).

    Args:
        y: the data, a floating-point tensor ``(n, d)`` with n >= 2 rows; returns ``(d, d)``.
    """
    check_tensor("y", y, min_dim=2)
    if y.dim() != 2 or y.shape[0] < 2:
        raise ValueError(f"y must have shape (n >= 2, d), got {tuple(y.shape)}")
    n, d = y.shape
    yc = y - y.mean(0)
    s = yc.T @ yc / n
    mu = s.diagonal().mean()
    d2 = ((s - mu * torch.eye(d, dtype=y.dtype, device=y.device)) ** 2).sum()
    # b2 = 1/n^2 sum_k |y_k y_k^T - S|_F^2, expanded so that no (n, d, d) tensor is built
    b2 = ((yc**2).sum(1) ** 2).sum() / n**2 - (s**2).sum() / n
    shrink = torch.clamp(b2 / d2, 0.0, 1.0) if float(d2) > 0 else torch.ones((), dtype=y.dtype)
    return (1 - shrink) * s + shrink * mu * torch.eye(d, dtype=y.dtype, device=y.device)


def _whitening(y: Tensor, metric: str, floor: float) -> tuple[Tensor, Tensor, float]:
    """(m, P, log det Sigma) such that (y - m) P is white for Sigma = U diag(lam) U^T."""
    if metric == "identity":
        lam = torch.ones(y.shape[1], dtype=y.dtype, device=y.device)
        proj = torch.diag(lam)
    elif metric == "diagonal":
        lam = y.var(0, unbiased=False).clamp_min(floor)
        proj = torch.diag(lam.rsqrt())
    else:
        lam, u = torch.linalg.eigh(ledoit_wolf(y))
        lam = lam.clamp_min(floor)
        proj = u * lam.rsqrt()
    return y.mean(0), proj, float(lam.log().sum())


def _sq_dist(z: Tensor, ref: Tensor) -> Tensor:
    """Squared distances ``(m, n)`` between rows of ``z`` and ``ref`` (clamped at 0)."""
    return ((z * z).sum(-1, keepdim=True) + (ref * ref).sum(-1) - 2 * z @ ref.T).clamp_min(0.0)


def _log_kde(d2: Tensor, h: float, dim: int, log_det: float, n: int) -> Tensor:
    """log (1/n) sum_i N(y; y_i, h^2 Sigma) from whitened squared distances ``(..., n_ref)``
    (leave-one-out: the own point's entry is +inf and n = n_ref - 1)."""
    lse = torch.logsumexp(-d2 / (2 * h * h), dim=-1)
    return lse - math.log(n) - dim * math.log(h) - 0.5 * log_det - 0.5 * dim * math.log(2 * math.pi)


class KernelDensityEnergy(Energy):
    """E(x | c) = -log p(x | c) of a Gaussian kernel density estimate over reference points.

    Args:
        data: the reference points x_i (inliers, e.g. training data or replay-buffer states),
            shape ``(n, x_dim)`` with n >= 3.
        context: optional contexts c_i of the same rows, shape ``(n, context_dim)``; the energy
            is then conditional, -log p(x | c) (e.g. x = actions, c = states).
        bandwidth: h in whitened units, a float > 0, or ``"loo"`` to pick it from ``grid`` by the
            leave-one-out log-likelihood of the reference points (inliers only).
        metric: the kernel's shape Sigma: ``"whitened"`` (Ledoit-Wolf covariance of the data),
            ``"diagonal"`` (per-feature variances), ``"identity"`` (Sigma = I: for data already
            on a common scale, e.g. standardised features) or ``"auto"`` (whichever of
            ``"whitened"`` and ``"diagonal"`` has the higher leave-one-out log-likelihood).
        grid: candidate bandwidths for ``"loo"``, in whitened units (the data has unit variance
            along every axis of Sigma there): 0.01 to 10 by default, from nearest-neighbour-like
            to nearly one Gaussian.
        max_points: keep at most this many reference points (a random subset); bounds the
            cost of each energy, O(max_points) per input.
        max_selection: at most this many points enter the leave-one-out selection (O(m^2)).
        floor: lower bound on Sigma's eigenvalues (constant features stay invertible).
        scales: multiples of the bandwidth; the energy is the mean of the energies at bandwidths
            ``scale * h`` (a multi-scale ensemble, like the noise levels of a noise-conditional
            energy). With the default ``(1.0,)`` it is the exact -log p; with more scales it is
            a log-geometric mean of densities (unnormalised; anomaly ranking only).
        generator: random source of the subsets.
    """

    def __init__(
        self,
        data: Tensor,
        context: Tensor | None = None,
        *,
        bandwidth: float | str = "loo",
        metric: str = "auto",
        grid: tuple[float, ...] = tuple(float(r) for r in torch.logspace(-2, 1, 61).tolist()),
        max_points: int = 5000,
        max_selection: int = 2000,
        floor: float = 1e-6,
        scales: tuple[float, ...] = (1.0,),
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        data = check_finite("data", check_tensor("data", data, min_dim=2))
        if data.dim() != 2 or data.shape[0] < 3:
            raise ValueError(f"data must have shape (n >= 3, x_dim), got {tuple(data.shape)}")
        if context is not None:
            context = check_finite("context", check_tensor("context", context, min_dim=2))
            if context.dim() != 2 or context.shape[0] != data.shape[0]:
                raise ValueError(
                    f"context must have shape (n, context_dim) with n = {data.shape[0]} (data's rows), "
                    f"got {tuple(context.shape)}"
                )
        metric = check_choice("metric", metric, METRICS)
        if isinstance(bandwidth, str):
            check_choice("bandwidth", bandwidth, ("loo",))
        else:
            bandwidth = check_positive_float("bandwidth", bandwidth)
        if not isinstance(grid, tuple | list) or len(grid) == 0:
            raise TypeError(f"grid must be a non-empty tuple of floats, got {grid!r}")
        grid = tuple(check_positive_float("grid[i]", r) for r in grid)
        if not isinstance(scales, tuple | list) or len(scales) == 0:
            raise TypeError(f"scales must be a non-empty tuple of floats, got {scales!r}")
        self.scales = tuple(check_positive_float("scales[i]", r) for r in scales)
        max_points = check_int("max_points", max_points, minimum=3)
        max_selection = check_int("max_selection", max_selection, minimum=3)
        floor = check_positive_float("floor", floor)
        generator = check_generator("generator", generator)

        self.x_dim, self.context_dim = int(data.shape[1]), 0 if context is None else int(context.shape[1])
        y = data.double() if context is None else torch.cat([data, context], 1).double()
        if y.shape[0] > max_points:
            y = y[torch.randperm(y.shape[0], generator=generator)[:max_points]]
        sel = y[torch.randperm(y.shape[0], generator=generator)[:max_selection]]
        fits = {
            m: self._select(y, sel, m, bandwidth, grid, floor)
            for m in (("whitened", "diagonal") if metric == "auto" else (metric,))
        }
        self.metric = max(fits, key=lambda m: fits[m][1])
        self.bandwidth, self.loo_log_likelihood = fits[self.metric]
        for part, rows in (("joint", y), ("marginal", y[:, self.x_dim :])):
            if part == "marginal" and not self.context_dim:
                break
            mean, proj, log_det = _whitening(rows, self.metric, floor)
            self.register_buffer(f"{part}_mean", mean)
            self.register_buffer(f"{part}_proj", proj)
            self.register_buffer(f"{part}_ref", (rows - mean) @ proj)
            setattr(self, f"{part}_log_det", log_det)

    def _select(
        self, y: Tensor, sel: Tensor, metric: str,  # the points, the selection subset
        bandwidth: float | str, grid: tuple[float, ...], floor: float,
    ) -> tuple[float, float]:  # fmt: skip
        """(h, mean leave-one-out log-likelihood of ``sel``) for one metric."""
        mean, proj, log_det = _whitening(y, metric, floor)
        z = (sel - mean) @ proj
        d2 = _sq_dist(z, z).fill_diagonal_(math.inf)
        if self.context_dim:
            mean_c, proj_c, log_det_c = _whitening(y[:, self.x_dim :], metric, floor)
            zc = (sel[:, self.x_dim :] - mean_c) @ proj_c
            d2c = _sq_dist(zc, zc).fill_diagonal_(math.inf)
        candidates = [bandwidth] if isinstance(bandwidth, float) else list(grid)
        best = (math.nan, -math.inf)
        for h in candidates:
            ll = _log_kde(d2, h, y.shape[1], log_det, len(sel) - 1)
            if self.context_dim:
                ll = ll - _log_kde(d2c, h, self.context_dim, log_det_c, len(sel) - 1)
            value = float(ll.mean())
            if value > best[1]:
                best = (float(h), value)
        return best

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """-log p(x) (or -log p(x | context)) for ``x`` ``(..., x_dim)``: shape ``x.shape[:-1]``."""
        y = _joint_input(x, context, self.x_dim, self.context_dim).double()
        flat = y.reshape(-1, y.shape[-1])
        e = -self._log_density(flat, "joint")
        if self.context_dim:
            e = e + self._log_density(flat[:, self.x_dim :], "marginal")
        return e.reshape(x.shape[:-1]).to(x.dtype)

    def _log_density(self, rows: Tensor, part: str) -> Tensor:
        ref: Tensor = getattr(self, f"{part}_ref")
        z = (rows - getattr(self, f"{part}_mean")) @ getattr(self, f"{part}_proj")
        log_det: float = getattr(self, f"{part}_log_det")
        d2 = _sq_dist(z, ref)
        parts = [_log_kde(d2, r * self.bandwidth, rows.shape[-1], log_det, ref.shape[0]) for r in self.scales]
        return parts[0] if len(parts) == 1 else torch.stack(parts).mean(0)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.energy(x, context)
