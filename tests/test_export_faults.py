"""`export` and `train` at their edges (issue 21): a full disk while the dataset is written, and an export whose data
files are empty, cut or rowless: one `distill <verb>: error:` line naming the file, exit 2, the old output intact.
Outputs get the umask's mode like any file (the atomic writer made them 0600)."""

import errno
import json
import os
import stat

import pytest

from distill.cli import main as cli_main
from distill.export import ExportConfig, export
from distill.io import write_jsonl_atomic
from distill.testing.traces import kept_demo_rows

PIXELS = ["--max_pixels", str(28 * 28 * 16)]


@pytest.fixture(scope="module")
def kept(demo_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("export_faults") / "kept.jsonl"
    write_jsonl_atomic(path, kept_demo_rows(str(demo_dir / "train"))[:12])
    return path


@pytest.fixture(scope="module")
def exported(kept, demo_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("export_ok") / "export"
    export(ExportConfig(input=str(kept), output=str(out), image_root=str(demo_dir), max_pixels=28 * 28 * 16))
    return out


def _one_error_line(capfd, verb: str) -> str:
    err = capfd.readouterr().err  # progress bars and log lines aside, one line from distill and no traceback
    ours = [x for x in err.splitlines() if x.startswith("distill ")]
    assert len(ours) == 1 and ours[0].startswith(f"distill {verb}: error: ") and "Traceback" not in err, err
    return ours[0]


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("where", ["arrow cache", "parquet shards", "train.jsonl"])
def test_export_on_a_full_disk_is_one_line_and_keeps_the_old_export(where, kept, demo_dir, exported, tmp_path,
                                                                    monkeypatch, capfd):  # fmt: skip
    import shutil

    out = tmp_path / "export"
    shutil.copytree(exported, out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if where == "arrow cache":  # datasets wraps it in DatasetGenerationError: it was a traceback
        monkeypatch.setattr("datasets.arrow_writer.ArrowWriter.write", _enospc)
    elif where == "parquet shards":
        monkeypatch.setattr("datasets.Dataset.to_parquet", _enospc)
    else:
        monkeypatch.setattr("distill.export.os.fsync", _enospc)
    capfd.readouterr()
    rc = cli_main(["export", "--input", str(kept), "--output", str(out), "--image_root", str(demo_dir), *PIXELS])
    assert rc == 2 and "no space left on the device" in _one_error_line(capfd, "export")
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != "config.yaml"}
    assert after == {k: v for k, v in before.items() if k.name != "config.yaml"}  # no temp file left, nothing lost


def _empty(path):
    path.write_bytes(b"")


def _cut(path):
    path.write_bytes(path.read_bytes()[:100])


def _rowless(path):
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    pq.write_table(table.slice(0, 0), path)


@pytest.mark.parametrize(
    "damage, message",
    [
        (_empty, "train-00000-of-00001.parquet: empty file (0 bytes)"),
        (_cut, "train-00000-of-00001.parquet: not a readable parquet file"),
        (_rowless, "train-00000-of-00001.parquet: a parquet file without rows"),
    ],
)
def test_train_on_a_damaged_export_is_one_line(damage, message, exported, tiny_vlm, tmp_path, capfd):
    import shutil

    data = tmp_path / "export"
    shutil.copytree(exported, data)
    damage(data / "data" / "train-00000-of-00001.parquet")
    capfd.readouterr()
    rc = cli_main(["train", "--config", "recipes/demo/train.yaml", "--model_name_or_path", str(tiny_vlm),
                   "--dataset_path", str(data), "--output_dir", str(tmp_path / "model"), "--max_steps", "1"])  # fmt: skip
    assert rc == 2 and message in _one_error_line(capfd, "train")


def test_export_outputs_respect_the_umask(kept, demo_dir, tmp_path):
    old = os.umask(0o022)
    try:
        rc = cli_main(["export", "--input", str(kept), "--output", str(tmp_path / "e"), "--image_root", str(demo_dir),
                       *PIXELS])  # fmt: skip
    finally:
        os.umask(old)
    assert rc == 0
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "e").rglob("*") if p.is_file()}
    assert {"train.jsonl", "README.md", "summary.json", "config.yaml", "manifest.json"} <= set(modes)
    assert set(modes.values()) == {0o644}, modes
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["rows_out"] > 0
