"""The figures of the documentation site that no benchmark writes: ``docs/img/energy_landscape.png``.

    python -m ebrl.experiments.docs_figures

The energy is the hand-written one of the Gymnasium tutorial (docs/tutorials/gymnasium.md): at
a MultiGoal state, E(s, a) = min_g |s + a - g|^2, four valleys. The left panel is the energy over
the action box, the middle the Boltzmann density exp(-E/alpha) it defines, the right the actions
the batched MALA search draws from it (many chains of one state), which land in every valley.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ebrl import BoltzmannPolicy, Energy
from ebrl.samplers import MALA

OUT = Path(__file__).resolve().parents[1] / "docs" / "img" / "energy_landscape.png"
GOALS = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 5.0], [0.0, -5.0]])


class NearestGoalEnergy(Energy):
    """E(s, a) = min_g |s + a - g|^2 / scale (the tutorial's energy)."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.x_dim, self.context_dim, self.scale = 2, 2, scale
        self.register_buffer("goals", GOALS.clone())

    def energy(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        assert context is not None
        landing = context.unsqueeze(-2) + x if x.dim() > context.dim() else context + x
        return ((landing[..., None, :] - self.goals) ** 2).sum(-1).min(-1).values / self.scale


def main() -> None:
    torch.manual_seed(0)
    alpha, state = 0.5, torch.tensor([[0.0, 0.0]])
    energy = NearestGoalEnergy()
    grid = torch.linspace(-1, 1, 201)
    aa = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(1, -1, 2)
    with torch.no_grad():
        e = energy.energy(aa, state).reshape(201, 201).numpy()
    density = np.exp(-(e - e.min()) / alpha)
    density /= density.sum() * (2 / 200) ** 2
    policy = BoltzmannPolicy(energy, MALA(n_steps=200, adapt_steps=50), temperature=alpha)
    actions = policy.sample(state, n=2000, generator=torch.Generator().manual_seed(0))[0].numpy()

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), constrained_layout=True)
    extent = (-1, 1, -1, 1)
    for ax, img, title in ((axes[0], e, "energy E(s, a)"), (axes[1], density, "π(a|s) ∝ exp(−E/α)")):
        im = ax.imshow(img, origin="lower", extent=extent, cmap="viridis")
        fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_title(title)
    axes[2].imshow(density, origin="lower", extent=extent, cmap="Greys", alpha=0.6)
    axes[2].scatter(actions[:, 0], actions[:, 1], s=3, c="tab:red", alpha=0.5,
                    label="MALA draws (2000 chains)")
    axes[2].legend(loc="center", fontsize=8)
    axes[2].set_title("actions drawn by batched MALA")
    for ax in axes:
        ax.set_xlabel("action a₁ (normalised to [−1, 1])")
        ax.set_ylabel("action a₂")
    fig.suptitle(f"MultiGoal at the start s = (0, 0), α = {alpha}: "
                 "one valley toward each goal, every mode sampled")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
