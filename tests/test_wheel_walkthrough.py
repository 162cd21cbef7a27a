"""A new user's walk-through from the wheel, in a fresh venv, run from a folder outside the repository:
install, import, train, evaluate, plot, resume and sweep, checking every output file (slow: ~2 min).

The venv gets the wheel with ``--no-deps``; its dependencies come from this test's own environment
through a ``.pth`` line (there is no network here), which adds that site-packages folder to
``sys.path`` without running its ``.pth`` files, so the editable install of the repository is not
seen: ebrl is imported from the wheel alone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_walkthrough_from_a_wheel_in_a_fresh_venv(tmp_path: Path) -> None:
    # Build from the tracked files alone: setuptools would also pack a stale build/lib of the tree.
    src, dist = tmp_path / "src", tmp_path / "dist"
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True)
    for rel in filter(None, tracked.stdout.decode().split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(dist)], check=True, capture_output=True, timeout=600)
    (wheel,) = dist.glob("ebrl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    # One import name: nothing of ours at the top level but ebrl (and the wheel's metadata).
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"ebrl"}, tops
    for shipped in ("ebrl/agents/sql/sql.py", "ebrl/envs/multigoal.py", "ebrl/experiments/cli.py",
                    "ebrl/experiments/configs/sql.yaml", "ebrl/experiments/sweeps/smoke.yaml"):
        assert shipped in names, shipped

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py, ebrl = venv / "bin" / "python", venv / "bin" / "ebrl"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, dict(os.environ)).strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "ebrl_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
                    str(wheel)], check=True, capture_output=True, timeout=600)

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONPATH": ""}
    where = _run([str(py), "-c", "import importlib.util, ebrl, ebrl.agents, ebrl.envs;"
                  "print(ebrl.agents.__file__);"
                  "print([n for n in ('agents', 'envs', 'experiments') if importlib.util.find_spec(n)])"],
                 work, env).splitlines()
    assert where[0].startswith(str(site)) and where[1] == "[]", where

    runs = work / "runs"
    _run([str(ebrl), "train", "--algo", "sql", "--env-id", "Pendulum-v1", "--config", "sql",
          "--total-timesteps", "300", "--seed", "0", "--runs-dir", str(runs), "--no-progress-bar"], work, env)
    (run,) = runs.iterdir()
    for name in ("model.zip", "config.yaml", "resolved_hyperparams.yaml", "metrics.csv", "summary.json",
                 "plots/learning_curve.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name

    _run([str(ebrl), "eval", str(run), "--n-episodes", "2", "--no-gif"], work, env)
    assert len(json.loads((run / "eval.json").read_text())["returns"]) == 2
    _run([str(ebrl), "plot", str(run)], work, env)
    assert (run / "plots" / "energy_landscape.png").stat().st_size > 0

    _run([str(ebrl), "train", "--resume", str(run), "--total-timesteps", "400", "--no-progress-bar"],
         work, env)
    assert json.loads((run / "summary.json").read_text())["timesteps"] == 400

    out = _run([str(ebrl), "sweep", "--config", "smoke", "--storage", str(work / "sweeps"),
                "--max-concurrent", "2", "--quiet"], work, env)
    assert "alpha" in out
    (report,) = (work / "sweeps").glob("smoke*/results.json")
    for name in ("results.csv", "results.md", "returns.png"):
        assert (report.parent / name).is_file(), name
    trials = json.loads(report.read_text())["trials"]
    assert len(trials) == 4 and all((Path(t["run_dir"]) / "model.zip").is_file() for t in trials)
