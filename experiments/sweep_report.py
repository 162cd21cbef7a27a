"""Sweep results: a table per configuration over seeds (CSV, Markdown, JSON) and a PNG of return curves.

Ray-free on purpose: it takes plain :class:`TrialResult` records, so it can be tested and reused
without a cluster. The final return of a trial is its last reported evaluation; configurations are
compared by the mean over seeds, with the standard error and the interquartile mean (IQM, the mean
of the middle 50 % of seeds, robust to one lucky or broken seed; Agarwal et al. 2021, rliable).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrialResult:
    """One trial (one configuration, one seed) as reported to Tune."""

    config_id: str
    params: dict[str, Any]
    seed: int
    timesteps: list[int] = field(default_factory=list)  # when each evaluation happened
    returns: list[float] = field(default_factory=list)  # the sweep metric at those times
    status: str = "TERMINATED"  # Tune's trial status; ERROR trials have no final return
    run_dir: str | None = None
    node_id: str | None = None  # the Ray node the trial ran on (a cluster spreads trials over nodes)

    @property
    def final(self) -> float | None:
        return self.returns[-1] if self.returns else None


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: drop the lowest and highest quarter (as ``scipy.stats.trim_mean(x, 0.25)``)."""
    x = np.sort(np.asarray(values, dtype=float))
    cut = int(0.25 * len(x))
    return float(x[cut:len(x) - cut].mean())


def summarise(trials: list[TrialResult], mode: str = "max") -> list[dict[str, Any]]:
    """One row per configuration, best first: mean, standard error and IQM of the final return."""
    groups: dict[str, list[TrialResult]] = {}
    for t in trials:
        groups.setdefault(t.config_id, []).append(t)
    rows = []
    for config_id, group in groups.items():
        finals = np.array([t.final for t in group if t.final is not None], dtype=float)
        n = len(finals)
        rows.append({
            "config": config_id,
            "params": group[0].params,
            "seeds": sorted(t.seed for t in group if t.final is not None),
            "n": n,
            "errored": sum(t.status == "ERROR" for t in group),
            # env steps of the shortest seed: below the budget when ASHA stopped a seed early
            "steps": min((t.timesteps[-1] for t in group if t.timesteps), default=0),
            "mean": float(finals.mean()) if n else None,
            # one seed has no spread: leave the error empty rather than claim 0
            "stderr": float(finals.std(ddof=1) / math.sqrt(n)) if n > 1 else None,
            "iqm": iqm(finals) if n else None,
            "finals": finals.tolist(),
        })
    sign = -1.0 if mode == "max" else 1.0
    rows.sort(key=lambda r: (r["mean"] is None, sign * (r["mean"] or 0.0)))
    return rows


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def _params_text(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def markdown_table(rows: list[dict[str, Any]], metric: str) -> str:
    """The table as Markdown (also what the command prints)."""
    lines = [f"| config | params | seeds | steps | final {metric}: mean | ± s.e. | IQM |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        seeds = f"{r['n']}" + (f" ({r['errored']} errored)" if r["errored"] else "")
        lines.append(f"| {r['config']} | {_params_text(r['params'])} | {seeds} | {r['steps']} "
                     f"| {_fmt(r['mean'])} | {_fmt(r['stderr'])} | {_fmt(r['iqm'])} |")
    return "\n".join(lines) + "\n"


def plot_curves(trials: list[TrialResult], rows: list[dict[str, Any]], metric: str, path: Path) -> Path:
    """Mean return curve per configuration with a ±1 standard-error band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        curves = [t for t in trials if t.config_id == r["config"] and len(t.timesteps) > 0]
        if not curves:
            continue
        # Seeds evaluate at (nearly) the same steps; interpolate onto the union of those steps,
        # up to where the shortest seed ends (an early-stopped seed would otherwise drag the band).
        end = min(t.timesteps[-1] for t in curves)
        grid = np.unique(np.concatenate([t.timesteps for t in curves]))
        grid = grid[grid <= end]
        ys = np.stack([np.interp(grid, t.timesteps, t.returns) for t in curves])
        mean = ys.mean(axis=0)
        label = f"{r['config']}: {_params_text(r['params'])} ({len(curves)} seeds)"
        (line,) = ax.plot(grid, mean, marker="o", ms=3, label=label)
        if len(curves) > 1:
            se = ys.std(axis=0, ddof=1) / math.sqrt(len(curves))
            ax.fill_between(grid, mean - se, mean + se, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("env steps")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean over seeds, band ±1 s.e.")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(trials: list[TrialResult], out_dir: Path, metric: str, mode: str,
                 unfinished: int = 0) -> list[Path]:
    """Write ``results.csv``, ``results.md``, ``results.json`` and ``returns.png``; return their paths.

    ``unfinished``: trials that did not finish (an interrupted sweep); the md and json say the
    figures are partial, so that a partial table is never mistaken for the sweep's result."""
    rows = summarise(trials, mode)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "results.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        keys = ["config", "params", "n", "errored", "steps", "mean", "stderr", "iqm", "finals"]
        writer.writerow(keys)
        for r in rows:
            writer.writerow([json.dumps(r[k]) if k in ("params", "finals") else r[k] for k in keys])
    md_path = out_dir / "results.md"
    warning = (f"**PARTIAL**: {unfinished} trial(s) did not finish; these figures cover the finished "
               f"evaluations only (continue with `ebrl sweep --resume {out_dir}`).\n\n") if unfinished else ""
    md_path.write_text(warning + markdown_table(rows, metric))
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps({
        "metric": metric, "mode": mode, "unfinished_trials": unfinished, "configs": rows,
        "trials": [{"config": t.config_id, "seed": t.seed, "status": t.status, "final": t.final,
                    "run_dir": t.run_dir, "node_id": t.node_id, "timesteps": t.timesteps,
                    "returns": t.returns} for t in trials],
    }, indent=2))
    png_path = plot_curves(trials, rows, metric, out_dir / "returns.png")
    return [csv_path, md_path, json_path, png_path]
