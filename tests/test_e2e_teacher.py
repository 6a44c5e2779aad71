"""Real HTTP end to end: `distill serve` over the tiny VLM, driven by `distill generate` on the demo data."""

import json
import urllib.request
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.io import read_jsonl
from distill.serve.launch import LocalTeacher

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_generate_against_distill_serve(tiny_vlm, tmp_path, monkeypatch):
    # With a key: LocalTeacher must come up although /v1 answers 401 without it, and the key must reach no file.
    key = "sk-e2e-secret-0123456789"
    monkeypatch.setenv("DISTILL_E2E_KEY", key)
    serve = {"models": [f"tiny-vlm={tiny_vlm}"], "args": ["--api_key_env", "DISTILL_E2E_KEY"]}
    teacher = LocalTeacher(serve, log_path=tmp_path / "serve.log", ready_timeout_s=120).start()
    try:
        out = tmp_path / "traces.jsonl"
        rc = cli_main(["generate", "--config", str(REPO / "recipes/demo/generate.yaml"),
                       "--input", str(REPO / "data/demo/train"), "--image_root", str(REPO / "data/demo"),
                       "--base_url", teacher.base_url,
                       "--model", "tiny-vlm", "--image_model", "tiny-vlm", "--max_tokens", "12",
                       "--max_examples", "15", "--output", str(out), "--progress", "false",
                       "--api_key_env", "DISTILL_E2E_KEY"])  # fmt: skip
        req = urllib.request.Request(f"{teacher.base_url}/stats", headers={"Authorization": f"Bearer {key}"})
        with urllib.request.urlopen(req) as r:
            stats = json.loads(r.read())
    finally:
        teacher.stop()
    assert rc == 0
    rows = read_jsonl(out)
    assert len(rows) == 15 and len({(r["id"], r["sample_index"]) for r in rows}) == 15
    # A random tiny model rarely stops within 12 tokens: every row is a complete or truncated answer, none failed.
    assert {r["status"] for r in rows} <= {"ok", "truncated"}, [r["error"] for r in rows if r["status"] == "failed"]
    assert all(r["trace"]["raw"] and r["usage"]["completion_tokens"] <= 12 for r in rows)
    assert all(r["teacher"]["model"] == "tiny-vlm" and len(r["teacher"]["prompt_sha"]) == 64 for r in rows)
    with_images = [r for r in rows if r["query"]["images"]]
    assert with_images and all(r["usage"]["prompt_tokens"] > 0 for r in with_images)
    # The server saw every request the journal holds, batched.
    assert (
        stats["requests"] >= len({r["teacher"]["request_sha"] for r in rows}) and stats["batches"] <= stats["requests"]
    )
    assert teacher.proc.returncode == 0  # SIGTERM -> clean exit
    assert not [f for f in tmp_path.iterdir() if f.is_file() and key.encode() in f.read_bytes()]
