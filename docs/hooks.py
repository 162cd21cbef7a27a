"""mkdocs hook: the API reference reads ebrl as it installs.

pyproject.toml installs the folders agents/, envs/ and experiments/ as ebrl.agents, ebrl.envs and
ebrl.experiments. mkdocstrings reads source files, not the install, so before each build this hook
lays the sources out as installed under build/api_src/ (from pyproject's own package-dir table,
the one place that mapping is written) and the Python handler reads them from there. The build
runs with that folder as its working directory: griffe tries a module name as a path relative to
the working directory first, and at the repository root "ebrl" is the ebrl/ folder, without agents.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import tomllib
from mkdocs.plugins import event_priority

ROOT = Path(__file__).resolve().parents[1]
API_SRC = ROOT / "build" / "api_src"
_CWD: list[str] = []


# Before the plugins' on_config (priority 0): mkdocstrings drops search paths that do not exist yet,
# and on a clean clone build/api_src/ does not.
@event_priority(100)
def on_config(config: Any) -> Any:
    """Copy every package's .py files to build/api_src/<its import path>."""
    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(API_SRC, ignore_errors=True)
    for name, folder in folders.items():
        dest = API_SRC.joinpath(*name.split("."))
        for src in (ROOT / folder).rglob("*.py"):
            if "__pycache__" in src.parts:
                continue
            target = dest / src.relative_to(ROOT / folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    _CWD.append(os.getcwd())
    os.chdir(API_SRC)
    return config


def _restore_cwd() -> None:
    if _CWD:
        os.chdir(_CWD.pop())


def on_post_build(config: Any) -> None:
    """Back to the working directory the build started in."""
    _restore_cwd()


def on_build_error(error: Exception) -> None:
    """Back to the working directory the build started in, also when the build fails."""
    _restore_cwd()
