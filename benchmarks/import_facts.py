"""Facts about the package's shape that anyone can recompute (no import runs, the source is parsed):
modules over 300 lines, import circles among distill modules (imports inside functions count: they still tie the
modules together), and stage modules that import another stage's module or package.

    python benchmarks/import_facts.py            # from the repository root
    python benchmarks/import_facts.py --json     # the same facts as JSON

A stage module is a module the CLI names (every `"distill.<...>"` string in distill/cli.py).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "distill"
LIMIT = 300


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The distill modules `path` imports (anywhere in the file); `from pkg import sub` counts as pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in known else base)
    return {m for m in out if m in known and m != name}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return sorted(found)


def stage_modules(known: set[str]) -> list[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse((PKG / "cli.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in known:
            if node.value.startswith("distill.") and node.value != "distill.cli":
                names.add(node.value)
    return sorted(names)


def facts() -> dict:
    mods = modules()
    known = set(mods)
    graph = {m: imports(p, m, known) for m, p in mods.items()}
    lines = {m: len(p.read_text(encoding="utf-8").splitlines()) for m, p in mods.items()}
    stages = stage_modules(known)
    # a stage's "home": its package when it lives in a sub-package (distill.teacher.generate -> distill.teacher)
    home = {s: s.rpartition(".")[0] if s.count(".") > 1 else s for s in stages}
    cross = []
    for s in stages:
        for m in sorted(graph[s]):
            other = [t for t in stages if t != s and home[t] != home[s] and (m == t or m.startswith(home[t] + "."))]
            if other and home[s] != home[other[0]]:
                cross.append(f"{s} -> {m}")
    return {
        "modules": len(mods),
        "lines_total": sum(lines.values()),
        "over_300": {m: n for m, n in sorted(lines.items(), key=lambda kv: -kv[1]) if n > LIMIT},
        "import_circles": circles(graph),
        "stage_modules": stages,
        "stage_imports_other_stage": cross,
    }


def main() -> None:
    f = facts()
    if "--json" in sys.argv:
        print(json.dumps(f, indent=2))
        return
    print(f"{f['modules']} modules, {f['lines_total']} lines")
    print(f"modules over {LIMIT} lines: {len(f['over_300'])}")
    for m, n in f["over_300"].items():
        print(f"  {n:5d}  {m}")
    print(f"import circles: {len(f['import_circles'])}")
    for c in f["import_circles"]:
        print("  " + " <-> ".join(c))
    print(f"stage modules importing another stage's module or package: {len(f['stage_imports_other_stage'])}")
    for line in f["stage_imports_other_stage"]:
        print("  " + line)


if __name__ == "__main__":
    main()
