"""ebrl: energy-based reinforcement learning.

The core: energies E(x | c) (lower is more plausible), batched MCMC samplers and the Boltzmann
policy pi(a|s) ∝ exp(-E(s, a)/alpha), on torch and numpy only. The agents (``ebrl.agents``), the
Gymnasium tasks (``ebrl.envs``) and the ``ebrl`` command (``ebrl.experiments``) install under this
name too; see docs/architecture.md, "Layers (imports only point down)". ``import ebrl`` imports
nothing heavy: the names below load on first use (PEP 562), so ``import ebrl.envs`` needs
gymnasium and numpy alone.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ebrl.energies import Energy, MLPEnergy, StateActionEnergy
    from ebrl.errors import NonFiniteError
    from ebrl.policy import BoltzmannPolicy

_HOME = {
    "BoltzmannPolicy": "ebrl.policy",
    "Energy": "ebrl.energies",
    "MLPEnergy": "ebrl.energies",
    "NonFiniteError": "ebrl.errors",
    "StateActionEnergy": "ebrl.energies",
}
__all__ = ["BoltzmannPolicy", "Energy", "MLPEnergy", "NonFiniteError", "StateActionEnergy"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _HOME:
        value = getattr(importlib.import_module(_HOME[name]), name)
        globals()[name] = value  # once loaded, a plain module attribute
        return value
    raise AttributeError(f"module 'ebrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
