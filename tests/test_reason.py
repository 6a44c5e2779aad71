"""`distill reason`: the student writes trace rows (hf backend full + LoRA, openai backend), resumes after kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.io import read_jsonl, write_jsonl_atomic
from distill.reason import ReasonConfig, main
from distill.score import ScoreConfig
from distill.score import main as score_main

REPO = Path(__file__).resolve().parents[1]
PIXELS = {"min_pixels": 28 * 28 * 4, "max_pixels": 28 * 28 * 16}


@pytest.fixture(scope="module")
def examples(demo_dir, tmp_path_factory):
    """Two demo examples of each subset (image and text-only queries), in our row schema."""
    from distill.data.mmeb import load_examples

    rows, per = [], {}
    for _, ex in load_examples(demo_dir / "train"):
        if per.get(ex["dataset"], 0) < 2:
            per[ex["dataset"]] = per.get(ex["dataset"], 0) + 1
            rows.append(ex)
    path = tmp_path_factory.mktemp("reason") / "examples.jsonl"
    write_jsonl_atomic(path, rows)
    return path, rows


def _run(tmp, examples_path, demo_dir, **kw) -> tuple[list[dict], dict]:
    out = tmp / kw.pop("out", "traces.jsonl")
    cfg = ReasonConfig(input=str(examples_path), output=str(out), image_root=str(demo_dir), max_new_tokens=6,
                       progress=False, **PIXELS, **kw)  # fmt: skip
    assert main(cfg) == 0
    return read_jsonl(out), json.loads(cfg.paths()["summary"].read_text())


def test_hf_full_checkpoint_rows_batches_and_score(tiny_vlm, examples, demo_dir, tmp_path):
    path, src = examples
    rows, summary = _run(tmp_path, path, demo_dir, model=str(tiny_vlm), batch_size=4)
    assert [(r["id"], r["sample_index"]) for r in rows] == [(e["id"], 0) for e in src]  # input order, one each
    for r, e in zip(rows, src, strict=True):
        assert {k: r[k] for k in e} == e and r["side"] == "query" and r["status"] in ("ok", "truncated")
        assert set(r["trace"]) == {"raw", "think", "final"} and r["usage"]["prompt_tokens"] > 0
        t = r["teacher"]
        assert (t["role"], t["backend"], t["checkpoint"], t["base_model"]) == ("student", "hf", str(tiny_vlm), None)
        assert t["sampling"] == {"temperature": 0.0, "max_tokens": 6} and len(t["fingerprint"]) == 16
    assert summary["run"]["batches"] == 3 and (summary["stage"], summary["rows_out"]) == ("reason", len(src))
    # batched + left-padded greedy decoding writes what one row at a time writes
    one, _ = _run(tmp_path, path, demo_dir, model=str(tiny_vlm), batch_size=1, out="one.jsonl")
    assert [r["trace"]["raw"] for r in one] == [r["trace"]["raw"] for r in rows]
    # score runs on student rows unchanged
    scored = tmp_path / "scored.jsonl"
    assert score_main(ScoreConfig(input=str(tmp_path / "traces.jsonl"), output=str(scored),
                                  scorers={"format": {"require_think": False}, "truncated": None})) == 0  # fmt: skip
    got = [r["scores"]["truncated"] for r in read_jsonl(scored)]
    assert got == [1.0 if r["status"] == "truncated" else 0.0 for r in rows]


def test_hf_lora_adapter_equals_its_merged_model(tiny_vlm, examples, demo_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from distill.processing import load_processor

    torch.manual_seed(0)
    base = AutoModelForImageTextToText.from_pretrained(tiny_vlm)
    lora = get_peft_model(
        base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )  # fmt: skip  (non-zero B: the adapter matters)
    lora.save_pretrained(tmp_path / "adapter")
    load_processor(tiny_vlm).save_pretrained(tmp_path / "adapter")
    lora.merge_and_unload().save_pretrained(tmp_path / "merged")
    load_processor(tiny_vlm).save_pretrained(tmp_path / "merged")
    path, src = examples
    adapted, _ = _run(tmp_path, path, demo_dir, model=str(tmp_path / "adapter"), out="adapter.jsonl")
    merged, _ = _run(tmp_path, path, demo_dir, model=str(tmp_path / "merged"), out="merged.jsonl")
    plain, _ = _run(tmp_path, path, demo_dir, model=str(tiny_vlm), out="plain.jsonl")
    assert adapted[0]["teacher"]["base_model"] == str(tiny_vlm)
    assert [r["trace"]["raw"] for r in adapted] == [r["trace"]["raw"] for r in merged]
    assert [r["trace"]["raw"] for r in adapted] != [r["trace"]["raw"] for r in plain]


def test_openai_backend_sends_the_student_prompt(fake_teacher, examples, demo_dir, tmp_path):
    server, url = fake_teacher(record=True)
    path, src = examples
    rows, summary = _run(tmp_path, path, demo_dir, backend="openai", model="student", base_urls=[url],
                         temperature=0.7, num_samples=2, seed=5)  # fmt: skip
    assert len(rows) == 2 * len(src) and len(server.requests) == 2 * len(src)
    assert all(r["status"] == "ok" and r["trace"]["think"] and r["teacher"]["backend"] == "openai" for r in rows)
    bodies = {(b := q["body"])["seed"]: b for q in server.requests}
    assert sorted(bodies) == [5, 6] and bodies[5]["max_tokens"] == 6
    first = next(q["body"] for q in server.requests if q["body"]["messages"][0]["content"][0]["type"] == "image_url")
    user = first["messages"][0]
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image_url", "text"]
    assert user["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    # a rerun sends nothing: every answer comes from the journal
    again, summary = _run(tmp_path, path, demo_dir, backend="openai", model="student", base_urls=[url],
                          temperature=0.7, num_samples=2, seed=5)  # fmt: skip
    assert again == rows and summary["run"]["to_send"] == 0 and len(server.requests) == 2 * len(src)


def _kill_when_journal_has(cmd: list[str], journal: Path, lines: int, timeout: float = 120) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= lines:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.parametrize("backend", ["hf", "openai"])
def test_kill_9_then_resume_loses_and_duplicates_nothing(backend, tiny_vlm, fake_teacher, examples, demo_dir,
                                                         tmp_path):  # fmt: skip
    path, src = examples
    out = tmp_path / "traces.jsonl"
    args = [
        "--input",
        str(path),
        "--output",
        str(out),
        "--image_root",
        str(demo_dir),
        "--max_new_tokens",
        "24",
        "--progress",
        "false",
        "--min_pixels",
        str(PIXELS["min_pixels"]),
        "--max_pixels",
        str(PIXELS["max_pixels"]),
    ]
    if backend == "hf":
        args += ["--model", str(tiny_vlm), "--batch_size", "1"]
    else:
        _, url = fake_teacher(latency_s=0.2)
        args += ["--backend", "openai", "--model", "student", "--base_url", url, "--max_concurrency", "1"]
    journal = tmp_path / "traces.journal.jsonl"
    _kill_when_journal_has([sys.executable, "-m", "distill", "reason", *args], journal, lines=3)
    before = journal.read_bytes().count(b"\n")
    assert 3 <= before < len(src) and not out.exists()
    assert cli_main(["reason", *args]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == [e["id"] for e in src] and all(r["status"] != "failed" for r in rows)
    keys = [json.loads(line)["key"] for line in journal.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(src)  # nothing generated twice, nothing missing
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["run"]["journaled_before"] == before and summary["run"]["to_send"] == len(src) - before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--input", "nope.jsonl"], "distill reason: error: input nope.jsonl: does not exist"),
        (["--model", "no/such/dir"], "input no/such/dir: does not exist"),
        (["--num_samples", "2"], "num_samples > 1 with greedy decoding"),
        (["--backend", "openai", "--api_key_env", "DISTILL_TEST_UNSET_KEY"], "DISTILL_TEST_UNSET_KEY"),
    ],
)
def test_bad_input_gets_a_message_not_a_traceback(args, message, tiny_vlm, examples, tmp_path, capsys):
    path, _ = examples
    base = {"--input": str(path), "--output": str(tmp_path / "o.jsonl"), "--model": str(tiny_vlm)}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v
    assert cli_main(["reason", *[x for kv in base.items() for x in kv]]) != 0
    assert message in capsys.readouterr().err


def test_bad_rows_are_reported_with_their_line_and_failed(tiny_vlm, examples, demo_dir, tmp_path, caplog):
    path, src = examples
    bad = tmp_path / "bad.jsonl"
    lines = path.read_text().splitlines()[:2]
    missing = {**src[2], "id": "x-missing-image", "query": {"text": "q", "images": ["images/nope.png"]}}
    bad.write_text("\n".join([*lines, "{not json", json.dumps(missing)]) + "\n")
    rows, summary = _run(tmp_path, bad, demo_dir, model=str(tiny_vlm))
    assert summary["problems"][0]["line"] == 3 and "JSON" in summary["problems"][0]["reason"]
    assert rows[-1]["status"] == "failed" and "image file not found" in rows[-1]["error"]
    assert f"{bad}:4: " in caplog.text


def test_hf_batch_keeps_mrope_positions_of_image_tokens(tiny_vlm):
    """A left-padded batch of an image prompt and a text prompt gives the image row the logits of its own unpadded
    forward with every processor output (incl. mm_token_type_ids): without them Qwen2-VL's generate silently gives
    image tokens text positions, unlike training."""
    import torch
    from PIL import Image

    from distill.reason_hf import Student

    student = Student(str(tiny_vlm), device="cpu", dtype="float32", **PIXELS)
    img = Image.new("RGB", (56, 56), "red")
    with_image = student.encode([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what?"}]}],
                                [img])  # fmt: skip
    text_only = student.encode([{"role": "user", "content": "a much longer text-only question " * 3}], [])
    assert with_image.mm_token_type_ids is not None and any(with_image.mm_token_type_ids)
    batch = student._collate([with_image, text_only])
    assert "mm_token_type_ids" in batch
    with torch.no_grad():
        batched = student.model(**batch).logits[0, -1]
        alone = student.model(**student._collate([with_image])).logits[0, -1]
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-4)


def test_chunked_run_writes_the_same_rows_as_one_chunk(fake_teacher, examples, demo_dir, tmp_path, monkeypatch):
    """Issue 11: examples are planned, generated and written CHUNK_EXAMPLES at a time (bounded memory); chunks of 3
    give the very rows of one chunk, and the summary counts every chunk."""
    import distill.reason as reason_mod

    _, url = fake_teacher()
    path, src = examples
    kw = {"backend": "openai", "model": "student", "base_urls": [url], "num_samples": 2, "seed": 1, "temperature": 0.7}
    one, _ = _run(tmp_path, path, demo_dir, out="one.jsonl", **kw)
    monkeypatch.setattr(reason_mod, "CHUNK_EXAMPLES", 3)
    many, summary = _run(tmp_path, path, demo_dir, out="many.jsonl", **kw)
    assert many == one and len(many) == 2 * len(src)
    assert (summary["run"]["to_send"], summary["run"]["journaled_before"]) == (2 * len(src), 0)  # its own journal
