"""The `ebrl` command: train/eval/plot on tiny budgets, configs, and bad input (exit 2, nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ebrl.experiments.cli import main
from ebrl.experiments.config import RUN_SECTION, ConfigError, load_hyperparams, resolve

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
TINY = {
    "sac": {"learning_starts": 50, "batch_size": 32, "policy_kwargs": "dict(net_arch=[16, 16])"},
    "sql": {"learning_starts": 50, "batch_size": 32, "n_particles": 4,
            "policy_kwargs": "dict(net_arch=[16, 16], search_steps=3)"},
}


def run_cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse errors
        return int(exc.code)


def tiny_config(tmp_path: Path, algo: str, env_id: str = "ebrl/MultiGoal-v0", **extra) -> Path:
    path = tmp_path / f"{algo}.yaml"
    path.write_text(yaml.safe_dump({env_id: {**TINY[algo], "n_eval_episodes": 4, **extra}}))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}


@pytest.fixture(scope="module")
def sac_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sac")
    cfg = tiny_config(tmp, "sac")
    rc = main(["train", "--algo", "sac", "--env-id", "ebrl/MultiGoal-v0", "--total-timesteps", "150",
               "--seed", "3", "--config", str(cfg), "--runs-dir", str(tmp / "runs"), "--no-progress-bar"])
    assert rc == 0
    (run,) = (tmp / "runs").iterdir()
    return run


def test_train_writes_a_complete_run(sac_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert sac_run.name.startswith("ebrl-MultiGoal-v0__sac__3__")
    for name in ("model.zip", "config.yaml", "metrics.csv", "summary.json",
                 "plots/learning_curve.png", "plots/energy_landscape.png", "plots/trajectories.png"):
        assert (sac_run / name).is_file(), name
    cfg = yaml.safe_load((sac_run / "config.yaml").read_text())
    assert cfg["algo"] == "sac" and cfg["total_timesteps"] == 150 and cfg["seed"] == 3
    assert cfg["hyperparams"]["policy_kwargs"] == {"net_arch": [16, 16]}
    resolved = yaml.safe_load((sac_run / "resolved_hyperparams.yaml").read_text())
    assert resolved["batch_size"] == 32 and resolved["learning_starts"] == 50 and resolved["gamma"] == 0.99
    assert resolved["policy_kwargs"]["net_arch"] == [16, 16]
    header = (sac_run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"rollout/ep_rew_mean", "train/actor_loss", "eval/mean_reward", "eval/goal_entropy"} <= set(header)
    summary = json.loads((sac_run / "summary.json").read_text())
    assert len(summary["final_eval_stochastic"]["goal_fractions"]) == 4


def test_eval_and_plot(sac_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli(["eval", str(sac_run), "--n-episodes", "3", "--stochastic"]) == 0
    out = capsys.readouterr().out
    assert "3 stochastic episodes" in out
    result = json.loads((sac_run / "eval.json").read_text())
    assert result["episodes"] == 3 and len(result["returns"]) == 3
    # Deterministic is the default, and a second evaluation keeps the first one's file.
    assert run_cli(["eval", str(sac_run), "--n-episodes", "2", "--no-gif"]) == 0
    assert "2 deterministic episodes" in capsys.readouterr().out
    kept = sorted(p.name for p in (sac_run / "evals").iterdir())
    assert kept == ["deterministic-seed20003-n2.json", "stochastic-seed20003-n3.json"]
    assert (sac_run / "eval.gif").stat().st_size > 0
    (sac_run / "plots" / "energy_landscape.png").unlink()
    assert run_cli(["plot", str(sac_run), "--states", "0,0;1,1"]) == 0
    assert (sac_run / "plots" / "energy_landscape.png").is_file()


def test_plot_states_of_the_wrong_size_is_one_line_exit_2(sac_run: Path, capsys) -> None:
    assert run_cli(["plot", str(sac_run), "--states", "1,0,0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ebrl: error: --states: each state needs 2 numbers") and "\n" not in err


def test_eval_gif_or_one_line_when_the_env_cannot_render(tmp_path: Path, capsys) -> None:
    # Pendulum renders through pygame. Without it (as in this project's environment) `ebrl eval`
    # still finishes and says why the GIF was skipped in one stderr line; with it, the GIF is written.
    import importlib.util

    can_render = importlib.util.find_spec("pygame") is not None
    cfg = tiny_config(tmp_path, "sac", env_id="Pendulum-v1")
    assert main(["train", "--algo", "sac", "--env-id", "Pendulum-v1", "--total-timesteps", "100",
                 "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--no-progress-bar"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    capsys.readouterr()
    assert run_cli(["eval", str(run), "--n-episodes", "1"]) == 0
    captured = capsys.readouterr()
    assert "1 deterministic episodes" in captured.out
    summary = json.loads((run / "eval.json").read_text())
    if can_render:
        assert (run / "eval.gif").stat().st_size > 0 and "gif_skipped" not in summary
    else:
        assert captured.err.count("\n") == 1 and "GIF skipped" in captured.err and "pygame" in captured.err
        assert "gif_skipped" in summary and not (run / "eval.gif").exists()


def test_train_sql_one_dimensional_actions(tmp_path: Path) -> None:
    """SQL on the 1-D-action Fork task: the landscape is a curve with a histogram of samples."""
    cfg = tiny_config(tmp_path, "sql", env_id="ebrl/Fork-v0")
    assert run_cli(["train", "--algo", "sql", "--env-id", "ebrl/Fork-v0", "--total-timesteps", "60",
                    "--config", str(cfg), "--runs-dir", str(tmp_path / "runs"), "--no-progress-bar"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    assert (run / "plots" / "energy_landscape.png").is_file()
    assert "crash_rate" in json.loads((run / "summary.json").read_text())["final_eval_stochastic"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--algo", "sac", "--env-id", "ebrl/NoSuchEnv-v0"], "unknown env id 'ebrl/NoSuchEnv-v0'"),
        (["train", "--algo", "ppo2", "--env-id", "ebrl/MultiGoal-v0"], "invalid choice: 'ppo2'"),
        (["train", "--algo", "sac", "--env-id", "ebrl/MultiGoal-v0", "--config", "BADKEY"],
         "config key 'n_particles' is not accepted by algo 'sac'"),
        (["train", "--algo", "sql", "--env-id", "ebrl/MultiGoal-v0", "--config", "BADVALUE"],
         "sql on ebrl/MultiGoal-v0 rejected the config"),
        (["train", "--algo", "sac", "--env-id", "ebrl/MultiGoal-v0", "--config", "MISSING"],
         "config file not found"),
        (["train", "--algo", "sac", "--env-id", "ebrl/MultiGoal-v0", "--total-timesteps", "0"],
         "must be an integer"),
        (["eval", "NOTARUN"], "not a run directory"),
        (["plot", "NOTARUN"], "not a run directory"),
        (["eval", "ABSENT"], "not a run directory"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"ebrl/MultiGoal-v0": {"n_particles": 4}}))
    (tmp_path / "badvalue.yaml").write_text(yaml.safe_dump({"ebrl/MultiGoal-v0": {"alpha": -1.0}}))
    not_a_run = tmp_path / "notarun"
    not_a_run.mkdir()
    (not_a_run / "config.yaml").write_text("keep: me\n")
    subs = {"BADKEY": str(tmp_path / "bad.yaml"), "BADVALUE": str(tmp_path / "badvalue.yaml"),
            "MISSING": str(tmp_path / "missing.yaml"), "NOTARUN": str(not_a_run),
            "ABSENT": str(tmp_path / "absent")}
    argv = [subs.get(a, a) for a in argv]
    if argv[0] == "train":
        argv += ["--runs-dir", str(tmp_path / "runs"), "--no-progress-bar"]
    before = snapshot(tmp_path)
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ebrl: error: "), err
    assert message in err
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "runs").exists()


def test_console_script_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ebrl.experiments.cli", "train", "--algo", "sac", "--env-id", "Nope-v9",
         "--runs-dir", str(tmp_path / "runs")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["ebrl: error: unknown env id 'Nope-v9'"]
    assert not (tmp_path / "runs").exists()


def test_zoo_values_are_converted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("Pendulum-v1:\n  learning_rate: 3e-4\n  train_freq: [1, episode]\n"
                    "  policy_kwargs: \"dict(net_arch=[64, 64])\"\n")
    params = load_hyperparams(path, "Pendulum-v1")
    assert params == {"learning_rate": 3e-4, "train_freq": (1, "episode"),
                      "policy_kwargs": {"net_arch": [64, 64]}}
    path.write_text("Pendulum-v1:\n  policy_kwargs: \"dict(net_arch=__import__('os'))\"\n")
    with pytest.raises(ConfigError, match="policy_kwargs"):
        load_hyperparams(path, "Pendulum-v1")


@pytest.mark.parametrize("config", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_resolve(config: Path) -> None:
    algo = config.stem
    for env_id in yaml.safe_load(config.read_text()):
        if env_id == RUN_SECTION:  # ebrl's run settings per env id, not an entry
            continue
        cfg = resolve(algo, env_id, seed=0, config_file=config)
        assert cfg.total_timesteps >= 1


def test_shipped_configs_and_sweeps_are_found_by_name_from_any_folder(tmp_path: Path, monkeypatch) -> None:
    from ebrl.experiments.sweep_spec import load_sweep

    monkeypatch.chdir(tmp_path)  # outside the repository: relative repository paths do not exist here
    by_path = load_hyperparams(CONFIGS / "sql.yaml", "ebrl/MultiGoal-v0")
    for name in ("sql", "sql.yaml", "experiments/configs/sql.yaml"):
        assert load_hyperparams(name, "ebrl/MultiGoal-v0") == by_path, name
    assert load_sweep("smoke").name == "smoke"
    assert load_sweep("experiments/sweeps/smoke.yaml").name == "smoke"
    with pytest.raises(ConfigError, match=r"config file not found: nope .*shipped with ebrl: .*sql"):
        load_hyperparams("nope", "ebrl/MultiGoal-v0")
    with pytest.raises(ConfigError, match=r"sweep file not found: other/smoke.yaml"):
        load_sweep("other/smoke.yaml")  # a path elsewhere is never silently replaced by a shipped file
    assert not any(tmp_path.iterdir())


def test_shipped_yaml_files_are_package_data() -> None:
    import re

    text = (CONFIGS.parents[1] / "pyproject.toml").read_text()
    section = text.split("[tool.setuptools.package-data]", 1)[1]
    patterns = re.findall(r'"([^"]+)"', re.search(r'^"ebrl.experiments" = \[(.*)\]$', section, re.M).group(1))
    shipped = {p.relative_to(CONFIGS.parent) for kind in ("configs", "sweeps")
               for p in (CONFIGS.parent / kind).glob("*.yaml")}
    assert shipped and all(any(p.match(pattern) for pattern in patterns) for p in shipped)
