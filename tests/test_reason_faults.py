"""`distill reason` at its edges (issue 21): a damaged or half-copied checkpoint, an adapter that names no base, a
second run on a running job's output, a row far longer than the context. Each is one `distill reason: error:` line
with exit 2 and nothing written, or one failed row while the others are answered."""

import json
import shutil
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.client.journal import Journal
from distill.io import read_jsonl, write_jsonl_atomic

PIXELS = ["--min_pixels", str(28 * 28 * 4), "--max_pixels", str(28 * 28 * 16)]


@pytest.fixture(scope="module")
def examples(demo_dir, tmp_path_factory):
    """Three demo examples, the first a text-only query."""
    from distill.data.mmeb import load_examples

    rows = [ex for _, ex in load_examples(demo_dir / "train")]
    text = next(r for r in rows if not r["query"].get("images"))
    rows = [text, *[r for r in rows if r is not text][:2]]
    path = tmp_path_factory.mktemp("reason_faults") / "examples.jsonl"
    write_jsonl_atomic(path, rows)
    return path, rows


def reason_args(model, examples_path, out, demo_dir, *extra) -> list[str]:
    return ["reason", "--model", str(model), "--input", str(examples_path), "--output", str(out), "--image_root",
            str(demo_dir), "--max_new_tokens", "4", "--progress", "false", *PIXELS, *extra]  # fmt: skip


def _truncated(ckpt: Path) -> None:
    f = ckpt / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _adapter(ckpt: Path, base) -> None:
    """A LoRA adapter folder (weights are any valid safetensors file) whose config names `base`."""
    for f in ckpt.iterdir():
        if f.name != "model.safetensors":
            f.unlink()
    (ckpt / "model.safetensors").rename(ckpt / "adapter_model.safetensors")
    (ckpt / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "base_model_name_or_path": base}))


@pytest.mark.parametrize(
    "damage, extra, message",
    [
        (_truncated, [], "model.safetensors: unreadable weights (Error while deserializing header"),
        (lambda c: [f.unlink() for f in c.iterdir()], [], "not a checkpoint (no config.json or adapter_config.json"),
        (
            lambda c: (c / "config.json").write_text('{"model_type": "qwen2_vl",\n  oops}'),
            [],
            "config.json: line 2: not valid JSON",
        ),  # fmt: skip
        (lambda c: _adapter(c, None), [], "adapter_config.json: base_model_name_or_path is null"),
        (lambda c: _adapter(c, "/no/such/base"), [], "base_model_name_or_path /no/such/base: no such checkpoint"),
        (
            lambda c: _adapter(c, "/no/such/base"),
            ["--base_model", "/also/missing"],
            "--base_model /also/missing: no such checkpoint directory",
        ),  # fmt: skip
        (lambda c: None, ["--base_model", "/x"], "is a full checkpoint (no adapter_config.json), not a LoRA adapter"),
    ],
    ids=[
        "truncated-weights",
        "empty-dir",
        "broken-config",
        "adapter-null-base",
        "adapter-missing-base",
        "bad-base-model",
        "base-model-for-full-checkpoint",
    ],  # fmt: skip
)
def test_a_damaged_checkpoint_is_one_line_exit_2_and_nothing_written(damage, extra, message, tiny_vlm, examples,
                                                                       demo_dir, tmp_path, capfd):  # fmt: skip
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_vlm, ckpt)
    damage(ckpt)
    out = tmp_path / "out" / "traces.jsonl"
    rc = cli_main(reason_args(ckpt, examples[0], out, demo_dir, *extra))
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("distill reason: error: "), err
    assert message in err[0]
    assert not out.parent.exists() or not any(out.parent.iterdir())  # before: a traceback or transformers' text


def test_second_reason_on_the_same_output_is_refused_without_touching_files(tiny_vlm, examples, demo_dir, tmp_path,
                                                                            capfd):  # fmt: skip
    """Before: the second run rewrote traces.config.yaml (naming its own model) and only then met the lock."""
    out = tmp_path / "traces.jsonl"
    assert cli_main(reason_args(tiny_vlm, examples[0], out, demo_dir, "--max_examples", "1")) == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    capfd.readouterr()
    with Journal(tmp_path / "traces.journal.jsonl"):  # the first run, still running, holds the lock
        rc = cli_main(reason_args(tiny_vlm, examples[0], out, demo_dir, "--name", "other-student"))
    err = capfd.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "in use by another process" in err[0] and "error:" in err[0]
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before


def test_a_row_longer_than_the_context_fails_alone_and_a_rerun_goes_on(tiny_vlm, examples, demo_dir, tmp_path):
    """Before: one 1 MB row made `generate` ask for 656 GB; the run died with nothing journaled, every rerun too."""
    path, rows = examples
    huge = {**rows[0], "id": "huge", "query": {**rows[0]["query"], "text": "word " * 200_000}}  # 1 MB of text
    long = {**rows[0], "id": "long", "query": {**rows[0]["query"], "text": " ".join(map(str, range(3000)))}}
    data = tmp_path / "with_huge.jsonl"
    write_jsonl_atomic(data, [rows[0], huge, long, *rows[1:]])
    out = tmp_path / "traces.jsonl"
    for attempt in range(2):
        assert cli_main(reason_args(tiny_vlm, data, out, demo_dir)) == 0
        got = {r["id"]: r for r in read_jsonl(out)}
        assert got["huge"]["status"] == "failed" and "characters of text" in got["huge"]["error"]
        assert got["long"]["status"] == "failed" and "over the model's context of 4096 tokens" in got["long"]["error"]
        assert all(r["status"] != "failed" for i, r in got.items() if i not in ("huge", "long"))
        summary = json.loads((tmp_path / "traces.summary.json").read_text())
        assert summary["run"]["journaled_before"] == (0 if attempt == 0 else len(rows))
