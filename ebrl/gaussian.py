"""A residual energy on a Gaussian base: the noise-conditional energy the heads benchmark measured
best (docs/architecture.md, "Where each concept lives").

E(x | k, sigma) = 1/2 (x - mu_k)^T (Sigma_k + sigma^2 I)^-1 (x - mu_k) + r_theta(x | c)

The quadratic is the exact energy of class k's Gaussian fit blurred by noise of std sigma, so with
a zero residual Tweedie's formula x - sigma^2 ∇E is the linear MMSE (Wiener) denoiser and the
energy is a Mahalanobis anomaly score. The MLP residual r_theta (zero at initialisation) learns
what is not Gaussian, by denoising score matching (``DenoisingScoreMatching(noise_conditional=True)``).
The context c is [one-hot class (with more than one class), log sigma].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ebrl.energies import Energy, MLPEnergy, _broadcast_context
from ebrl.validation import check_int, check_tensor


class GaussianResidualEnergy(Energy):
    """Noise-conditional energy: a per-class Gaussian quadratic plus a learned MLP residual.

    Args:
        means: mu_k, the class means, shape ``(n_classes, dim)`` (one class: ``(1, dim)``).
        covariances: Sigma_k, symmetric positive semi-definite, shape ``(n_classes, dim, dim)``
            (eigenvalues are floored at ``min_eigenvalue``).
        hidden_sizes: widths of the residual MLP r_theta.
        activation: activation of the residual MLP (smooth: its input gradient is the score).
        min_eigenvalue: floor on Sigma_k's eigenvalues (a rank-deficient fit stays invertible).
    """

    def __init__(
        self, means: Tensor, covariances: Tensor,  # the Gaussian base
        hidden_sizes: Sequence[int] = (256, 256), activation: str = "silu",  # the residual
        min_eigenvalue: float = 1e-6,
    ) -> None:  # fmt: skip
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.get_default_dtype())
        covariances = torch.as_tensor(covariances, dtype=means.dtype)
        if means.dim() != 2 or covariances.shape != (*means.shape, means.shape[1]):
            raise ValueError(
                "means must have shape (n_classes, dim) and covariances (n_classes, dim, dim), got "
                f"{tuple(means.shape)} and {tuple(covariances.shape)}"
            )
        check_tensor("means", means)
        if not (torch.isfinite(means).all() and torch.isfinite(covariances).all()):
            raise ValueError("means and covariances must be finite")
        self.n_classes, self.x_dim = int(means.shape[0]), int(means.shape[1])
        self.context_dim = (self.n_classes if self.n_classes > 1 else 0) + 1
        # Sigma_k = U diag(lam) U^T once: every energy is then a rotation and a diagonal scale.
        # (in float64: small eigenvalues of a nearly singular fit keep their precision)
        lam, u = torch.linalg.eigh(0.5 * (covariances + covariances.transpose(-1, -2)).double())
        self.register_buffer("mu", means)
        self.register_buffer("lam", lam.clamp_min(min_eigenvalue).to(means.dtype))
        self.register_buffer("u", u.to(means.dtype))
        self.residual = MLPEnergy(self.x_dim, hidden_sizes, activation, context_dim=self.context_dim)
        last = self.residual.net[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    @classmethod
    def from_data(
        cls, x: Tensor, labels: Tensor | None = None, shrinkage: float = 0.0, **kwargs: object
    ) -> GaussianResidualEnergy:
        """Fit mu_k and Sigma_k to data ``x`` ``(n, dim)`` (per class with integer ``labels``
        ``(n,)`` in 0..K-1), with optional shrinkage of Sigma_k toward its mean variance times I
        (``shrinkage`` in [0, 1]; Ledoit-Wolf style). ``kwargs`` go to the constructor."""
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
        check_tensor("x", x)
        if x.dim() != 2 or x.shape[0] < 2:
            raise ValueError(f"x must have shape (n, dim) with n >= 2, got {tuple(x.shape)}")
        if not 0.0 <= float(shrinkage) <= 1.0:
            raise ValueError(f"shrinkage must lie in [0, 1], got {shrinkage!r}")
        labels = torch.zeros(x.shape[0], dtype=torch.long) if labels is None else torch.as_tensor(labels)
        n_classes = check_int("number of classes", int(labels.max()) + 1, minimum=1)
        means, covs = [], []
        for k in range(n_classes):
            xk = x[labels == k]
            if xk.shape[0] < 2:
                raise ValueError(f"class {k} has {xk.shape[0]} examples; each class needs at least 2")
            cov = torch.cov(xk.T).reshape(x.shape[1], x.shape[1])
            target = cov.diagonal().mean() * torch.eye(x.shape[1], dtype=x.dtype)
            means.append(xk.mean(0))
            covs.append((1 - shrinkage) * cov + shrinkage * target)
        return cls(torch.stack(means), torch.stack(covs), **kwargs)  # type: ignore[arg-type]

    def quadratic(self, x: Tensor, context: Tensor) -> Tensor:
        """The Gaussian part 1/2 (x - mu_k)^T (Sigma_k + sigma^2 I)^-1 (x - mu_k), shape ``x.shape[:-1]``."""
        sigma2 = context[..., -1:].mul(2).exp()[..., None]
        z = torch.einsum("...d,kde->...ke", x, self.u) - torch.einsum("kd,kde->ke", self.mu, self.u)
        quad = 0.5 * (z * z / (self.lam + sigma2)).sum(-1)
        return quad[..., 0] if self.n_classes == 1 else (quad * context[..., : self.n_classes]).sum(-1)

    def energy(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        check_tensor("x", x, last_dim=self.x_dim)
        if context is None:
            raise ValueError(
                f"context is required: [one-hot class (n_classes > 1), log sigma], width {self.context_dim}"
            )
        context = _broadcast_context(context, x, self.context_dim)  # checked, over the chain dims
        return self.quadratic(x, context) + self.residual.energy(x, context)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        return self.energy(x, context)
