"""The CPU torch pin vs the torch + torchvision pair: install time and size, import time, and a test subset's time.

    python benchmarks/torch_pair.py --lock requirements-cpu.lock --lock requirements.lock --install
    python benchmarks/torch_pair.py --python /work/venvs/a/bin/python --python /work/venvs/b/bin/python \
        --tests tests/test_tiny.py tests/test_video.py

With `--install`, each lock goes into a fresh venv under --venvs (pip, the project's machines' local wheels; the pip
cache as it is) and the seconds and megabytes are printed. Then, for each interpreter, alternately: the best of 3
`import torch, transformers, trl` times, and one run of the test subset (this checkout on PYTHONPATH). Each figure is
printed with its ratio to the first one, and the load average beside it: on a shared machine only side-by-side ratios
mean anything.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _timed(cmd: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return time.perf_counter() - t, proc


def _megabytes(path: Path) -> int:
    return int(subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout.split()[0])


def install(lock: Path, venv: Path) -> tuple[float, int]:
    """(seconds, MB) for a fresh venv with `lock` installed, as `make install` does it."""
    subprocess.run(["rm", "-rf", str(venv)], check=True)
    env = {**os.environ, "DS_BUILD_OPS": "0"}
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    proc = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-r", str(lock)], env=env, capture_output=True,
                          text=True)  # fmt: skip
    if proc.returncode:
        raise SystemExit(f"{lock}: pip failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t, _megabytes(venv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lock", action="append", default=[], help="lock files to install (with --install)")
    ap.add_argument("--install", action="store_true")
    ap.add_argument("--venvs", default="/tmp/torch-pair-venvs")
    ap.add_argument("--python", action="append", default=[], help="interpreters to compare (instead of --lock)")
    ap.add_argument("--tests", nargs="*", default=["tests/test_tiny.py", "tests/test_video.py"])
    args = ap.parse_args()

    pythons = [Path(p) for p in args.python]
    for i, lock in enumerate(args.lock):
        venv = Path(args.venvs) / f"{i}-{Path(lock).stem}"
        if args.install:
            secs, mb = install(Path(lock), venv)
            print(f"install {lock}: {secs:.0f} s, {mb} MB (load {_load()})", flush=True)
        pythons.append(venv / "bin/python")

    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    imports: dict[Path, float] = {p: float("inf") for p in pythons}
    for _ in range(3):  # interleaved, so both see the same machine
        for py in pythons:
            secs, proc = _timed([str(py), "-c", "import torch, transformers, trl"], env=env)
            assert proc.returncode == 0, proc.stderr[-2000:]
            imports[py] = min(imports[py], secs)
    first = imports[pythons[0]]
    for py in pythons:
        print(f"import torch, transformers, trl: {imports[py]:.2f} s ({imports[py] / first:.2f}x)  {py}", flush=True)

    base = None
    for py in pythons:
        secs, proc = _timed([str(py), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args.tests], env=env,
                            cwd=REPO)  # fmt: skip
        lines = proc.stdout.strip().splitlines() or ["(no output)"]
        for line in lines:
            if line.startswith(("FAILED", "ERROR")):
                print(f"  {line[:300]}", flush=True)
        last = lines[-1]
        base = base or secs
        print(f"pytest {' '.join(args.tests)}: {secs:.0f} s ({secs / base:.2f}x), load {_load()}: {last}  {py}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
