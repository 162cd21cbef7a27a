"""The documentation site stays complete and its examples keep running (without mkdocs installed).

- every ``::: name`` of the API reference names an importable object;
- every public name of the packages' ``__all__`` is in the reference (itself or its module);
- every page under docs/ is in mkdocs.yml's nav and every nav entry exists;
- every Python block of the tutorials runs as written (each in a fresh interpreter).
`make docs` builds the site itself (mkdocs-material + mkdocstrings).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PACKAGES = ("ebrl", "ebrl.samplers", "ebrl.heads", "ebrl.training", "ebrl.boltzmann_machines",
            "ebrl.partition", "ebrl.agents", "ebrl.envs")
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))
BLOCKS = [(page.name, i, block) for page in TUTORIALS
          for i, block in enumerate(re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL))]


def resolve(dotted: str) -> Any:
    """The object a mkdocstrings identifier names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def reference_targets() -> list[str]:
    return [m for page in sorted((DOCS / "reference").glob("*.md"))
            for m in re.findall(r"^::: ([\w.]+)$", page.read_text(), flags=re.MULTILINE)]


def test_reference_targets_resolve() -> None:
    targets = reference_targets()
    assert len(targets) > 30
    for target in targets:
        resolve(target)  # raises with the name if it does not exist


def test_every_public_name_is_in_the_reference() -> None:
    documented = {id(resolve(t)) for t in reference_targets()}
    whole_modules = {t for t in reference_targets() if type(resolve(t)).__name__ == "module"}
    missing = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            home = getattr(obj, "__module__", "")
            if id(obj) not in documented and home not in whole_modules:
                missing.append(f"{package}.{name}")
    assert not missing, f"public names missing from docs/reference/*.md: {missing}"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    nav = set(re.findall(r":\s*([\w/]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), flags=re.MULTILINE))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert nav == pages, f"in nav only: {sorted(nav - pages)}; pages not in nav: {sorted(pages - nav)}"
    for page in DOCS.rglob("*.md"):
        for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text()):
            assert (page.parent / image).exists(), f"{page.name}: missing image {image}"


def test_tutorials_have_examples() -> None:
    assert {p.name for p in TUTORIALS} >= {"sb3.md", "gymnasium.md", "heads.md", "boltzmann_machines.md",
                                           "sweeps.md"}
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("page,index,block", BLOCKS, ids=[f"{p}-{i}" for p, i, _ in BLOCKS])
def test_tutorial_example_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    env = dict(os.environ, WANDB_MODE="offline", WANDB_DIR=str(tmp_path), WANDB_SILENT="true")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, f"{page} example {index} failed:\n{block}\n{proc.stderr[-3000:]}"
