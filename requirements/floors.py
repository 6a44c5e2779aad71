"""Print pyproject.toml's dependency floors as pins (`name>=X` -> `name==X`), base and the extras the tests use, for
`make test-floors`: the lowest declared releases installed together, then the fast tests run on them.

    python requirements/floors.py > /tmp/floors.in

torch is left to requirements/torch-cpu.in (the CPU wheel on the project's machines): its floor is a GPU user's
torch, not one this machine can install without downloading a CUDA build.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import tomllib

EXTRAS = ("train", "serve", "eval", "video")
NOT_PINNED = {"torch"}


def floors(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    reqs = list(project["dependencies"]) + [r for e in EXTRAS for r in project["optional-dependencies"][e]]
    out = []
    for req in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][^,;\s]*)\s*", req)
        if m and m.group(1).lower() not in NOT_PINNED:
            out.append(f"{m.group(1)}=={m.group(2)}")
    return out


if __name__ == "__main__":
    sys.stdout.write("\n".join(floors(Path(__file__).resolve().parents[1] / "pyproject.toml")) + "\n")
