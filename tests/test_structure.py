"""The house rules of issue 13, kept by tests: small files and functions in the library packages,
and every pointer into docs/architecture.md naming a section that exists."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("ebrl", "agents", "envs")


def python_files(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", python_files(*LIBRARY), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_files_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400


def test_no_function_over_80_lines_outside_benchmarks():
    long = []
    for path in python_files(*LIBRARY, "experiments"):
        if "benchmarks" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.name} ({n} lines)")
    assert long == []


def test_pointers_into_the_architecture_map_name_existing_sections():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    headings = {h.strip().strip("`") for h in re.findall(r"^#+ (.+)$", doc, flags=re.M)}
    dangling = []
    for path in python_files(*LIBRARY, "experiments"):
        text = path.read_text()
        if "ARCHITECTURE.md" in text:
            dangling.append(f"{path.relative_to(ROOT)}: ARCHITECTURE.md is not in the repository")
        for section in re.findall(r'docs/architecture\.md, "([^"]+)"', text):
            if section not in headings:
                dangling.append(f"{path.relative_to(ROOT)}: no section {section!r}")
    assert dangling == []


def test_installed_packages_are_the_folders_under_one_import_name():
    """pyproject installs agents/, envs/ and experiments/ as ebrl.agents, ebrl.envs and
    ebrl.experiments (no top-level name of ours can collide with another package's); its explicit
    package list must name every folder that holds an __init__.py, and nothing else."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = config["package-dir"]
    assert folders == {"ebrl": "ebrl", "ebrl.agents": "agents", "ebrl.envs": "envs",
                       "ebrl.experiments": "experiments"}
    found = set()
    for name, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *rel)))
    assert sorted(config["packages"]) == sorted(found)
