"""What `ebrl eval` and `ebrl plot` do with an existing run directory."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm

from ebrl.experiments.config import ConfigError, RunConfig, algo_class, load_run_config
from ebrl.experiments.evaluate import EvalResult, evaluate, save_gif
from ebrl.experiments.zoo import ObsPipeline, eval_obs


def run_name(env_id: str, algo: str, seed: int, stamp: str) -> str:
    """``<env>__<algo>__<seed>__<time>`` with the env id's ``/`` made file-name safe."""
    return f"{env_id.replace('/', '-')}__{algo}__{seed}__{stamp}"


def load_model(run_dir: str | Path, device: str = "auto", allow_pickle: bool = False
               ) -> tuple[RunConfig, BaseAlgorithm]:
    """The run's config and trained model, loaded without unpickling unless ``allow_pickle``
    (ConfigError if ``run_dir`` is not a run; ModelFileError if its model file is bad)."""
    import ebrl.envs  # noqa: F401  (registers ebrl/...)
    from ebrl.agents.common.safe_load import safe_load

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
    from ebrl.experiments.plots import PLOT_STATES, energy_landscape, learning_curve, trajectories

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
    keys, normalizer = eval_obs(cfg.wrappers, model=model, run_dir=run_dir)
    obs_dim = int(np.prod(model.observation_space.shape)) // max(keys.frame_stack, 1)
    for state in states:
        if len(state) != obs_dim:
            raise ConfigError(
                f"--states: each state needs {obs_dim} numbers (an observation of {cfg.env_id}), "
                f"got {len(state)} in {list(state)}"
            )
    # The landscape is drawn at raw states; the policy sees them normalised and stacked.
    pipeline = ObsPipeline(model.observation_space, len(states), keys.frame_stack, normalizer)
    seen = pipeline.still(np.asarray(states, dtype=np.float32)).tolist() if keys else states
    landscape = energy_landscape(
        model, seen, out / "energy_landscape.png", title=f"energy over actions: {title}"
    )
    if landscape is not None:
        written.append(landscape)
    if result is None:
        result = evaluate(model, cfg.env_id, max(cfg.n_eval_episodes, 50), seed=cfg.seed + 10_000,
                          env_kwargs=cfg.env_kwargs, progress=True, wrappers=keys, normalizer=normalizer)
    paths = trajectories(result, cfg.env_id, out / "trajectories.png",
                         title=f"{title}: {len(result.returns)} stochastic episodes")
    if paths is not None:
        written.append(paths)
    return written


def render_problem(env_id: str, env_kwargs: dict[str, Any]) -> str | None:
    """Why the env cannot render ``rgb_array`` frames here (one line), or None when it can."""
    import gymnasium as gym

    try:
        env = gym.make(env_id, render_mode="rgb_array", **env_kwargs)
    except Exception as exc:  # an env without rgb_array rendering still gets its returns
        return f"{env_id} cannot render frames ({exc})"
    try:
        env.reset(seed=0)
        env.render()
    except gym.error.DependencyNotInstalled as exc:
        return f"{exc} (or pip install 'ebrl[render]')"
    except Exception as exc:
        return f"{env_id} cannot render frames ({type(exc).__name__}: {exc})"
    finally:
        env.close()
    return None


def eval_run(run_dir: str | Path, n_episodes: int, deterministic: bool, seed: int | None,
             gif: bool, allow_pickle: bool = False) -> dict[str, Any]:
    """Evaluate a saved run; write ``evals/<mode>-seed<seed>-n<episodes>.json``, a copy as the latest
    ``eval.json``, and ``eval.gif`` of the first episode."""
    cfg, model = load_model(run_dir, allow_pickle=allow_pickle)
    run_dir = Path(run_dir)
    seed = cfg.seed + 20_000 if seed is None else seed
    gif_skipped = render_problem(cfg.env_id, cfg.env_kwargs) if gif else None
    gif = gif and gif_skipped is None
    keys, normalizer = eval_obs(cfg.wrappers, model=model, run_dir=run_dir)
    result = evaluate(model, cfg.env_id, n_episodes, seed=seed, deterministic=deterministic,
                      env_kwargs=cfg.env_kwargs, render=gif, progress=True, wrappers=keys,
                      normalizer=normalizer)
    summary = {"deterministic": deterministic, "seed": seed, **result.summary(), "returns": result.returns}
    if gif_skipped is not None:
        summary["gif_skipped"] = gif_skipped
    if gif:
        try:
            path = save_gif(result.frames, run_dir / "eval.gif")
        except Exception as exc:  # an env that cannot render still gets its returns
            path, summary["gif_error"] = None, repr(exc)
        summary["gif"] = str(path) if path else None
    # One file per setting, so evaluations with other settings are kept; eval.json is the latest.
    mode = "deterministic" if deterministic else "stochastic"
    kept = run_dir / "evals" / f"{mode}-seed{seed}-n{n_episodes}.json"
    kept.parent.mkdir(exist_ok=True)
    summary["json"] = str(kept)
    for target in (kept, run_dir / "eval.json"):
        target.write_text(json.dumps(summary, indent=2))
    return summary
