"""ebrl's agents inside rl-baselines3-zoo: ``sql`` and ``discrete_sql`` in rl_zoo3's ``train``.

Run it as rl_zoo3's ``train.py`` with every one of its options::

    pip install "ebrl[zoo]"
    python -m ebrl.experiments.zoo_train --algo sql --env Pendulum-v1 -n 20000 --eval-freq 2000

Without ``--conf-file`` the hyperparameters are the config shipped with ebrl for that algorithm
(``experiments/configs/sql.yaml``, ``discrete-sql.yaml``: rl_zoo3 reads their env entries and
ignores their ``ebrl_run`` section); ``--gym-packages ebrl.envs`` is added so that the ``ebrl/``
env ids exist. To use zoo's other scripts (``enjoy``, hyperparameter search) from your own code,
call :func:`register` first. See docs/architecture.md, "Where each concept lives".
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# rl_zoo3 name -> (ebrl config name, class name in ebrl.agents)
ZOO_ALGOS = {"sql": ("sql", "SQL"), "discrete_sql": ("discrete-sql", "DiscreteSQL")}
HINT = 'rl-baselines3-zoo is not installed: pip install "ebrl[zoo]" (or pip install rl_zoo3)'


def register() -> dict[str, type]:
    """Add ebrl's algorithms to rl_zoo3's algorithm table (``rl_zoo3.utils.ALGOS``, which its
    ``train``, ``enjoy`` and ``ExperimentManager`` share) and return that table."""
    import rl_zoo3.utils

    import ebrl.agents

    for zoo_name, (_, cls) in ZOO_ALGOS.items():
        rl_zoo3.utils.ALGOS[zoo_name] = getattr(ebrl.agents, cls)
    return rl_zoo3.utils.ALGOS


def _option(argv: Sequence[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def zoo_argv(argv: Sequence[str]) -> list[str]:
    """rl_zoo3's arguments with ebrl's defaults added: the shipped config of an ebrl algorithm
    when no ``--conf-file`` is given, and ``ebrl.envs`` among the ``--gym-packages``."""
    from ebrl.experiments.config import shipped_file

    out = list(argv)
    algo = _option(out, "--algo")
    if algo in ZOO_ALGOS and _option(out, "--conf-file", "-conf") is None:
        out += ["--conf-file", str(shipped_file("configs", ZOO_ALGOS[algo][0]))]
    if _option(out, "--gym-packages") is None:
        out += ["--gym-packages", "ebrl.envs"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run rl_zoo3's ``train`` with ebrl's algorithms registered; 2 with a hint if rl_zoo3 is missing."""
    try:
        import rl_zoo3.train
    except ImportError:
        print(f"error: {HINT}", file=sys.stderr)
        return 2
    register()
    saved = sys.argv
    sys.argv = ["rl_zoo3.train", *zoo_argv(sys.argv[1:] if argv is None else argv)]
    try:
        rl_zoo3.train.train()
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
