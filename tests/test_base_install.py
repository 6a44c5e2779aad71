"""A base install (`pip install distill`, no extras) runs validate -> generate -> score (rule scorers) -> filter, and a
verb of a missing extra says which extra in one line.

The base install is emulated faithfully and cheaply: the child Python runs with `-S` (no site-packages) on a copy of
site-packages made of symlinks, minus the packages of the extras (`distill.extras.OPTIONAL`), so for it they are not
installed at all: `find_spec` finds nothing and no metadata is there, as after a real base install.
"""

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from distill.extras import OPTIONAL
from distill.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]
ROWS = "data/demo/train/ShapesVQA.jsonl"  # 12 rows with images
pytestmark = pytest.mark.slow


def _hidden(name: str) -> bool:
    """Is this site-packages entry (package, module, .libs folder or .dist-info) one of an extra's packages?"""
    stem = name.split("-")[0] if name.endswith((".dist-info", ".egg-info")) else name.split(".")[0]
    stem = stem.lower().replace("-", "_")
    return stem in OPTIONAL or stem.removesuffix("_libs") in OPTIONAL


@pytest.fixture(scope="module")
def base_python(tmp_path_factory):
    """A command prefix running Python as after `pip install distill` with no extras."""
    mirror = tmp_path_factory.mktemp("base-site-packages")
    for sp in site.getsitepackages():
        for entry in Path(sp).iterdir():
            if not _hidden(entry.name) and not (mirror / entry.name).exists():
                (mirror / entry.name).symlink_to(entry)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{mirror}", "HF_HUB_OFFLINE": "1"}

    def run(*args, **kw):
        return subprocess.run([sys.executable, "-S", *args], env=env, capture_output=True, text=True, timeout=300,
                              cwd=kw.pop("cwd", REPO), **kw)  # fmt: skip

    probe = run("-c", f"import importlib.util as u, transformers, trl; print([m for m in {sorted(OPTIONAL)!r} "
                      "if u.find_spec(m)])")  # fmt: skip
    assert probe.returncode == 0 and probe.stdout.strip() == "[]", probe.stdout + probe.stderr
    return run


def test_base_install_validates_generates_scores_and_filters(base_python, fake_teacher, tmp_path):
    fake, url = fake_teacher()
    out = tmp_path / "run"
    steps = [
        ["validate", "--input", ROWS, "--image_root", "data/demo", "--report", str(out / "validate.json")],
        ["generate", "--config", "recipes/demo/generate.yaml", "--input", ROWS, "--base_url", url, "--output",
         str(out / "traces.jsonl"), "--progress", "false", "--num_samples", "1"],
        ["score", "--input", str(out / "traces.jsonl"), "--output", str(out / "scored.jsonl"), "--image_root",
         "data/demo", "--scorers", '{"format": {}, "truncated": {}, "repetition": {"n": 4}, "near_duplicate": {}}'],
        ["filter", "--input", str(out / "scored.jsonl"), "--kept", str(out / "kept.jsonl"), "--rejected",
         str(out / "rejected.jsonl"), "--report_dir", str(out / "report"), "--thresholds", '{"format": {"min": 1}}'],
    ]  # fmt: skip
    # one child runs the four verbs in turn (one import of torch/transformers, not four)
    script = "import json, sys\nfrom distill.cli import main\nfor args in json.loads(sys.argv[1]):\n    rc = main(args)\n" \
             "    if rc:\n        sys.exit(f'distill {args[0]} exited {rc}')"  # fmt: skip
    proc = base_python("-c", script, json.dumps(steps))
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = read_jsonl(out / "scored.jsonl")
    assert len(scored) == 12 and all(r["status"] == "ok" and "format" in r["scores"] for r in scored)
    assert fake.seen_keys  # the teacher was asked (rows with the same request share one answer)
    report = (out / "report" / "report.md").read_text()
    assert "No plots: needs matplotlib" in report and "distill[eval]" in report  # the filter ran, without its plots


@pytest.mark.parametrize(("verb", "extra"), [("serve", "serve")])
def test_a_verb_of_a_missing_extra_is_one_line_naming_it(base_python, verb, extra):
    proc = base_python("-m", "distill", verb, "--help")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"distill {verb}: error: needs ")
    assert f"pip install 'distill[{extra}]'" in proc.stderr
