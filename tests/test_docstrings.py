"""Every public name of the library packages has a docstring (issue 13): module-level classes
and functions defined in a public module of ``ebrl`` or ``agents``, and the public methods and
properties of those classes. A method that overrides a documented base method inherits its
docstring (``inspect.getdoc``), as Sphinx and ``help()`` show it."""

import importlib
import inspect
import pkgutil

import pytest

import ebrl
import ebrl.agents as agents


def public_modules():
    for package in (ebrl, agents):
        yield package.__name__
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if not any(part.startswith("_") for part in info.name.split(".")):
                yield info.name


def undocumented(module_name: str) -> list[str]:
    module = importlib.import_module(module_name)
    missing = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
            continue
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") or not (inspect.isfunction(member) or isinstance(member, property)):
                    continue
                if not inspect.getdoc(getattr(obj, attr)):
                    missing.append(f"{name}.{attr}")
    return missing


@pytest.mark.parametrize("module_name", sorted(set(public_modules())))
def test_every_public_name_has_a_docstring(module_name):
    assert undocumented(module_name) == []
