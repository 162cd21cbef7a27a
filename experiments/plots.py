"""The pictures of a run: learning curve, energy landscape over actions, evaluation paths.

The energy landscape is the soft Q-learning paper's MultiGoal figure (Haarnoja et al. 2017,
Fig. 2): at a few chosen states, E(s, a) = -Q(s, a) over the action box with the policy's own
samples on top, so one sees whether the sampler covers every low-energy mode. SQL shows its
``policy.energy``; SAC shows -min(Q1, Q2) of its critic beside its Gaussian samples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from gymnasium import spaces
from matplotlib.patches import Patch
from stable_baselines3.common.base_class import BaseAlgorithm

from ebrl.experiments.evaluate import EvalResult

# States of the paper's MultiGoal figure, and the start / the approach to the rock for Fork.
PLOT_STATES: dict[str, list[list[float]]] = {
    "ebrl/MultiGoal-v0": [[0.0, 0.0], [-2.5, 0.0], [2.5, 2.5]],
    "ebrl/Fork-v0": [[0.0, 0.0], [1.0, 0.0], [1.0, 0.6]],
}
EnergyFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def read_metrics(path: str | Path) -> dict[str, np.ndarray]:
    """SB3's CSV log as columns of floats (empty cells -> NaN)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return {}
    out = {}
    for key in rows[0]:
        out[key] = np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows])
    return out


def learning_curve(metrics_csv: str | Path, out: str | Path, title: str = "") -> Path:
    """Episode return (training rollouts and evaluations) and training losses against env steps."""
    m = read_metrics(metrics_csv)
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6))
    steps = m.get("time/total_timesteps")
    if steps is not None:
        for key, label, style in (("rollout/ep_rew_mean", "training episodes (mean of 100)", "-"),
                                  ("eval/mean_reward", "evaluation (stochastic)", "o-")):
            if key in m and np.isfinite(m[key]).any():
                ok = np.isfinite(m[key]) & np.isfinite(steps)
                ax_r.plot(steps[ok], m[key][ok], style, ms=3, label=label)
        for key in sorted(k for k in m if k.startswith("train/") and "loss" in k):
            ok = np.isfinite(m[key]) & np.isfinite(steps)
            if ok.any():
                ax_l.plot(steps[ok], m[key][ok], label=key)
    ax_r.set(xlabel="env steps", ylabel="episode return", title=title or "learning curve")
    ax_l.set(xlabel="env steps", ylabel="loss", title="training losses")
    for ax in (ax_r, ax_l):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def energy_function(model: BaseAlgorithm) -> EnergyFn | None:
    """E(s, a) on normalised actions in [-1, 1]^d, for states (B, obs) and actions (B, N, act)."""
    policy = model.policy
    energy = getattr(policy, "energy", None)
    if energy is not None:
        return lambda s, a: energy(s, a)
    critic = getattr(policy, "critic", None)
    if critic is not None:  # SAC / TD3: E = -min_i Q_i
        def sac_energy(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
            b, n, d = a.shape
            s_rep = s[:, None].expand(b, n, s.shape[-1]).reshape(b * n, -1)
            q = torch.cat(critic(s_rep, a.reshape(b * n, d)), dim=1).min(dim=1).values
            return -q.reshape(b, n)
        return sac_energy
    return None


def _policy_samples(model: BaseAlgorithm, state: np.ndarray, n: int) -> np.ndarray:
    actions, _ = model.predict(np.repeat(state[None].astype(np.float32), n, axis=0), deterministic=False)
    return np.asarray(model.policy.scale_action(actions)).reshape(n, -1)


def energy_landscape(
    model: BaseAlgorithm,
    states: Sequence[Sequence[float]],
    out: str | Path,
    n_samples: int = 200,
    grid: int = 81,
    title: str = "",
) -> Path | None:
    """E(s, a) over the action box at each state, with ``n_samples`` policy samples on top.

    Returns None (nothing drawn) unless the action space is a 1-D or 2-D ``Box`` and the model
    exposes an energy (SQL) or a critic (SAC).
    """
    space = model.action_space
    fn = energy_function(model)
    if not isinstance(space, spaces.Box) or space.shape[0] not in (1, 2) or fn is None:
        return None
    dim = space.shape[0]
    device = model.device
    # Wide enough for the title whatever the number of states (a single panel clipped it).
    fig, axes = plt.subplots(1, len(states), figsize=(max(5.5, 4.2 * len(states)), 4.0), squeeze=False)
    lin = np.linspace(-1.0, 1.0, grid)
    for ax, state in zip(axes[0], states, strict=True):
        s = np.asarray(state, dtype=np.float32)
        with torch.no_grad():
            st = torch.as_tensor(s[None], device=device)
            if dim == 1:
                a = torch.as_tensor(lin[None, :, None], dtype=torch.float32, device=device)
                e = fn(st, a).cpu().numpy()[0]
            else:
                ax0, ax1 = np.meshgrid(lin, lin)
                a = np.stack([ax0.ravel(), ax1.ravel()], axis=-1)[None].astype(np.float32)
                e = fn(st, torch.as_tensor(a, device=device)).cpu().numpy()[0].reshape(grid, grid)
        samples = _policy_samples(model, s, n_samples)
        if dim == 1:
            line = ax.plot(lin, e, color="C0", label="E(s, a) = -Q")
            ax.set(xlabel="action (normalised to [-1, 1])", ylabel="energy")
            twin = ax.twinx()
            twin.hist(samples[:, 0], bins=40, range=(-1, 1), color="C3", alpha=0.4)
            twin.set_yticks([])
            bars = Patch(color="C3", alpha=0.4, label=f"{len(samples)} policy samples (histogram)")
            ax.legend(handles=[*line, bars], loc="upper center", fontsize=8)
        else:
            cs = ax.contourf(ax0, ax1, e, levels=20, cmap="viridis")
            fig.colorbar(cs, ax=ax, fraction=0.046, pad=0.04)
            ax.scatter(samples[:, 0], samples[:, 1], s=6, c="red", alpha=0.7, label="policy samples")
            ax.set(xlabel="a[0] (normalised)", ylabel="a[1] (normalised)", xlim=(-1, 1), ylim=(-1, 1),
                   aspect="equal")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"s = {np.round(s.astype(np.float64), 2).tolist()}", fontsize=10)
    fig.suptitle(title or "energy over actions (low = likely), with the sampler's samples", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)


