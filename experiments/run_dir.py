"""What `ebrl eval` and `ebrl plot` do with an existing run directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stable_baselines3.common.base_class import BaseAlgorithm

from experiments.config import RunConfig, algo_class, load_run_config
from experiments.evaluate import EvalResult, evaluate, save_gif


def run_name(env_id: str, algo: str, seed: int, stamp: str) -> str:
    """``<env>__<algo>__<seed>__<time>`` with the env id's ``/`` made file-name safe."""
    return f"{env_id.replace('/', '-')}__{algo}__{seed}__{stamp}"


def load_model(run_dir: str | Path, device: str = "auto", allow_pickle: bool = False
               ) -> tuple[RunConfig, BaseAlgorithm]:
    """The run's config and trained model, loaded without unpickling unless ``allow_pickle``
    (ConfigError if ``run_dir`` is not a run; ModelFileError if its model file is bad)."""
    import envs  # noqa: F401  (registers ebrl/...)
    from agents.common.safe_load import safe_load

    cfg = load_run_config(run_dir)
    path = Path(run_dir) / "model.zip"
    model = safe_load(algo_class(cfg.algo), path, device=device, allow_pickle=allow_pickle)
    return cfg, model


def plot_run(
    run_dir: str | Path,
    model: BaseAlgorithm | None = None,
    result: EvalResult | None = None,
    states: Sequence[Sequence[float]] | None = None,
    allow_pickle: bool = False,
) -> list[Path]:
    """Draw ``plots/learning_curve.png``, ``plots/energy_landscape.png`` (1-D/2-D Box actions)
    and ``plots/trajectories.png`` (2-D observations); return the files written."""
    from experiments.plots import PLOT_STATES, energy_landscape, learning_curve, trajectories

    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    if model is None:
        cfg, model = load_model(run_dir, allow_pickle=allow_pickle)
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    title = f"{cfg.algo} on {cfg.env_id}, seed {cfg.seed}"
    written = []
    if (run_dir / "metrics.csv").is_file():
        written.append(learning_curve(run_dir / "metrics.csv", out / "learning_curve.png", title))
    if states is None:
        states = PLOT_STATES.get(cfg.env_id)
    if states is None:
        import gymnasium as gym

        env = gym.make(cfg.env_id, **cfg.env_kwargs)
        states = [env.reset(seed=cfg.seed)[0].tolist()]
        env.close()
    landscape = energy_landscape(
        model, states, out / "energy_landscape.png", title=f"energy over actions: {title}"
    )
    if landscape is not None:
        written.append(landscape)
    if result is None:
        result = evaluate(model, cfg.env_id, max(cfg.n_eval_episodes, 50), seed=cfg.seed + 10_000,
                          env_kwargs=cfg.env_kwargs)
    paths = trajectories(result, cfg.env_id, out / "trajectories.png",
                         title=f"{title}: {len(result.returns)} stochastic episodes")
    if paths is not None:
        written.append(paths)
    return written


def eval_run(run_dir: str | Path, n_episodes: int, deterministic: bool, seed: int | None,
             gif: bool, allow_pickle: bool = False) -> dict[str, Any]:
    """Evaluate a saved run, write ``eval.json`` (and ``eval.gif`` of the first episode)."""
    cfg, model = load_model(run_dir, allow_pickle=allow_pickle)
    run_dir = Path(run_dir)
    seed = cfg.seed + 20_000 if seed is None else seed
    result = evaluate(model, cfg.env_id, n_episodes, seed=seed, deterministic=deterministic,
                      env_kwargs=cfg.env_kwargs, render=gif)
    summary = {"deterministic": deterministic, "seed": seed, **result.summary(), "returns": result.returns}
    if gif:
        try:
            path = save_gif(result.frames, run_dir / "eval.gif")
        except Exception as exc:  # an env that cannot render still gets its returns
            path, summary["gif_error"] = None, repr(exc)
        summary["gif"] = str(path) if path else None
    (run_dir / "eval.json").write_text(json.dumps(summary, indent=2))
    return summary
