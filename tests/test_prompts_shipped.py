"""Teacher prompts ship with the package; a missing/broken prompts directory, or every row failing for one reason,
is a configuration error with a non-zero exit (issue 11).

    pytest -q tests/test_prompts_shipped.py
"""

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.io import read_jsonl
from distill.teacher.prompts import TARGET_TEMPLATE, TASK_TEMPLATES, installed_prompts_dir

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted({*TASK_TEMPLATES.values(), TARGET_TEMPLATE})


def _args(url, out, *extra):
    return ["generate", "--input", str(REPO / "data/demo/train"), "--image_root", str(REPO / "data/demo"),
            "--base_url", url, "--model", "m", "--output", str(out), "--max_examples", "6", "--progress", "false",
            "--timeout_s", "2", "--max_retries", "0", *extra]  # fmt: skip


def test_generate_from_another_directory_uses_the_installed_prompts(fake_teacher, tmp_path):
    """No prompts_dir and a working directory without teacher_prompts/: the packaged templates are used."""
    fake, url = fake_teacher()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "distill", *_args(url, "out/t.jsonl")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = read_jsonl(tmp_path / "out/t.jsonl")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"} and fake.seen_keys
    assert all(r["teacher"]["prompt_id"].startswith("ecr-") for r in rows)


def test_the_wheel_carries_the_templates(tmp_path):
    """What `pip install` users get: the built wheel holds every template and the judge rubric."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in ("distill", "teacher_prompts"):  # the templates' one source is the top-level folder
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("distill-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"distill/teacher_prompts/{t}" for t in TEMPLATES} <= names
    assert "distill/teacher_prompts/judge/ecr_quality.md" in names
    # installed from the wheel (unpacked, as pip would), run from another directory: the shipped copy is found
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "from distill.teacher.prompts import TASK_TEMPLATES, TemplateSet, installed_prompts_dir as d; "
        "TemplateSet().check(TASK_TEMPLATES, 'query'); TemplateSet().check(TASK_TEMPLATES, 'target'); print(d())"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(site)},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == str(site / "distill" / "teacher_prompts")


def _broken_dir(tmp_path, how):
    d = tmp_path / "prompts"
    if how == "missing":
        return d
    shutil.copytree(installed_prompts_dir(), d)
    if how == "one_file_gone":
        (d / "vqa.yaml").unlink()
    elif how == "bad_yaml":
        (d / "vqa.yaml").write_text("id: [unclosed\n")
    elif how == "unknown_field":
        (d / "classification.yaml").write_text("id: x\nversion: 1\nsystem: s\nuser: '{nonsense}'\n")
    return d


@pytest.mark.parametrize(
    "how, says",
    [("missing", "does not exist"), ("one_file_gone", "vqa.yaml"), ("bad_yaml", "not valid YAML"),
     ("unknown_field", "nonsense")],
)  # fmt: skip
def test_a_missing_or_broken_prompts_dir_exits_2_before_any_request(fake_teacher, tmp_path, capfd, how, says):
    fake, url = fake_teacher()
    out = tmp_path / "t.jsonl"
    rc = cli_main(_args(url, out, "--prompts_dir", str(_broken_dir(tmp_path, how)), "--max_examples", "60"))
    err = capfd.readouterr().err
    assert rc == 2 and says in err and "Traceback" not in err
    assert fake.seen_keys == [] and not out.exists()


def test_a_user_prompts_dir_overrides_the_installed_one(fake_teacher, tmp_path):
    d = _broken_dir(tmp_path, "copy")
    for name in TEMPLATES:
        text = (d / name).read_text()
        (d / name).write_text(re.sub(r"version: \d+", "version: 7", text, count=1))
    fake, url = fake_teacher()
    assert cli_main(_args(url, tmp_path / "t.jsonl", "--prompts_dir", str(d))) == 0
    assert {r["teacher"]["prompt_id"].split("@")[1] for r in read_jsonl(tmp_path / "t.jsonl")} == {"v7"}


@pytest.mark.parametrize("status, rc", [(404, 1), (None, 0)])
def test_every_row_failing_for_one_reason_exits_non_zero(fake_teacher, tmp_path, capfd, status, rc):
    """A wrong model name (404 on every request) fails all rows alike: the stage says so and exits 1."""
    fake, url = fake_teacher(status=status)
    assert cli_main(_args(url, tmp_path / "t.jsonl")) == rc
    rows, err = read_jsonl(tmp_path / "t.jsonl"), capfd.readouterr().err
    assert len(rows) == 6  # the rows are still written, with their reason
    assert ("every row (6) failed with the same reason: HTTP 404" in err) == (status == 404)
