"""Training for energies of data: contrastive divergence, denoising score matching, a fit loop,
weight averaging."""

from ebrl.training.averaging import WeightAverage
from ebrl.training.fit import fit
from ebrl.training.objectives import ContrastiveDivergence, DenoisingScoreMatching

__all__ = ["ContrastiveDivergence", "DenoisingScoreMatching", "WeightAverage", "fit"]
