"""The bad-input table: wrong input across the public API raises a clear error and writes nothing.

Each row: a call with one bad input, the exception type expected, and a word the message must
contain (the argument's name). Every call runs with the working directory in a fresh temporary
folder, and that folder must be byte-for-byte the same afterwards. The README's bad-input table is
this list. Rows marked ``xfail`` are known gaps (strict: they fail loudly once fixed).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

import ebrl.envs  # noqa: F401  (registers ebrl/...)
from ebrl import BoltzmannPolicy, MLPEnergy, StateActionEnergy
from ebrl.agents import SQL, DiscreteSQL
from ebrl.agents.common.safe_load import ModelFileError, safe_load
from ebrl.boltzmann_machines import DBN, RBM, BoltzmannMachine, GaussianBernoulliRBM
from ebrl.experiments.checkpoints import CheckpointDir, CheckpointError, load_training_checkpoint
from ebrl.experiments.cli import main as cli_main
from ebrl.experiments.config import ConfigError, resolve
from ebrl.heads import AnomalyScorer, Denoiser, Generator
from ebrl.samplers import MALA, DerivativeFree, Langevin

NAN, INF = float("nan"), float("inf")
ENERGY = MLPEnergy(2, hidden_sizes=(8,))
SA_ENERGY = StateActionEnergy(3, 2, hidden_sizes=(8,))
TINY = {"buffer_size": 10, "policy_kwargs": {"net_arch": [8]}}


class CLIError(Exception):
    """``ebrl`` returned exit code 2; the message is its stderr."""


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = cli_main(argv)
    except SystemExit as exc:
        rc = int(exc.code)
    err = capsys.readouterr().err
    if rc == 2:
        raise CLIError(err)
    raise AssertionError(f"exit code {rc}, stderr {err!r}")


def write_config(entry: dict) -> str:
    Path("cfg.yaml").write_text(yaml.safe_dump({"ebrl/MultiGoal-v0": entry}))
    return "cfg.yaml"


def fake_run(model_bytes: bytes | None = None, checkpoint: bool = False) -> Path:
    """A run folder as `ebrl train` leaves it (config.yaml, optional model.zip and checkpoint dir)."""
    run = Path("run")
    run.mkdir()
    cfg = resolve("sql", "ebrl/MultiGoal-v0", 0, 10)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict()))
    if model_bytes is not None:
        (run / "model.zip").write_bytes(model_bytes)
    if checkpoint:
        (run / "checkpoints" / "step_000000000010").mkdir(parents=True)
    return run


def env_step(env_id: str, action: np.ndarray) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    env.step(action)


# (id, setup() run before the snapshot or None, call(capsys), exception type, word the message must contain)
Case = tuple[str, Callable[[], object] | None, Callable[[pytest.CaptureFixture[str]], object], type, str]
CASES: list[Case] = [
    # samplers
    ("Langevin n_steps=0", None, lambda c: Langevin(n_steps=0), ValueError, "n_steps"),
    ("Langevin step_size<0", None, lambda c: Langevin(step_size=-1.0), ValueError, "step_size"),
    ("Langevin unknown schedule", None, lambda c: Langevin(schedule="cubic"), ValueError, "schedule"),
    ("MALA target_accept>1", None, lambda c: MALA(target_accept=1.5), ValueError, "target_accept"),
    (
        "DerivativeFree noise_shrink=NaN",
        None,
        lambda c: DerivativeFree(noise_shrink=NAN),
        ValueError,
        "noise_shrink",
    ),
    (
        "sample: shape not (batch, chains, dim)",
        None,
        lambda c: Langevin(n_steps=2).sample(ENERGY, shape=(2, 3)),
        ValueError,
        "shape",
    ),
    (
        "sample: NaN init",
        None,
        lambda c: Langevin(n_steps=2).sample(ENERGY, init=torch.full((1, 2, 2), NAN)),
        ValueError,
        "init",
    ),
    (
        "sample: temperature<0",
        None,
        lambda c: Langevin(n_steps=2).sample(ENERGY, shape=(1, 2, 2), temperature=-1.0),
        ValueError,
        "temperature",
    ),
    # energies and the Boltzmann policy
    ("MLPEnergy x_dim=0", None, lambda c: MLPEnergy(0), ValueError, "x_dim"),
    (
        "MLPEnergy unknown activation",
        None,
        lambda c: MLPEnergy(2, activation="gelu2"),
        ValueError,
        "activation",
    ),
    (
        "BoltzmannPolicy temperature=0",
        None,
        lambda c: BoltzmannPolicy(SA_ENERGY, temperature=0.0),
        ValueError,
        "temperature",
    ),
    (
        "policy.sample: wrong state width",
        None,
        lambda c: BoltzmannPolicy(SA_ENERGY).sample(torch.zeros(4, 5)),
        ValueError,
        "states",
    ),
    (
        "policy.sample: integer states",
        None,
        lambda c: BoltzmannPolicy(SA_ENERGY).sample(torch.zeros(4, 3, dtype=torch.int64)),
        TypeError,
        "states",
    ),
    pytest.param(
        "policy.sample: NaN states",
        None,
        lambda c: BoltzmannPolicy(SA_ENERGY).sample(torch.full((4, 3), NAN)),
        ValueError,
        "states",
    ),
    # heads
    ("Generator thin=0", None, lambda c: Generator(ENERGY, thin=0), ValueError, "thin"),
    ("Denoiser unknown method", None, lambda c: Denoiser(ENERGY, method="median"), ValueError, "method"),
    (
        "Denoiser.denoise sigma<0",
        None,
        lambda c: Denoiser(ENERGY).denoise(torch.zeros(3, 2), sigma=-1.0),
        ValueError,
        "sigma",
    ),
    pytest.param(
        "AnomalyScorer.score: inf data",
        None,
        lambda c: AnomalyScorer(ENERGY).score(torch.tensor([[INF, 0.0]])),
        ValueError,
        "x",
    ),
    # Boltzmann machines
    ("RBM n_hidden=0", None, lambda c: RBM(0), ValueError, "n_hidden"),
    (
        "RBM.fit: NaN data",
        None,
        lambda c: RBM(3, n_epochs=1).fit(np.array([[0.0, 1.0, NAN]])),
        ValueError,
        "X",
    ),
    (
        "RBM.fit: non-binary data",
        None,
        lambda c: RBM(3, n_epochs=1).fit(np.full((4, 3), 0.5)),
        ValueError,
        "X",
    ),
    (
        "BoltzmannMachine learning_rate<0",
        None,
        lambda c: BoltzmannMachine(3, learning_rate=-1.0),
        ValueError,
        "learning_rate",
    ),
    ("DBN no hidden layers", None, lambda c: DBN([]), TypeError, "hidden_sizes"),
    (
        "GaussianBernoulliRBM sigma<0",
        None,
        lambda c: GaussianBernoulliRBM(3, sigma=-1.0),
        ValueError,
        "sigma",
    ),
    # agents
    ("SQL alpha<0", None, lambda c: SQL("MlpPolicy", "Pendulum-v1", alpha=-1.0), ValueError, "alpha"),
    (
        "SQL on a Discrete action space",
        None,
        lambda c: SQL("MlpPolicy", "CartPole-v1"),
        TypeError,
        "action_space",
    ),
    (
        "SQL policy_kwargs typo",
        None,
        lambda c: SQL("MlpPolicy", "Pendulum-v1", policy_kwargs={"n_chain": 3}),
        TypeError,
        "n_chain",
    ),
    (
        "SQL n_particles=0",
        None,
        lambda c: SQL("MlpPolicy", "Pendulum-v1", n_particles=0),
        ValueError,
        "n_particles",
    ),
    (
        "SQL unknown value_estimator",
        None,
        lambda c: SQL("MlpPolicy", "Pendulum-v1", value_estimator="x"),
        ValueError,
        "value_estimator",
    ),
    (
        "DiscreteSQL on a Box action space",
        None,
        lambda c: DiscreteSQL("MlpPolicy", "Pendulum-v1"),
        TypeError,
        "action_space",
    ),
    (
        "SQL.predict: wrong observation shape",
        None,
        lambda c: SQL("MlpPolicy", "Pendulum-v1", **TINY).predict(np.zeros((2, 5), np.float32)),
        ValueError,
        "observation",
    ),
    pytest.param(
        "SQL.predict: NaN observation",
        None,
        lambda c: SQL("MlpPolicy", "Pendulum-v1", **TINY).predict(np.full((2, 3), NAN, np.float32)),
        ValueError,
        "observation",
    ),
    # environments
    (
        "MultiGoal goal_reward=NaN",
        None,
        lambda c: gym.make("ebrl/MultiGoal-v0", goal_reward=NAN),
        ValueError,
        "goal_reward",
    ),
    (
        "MultiGoal step: wrong action shape",
        None,
        lambda c: env_step("ebrl/MultiGoal-v0", np.zeros(3, np.float32)),
        ValueError,
        "action",
    ),
    (
        "MultiGoal step: NaN action",
        None,
        lambda c: env_step("ebrl/MultiGoal-v0", np.array([NAN, 0], np.float32)),
        ValueError,
        "action",
    ),
    (
        "Fork half_width<0",
        None,
        lambda c: gym.make("ebrl/Fork-v0", half_width=-1.0),
        ValueError,
        "half_width",
    ),
    (
        "Fork step: inf action",
        None,
        lambda c: env_step("ebrl/Fork-v0", np.array([INF], np.float32)),
        ValueError,
        "action",
    ),
    # configs and the command line
    (
        "config: unknown key",
        lambda: write_config({"n_particle": 4}),
        lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
        ConfigError,
        "n_particle",
    ),
    (
        "config: checkpoint_freq<0",
        lambda: write_config({"checkpoint_freq": -5}),
        lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
        ConfigError,
        "checkpoint_freq",
    ),
    (
        "config: n_envs=0",
        lambda: write_config({"n_envs": 0}),
        lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
        ConfigError,
        "n_envs",
    ),
    (
        "config: env_kwargs not a mapping",
        lambda: write_config({"env_kwargs": [1]}),
        lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
        ConfigError,
        "env_kwargs",
    ),
    *[
        (
            f"config: zoo key {key}={value!r}",
            (lambda key=key, value=value: write_config({key: value})),
            lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
            ConfigError,
            key,
        )
        for key, value in [
            ("frame_stack", -1),
            ("normalize", "dict(norm_obs=True, bogus=1)"),
            ("normalize", 3),
            ("env_wrapper", "nowhere.Wrapper"),
            ("env_wrapper", [{"gymnasium.wrappers.ClipReward": 5}]),
            ("learning_rate", "lin_fast"),
        ]
    ],
    (
        "config: a constructor key in the ebrl_run section",
        lambda: Path("cfg.yaml").write_text(yaml.safe_dump(
            {"ebrl/MultiGoal-v0": {}, "ebrl_run": {"ebrl/MultiGoal-v0": {"batch_size": 8}}})),
        lambda c: resolve("sql", "ebrl/MultiGoal-v0", 0, config_file="cfg.yaml"),
        ConfigError,
        "batch_size",
    ),
    (
        "ebrl train: zoo env key with a bad value",
        lambda: write_config({"frame_stack": "four"}),
        lambda c: cli(["train", "--algo", "sql", "--env-id", "ebrl/MultiGoal-v0", "--config", "cfg.yaml"], c),
        CLIError,
        "frame_stack",
    ),
    (
        "ebrl train: unknown env id",
        None,
        lambda c: cli(["train", "--algo", "sql", "--env-id", "Nope-v0"], c),
        CLIError,
        "env id",
    ),
    (
        "ebrl train: NaN hyperparameter",
        lambda: write_config({"alpha": NAN}),
        lambda c: cli(["train", "--algo", "sql", "--env-id", "ebrl/MultiGoal-v0", "--config", "cfg.yaml"], c),
        CLIError,
        "alpha",
    ),
    (
        "ebrl train --resume: not a run",
        None,
        lambda c: cli(["train", "--resume", "."], c),
        CLIError,
        "run directory",
    ),
    (
        "ebrl train --resume with --algo",
        None,
        lambda c: cli(["train", "--resume", "x", "--algo", "sql"], c),
        CLIError,
        "--algo",
    ),
    (
        "ebrl train --resume: no checkpoint",
        fake_run,
        lambda c: cli(["train", "--resume", "run"], c),
        CLIError,
        "checkpoint",
    ),
    (
        "ebrl eval: corrupt model.zip",
        lambda: fake_run(b"PK\x03\x04garbage"),
        lambda c: cli(["eval", "run"], c),
        CLIError,
        "model file",
    ),
    # checkpoints and model files
    (
        "safe_load: a text file",
        lambda: Path("m.zip").write_text("hello"),
        lambda c: safe_load(SQL, "m.zip"),
        ModelFileError,
        "model file",
    ),
    ("safe_load: path of wrong type", None, lambda c: safe_load(SQL, 123), TypeError, "path"),
    ("safe_load: cls not an algorithm", None, lambda c: safe_load(dict, "m.zip"), TypeError, "cls"),
    (
        "checkpoint without state.json",
        lambda: fake_run(checkpoint=True),
        lambda c: load_training_checkpoint("run/checkpoints/step_000000000010"),
        CheckpointError,
        "checkpoint",
    ),
    ("CheckpointDir keep=0", None, lambda c: CheckpointDir("ckpt", keep=0), ValueError, "keep"),
]


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else b"<dir>")
        for p in sorted(root.rglob("*"))
    }



def _write(name: str, data: bytes) -> Callable[[], None]:
    return lambda: Path(name).write_bytes(data)


# Loading a corrupt or truncated file names the file and what is wrong (issue 14), and a NaN
# observation is refused at DiscreteSQL's predict boundary.
CASES += [
    ("SQL.load: not a zip", _write("bad.zip", b"garbage"), lambda c: SQL.load("bad.zip"),
     ModelFileError, "bad.zip"),
    ("DiscreteSQL.load: truncated zip", _write("cut.zip", b"PK\x03\x04" + bytes(20)),
     lambda c: DiscreteSQL.load("cut.zip"), ModelFileError, "cut.zip"),
    ("DiscreteSQL.predict: NaN observation", None,
     lambda c: DiscreteSQL("MlpPolicy", "CartPole-v1", **TINY).predict(np.full((4,), NAN, np.float32)),
     ValueError, "observation"),
]  # fmt: skip


# SB3's off-policy arguments, checked by both agents before SB3 builds anything (issue 14).
OFF_POLICY_BAD = [
    ("batch_size", "big", TypeError), ("batch_size", 0, ValueError), ("gamma", "0.99", TypeError),
    ("gamma", 1.5, ValueError), ("tau", "x", TypeError), ("buffer_size", -1, ValueError),
    ("learning_rate", 0.0, ValueError), ("train_freq", 0, ValueError), ("gradient_steps", 0, ValueError),
]
CASES += [
    (f"{algo.__name__} {arg}={value!r}", None,
     lambda c, algo=algo, env=env, arg=arg, value=value: algo("MlpPolicy", env, **{arg: value}), error, arg)
    for algo, env in ((SQL, "Pendulum-v1"), (DiscreteSQL, "CartPole-v1"))
    for arg, value, error in OFF_POLICY_BAD
]  # fmt: skip

def _id(case: Case | object) -> str:
    values = getattr(case, "values", case)
    return values[0]


@pytest.mark.parametrize(("name", "setup", "call", "error", "word"), CASES, ids=[_id(c) for c in CASES])
def test_bad_input(
    name: str,
    setup: Callable | None,
    call: Callable,
    error: type,
    word: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    if setup is not None:
        setup()  # the row's own input files (a config, a run folder): they must stay unchanged
    before = snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(error) as info:
            call(capsys)
    message = str(info.value)
    assert word in message, f"message does not name {word!r}: {message}"
    assert snapshot(tmp_path) == before