def draw_task(ax: plt.Axes, env_id: str) -> None:
    import gymnasium as gym

    env = gym.make(env_id).unwrapped
    goals = getattr(env, "goals", None)
    if goals is not None:
        radius = getattr(env, "goal_radius", 1.0)
        for k, g in enumerate(goals):
            ax.add_patch(plt.Circle(g, radius, color="green", alpha=0.25))
            ax.annotate(f"goal {k}", g, ha="center", va="center", fontsize=8)
        bound = getattr(env, "bound", None)
        if bound:
            ax.set(xlim=(-bound, bound), ylim=(-bound, bound))
    obstacle = getattr(env, "obstacle", None)
    if obstacle is not None:
        ax.add_patch(plt.Circle(obstacle, getattr(env, "obstacle_radius", 1.0), color="grey", alpha=0.6))
        for lane in getattr(env, "lanes", ()):
            ax.axhline(lane, color="green", ls="--", lw=0.8)
        finish = getattr(env, "finish_x", None)
        if finish is not None:
            ax.axvline(finish, color="green", lw=0.8)
            half = getattr(env, "half_width", 3.0)
            ax.set(xlim=(0.0, finish + 0.3), ylim=(-half, half))
        ax.set_aspect("equal", adjustable="box")
    env.close()


def trajectories(result: EvalResult, env_id: str, out: str | Path, title: str = "") -> Path | None:
    """Evaluation paths in the (2-D) observation plane, goals drawn, goal fractions in the title."""
    if not result.paths or result.paths[0].shape[-1] != 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 5))
    draw_task(ax, env_id)
    for path, g in zip(result.paths, result.goal_index or [-1] * len(result.paths), strict=True):
        ax.plot(path[:, 0], path[:, 1], lw=0.8, alpha=0.6, color=f"C{g}" if g >= 0 else "k")
    s = result.summary()
    lines = [title or env_id]
    if result.n_goals:
        fr = ", ".join(f"{f:.2f}" for f in s["goal_fractions"])
        lines.append(f"goal fractions [{fr}]  entropy {s['goal_entropy']:.2f}/{s['goal_entropy_max']:.2f}")
    ax.set_title("\n".join(lines), fontsize=9)
    ax.set_aspect("equal", adjustable="box")
    ax.set(xlabel="obs[0]", ylabel="obs[1]")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return Path(out)
