"""`distill run`: the whole chain, resumable stage by stage and request by request."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from distill.io import read_jsonl
from distill.testing.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
STAGES = ["generate", "score", "filter", "export", "train"]


def _pipeline(tmp_path: Path, tiny_vlm: Path, url: str) -> dict:
    """All five stages against a fake teacher (well-formed traces, fixed latency), small settings."""
    return {
        "name": "t",
        "runs_root": str(tmp_path / "runs"),
        "generate": {"recipe": "recipes/demo/generate.yaml", "base_url": [url], "model": "fake", "image_model": None,
                     "num_samples": 1, "max_concurrency": 2, "timeout_s": 10, "progress": False},
        "score": {"image_root": "data/demo",
                  "scorers": {"format": None, "truncated": None, "length": {"tokenizer": str(tiny_vlm)},
                              "repetition": {"n": 4}, "answer_match": None}},
        "filter": {"reject_status": ["failed", "truncated"], "thresholds": {"format": {"min": 1}}},
        "export": {"image_root": "data/demo", "min_pixels": 3136, "max_pixels": 12544},
        "train": {"recipe": "recipes/demo/train.yaml", "model_name_or_path": str(tiny_vlm), "num_train_epochs": 1,
                  "per_device_train_batch_size": 8},
    }  # fmt: skip


def _run(config: Path, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "distill", "run", "--config", str(config)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)  # fmt: skip


def _statuses(run_dir: Path) -> dict:
    return {k: v["status"] for k, v in json.loads((run_dir / "summary.json").read_text())["stages"].items()}


@pytest.mark.slow
def test_kill_during_generate_then_resume_redoes_no_request_and_no_finished_stage(tmp_path, tiny_vlm):
    fake = FakeOpenAI(latency_s=0.2)
    url = fake.start()
    try:
        config = tmp_path / "pipeline.yaml"
        # up to export: what follows a stage reruns or is skipped the same way for train (the demo test runs train)
        stages = STAGES[:-1]
        config.write_text(yaml.safe_dump({**_pipeline(tmp_path, tiny_vlm, url), "stages": stages}))
        run_dir = tmp_path / "runs" / "t"
        journal = run_dir / "generate" / "traces.journal.jsonl"

        # 1. kill -9 the whole run (orchestrator and its generate subprocess) once 10 answers are journaled.
        proc = _run(config, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= 10:
                os.killpg(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        log = proc.communicate(timeout=60)[0].decode()
        assert proc.returncode == -signal.SIGKILL, log
        journaled = {json.loads(line)["key"] for line in journal.read_text().splitlines() if line.strip()}
        assert len(journaled) >= 10 and not (run_dir / "generate" / "stage.done.json").exists()

        # 2. Rerun: finishes every stage; no journaled request is sent again.
        seen_before = len(fake.seen_keys)
        proc = _run(config)
        log = proc.communicate(timeout=400)[0].decode()
        assert proc.returncode == 0, log
        assert not journaled & set(fake.seen_keys[seen_before:])
        rows = read_jsonl(run_dir / "generate" / "traces.jsonl")
        assert len(rows) == 60 and len({(r["id"], r["sample_index"]) for r in rows}) == 60
        kept, rejected = (
            read_jsonl(run_dir / "filter" / "kept.jsonl"),
            read_jsonl(run_dir / "filter" / "rejected.jsonl"),
        )
        assert len(kept) + len(rejected) == 60 and kept
        assert (run_dir / "export" / "dataset" / "manifest.json").exists()
        assert _statuses(run_dir) == dict.fromkeys(stages, "ran")
        report = (run_dir / "report.md").read_text()
        assert all(f"| {s} | ran |" in report for s in stages)

        # 3. Nothing changed: every stage is skipped and the teacher sees no request.
        seen_before = len(fake.seen_keys)
        proc = _run(config)
        assert proc.communicate(timeout=120)[0] is not None and proc.returncode == 0
        assert len(fake.seen_keys) == seen_before
        assert set(_statuses(run_dir).values()) == {"skipped (up to date)"}

        # 4. A changed filter config reruns filter and what follows it, nothing before it.
        pipeline = {**_pipeline(tmp_path, tiny_vlm, url), "stages": stages}
        pipeline["filter"]["thresholds"]["length"] = {"min": 1}
        config.write_text(yaml.safe_dump(pipeline))
        proc = _run(config)
        log = proc.communicate(timeout=300)[0].decode()
        assert proc.returncode == 0, log
        statuses = _statuses(run_dir)
        assert statuses["generate"] == statuses["score"] == "skipped (up to date)"
        assert statuses["filter"] == statuses["export"] == "ran" and len(fake.seen_keys) == seen_before
    finally:
        fake.stop()


@pytest.mark.slow
def test_demo_pipeline_end_to_end_with_the_local_teacher(tmp_path):
    """recipes/demo/pipeline.yaml with smaller settings: the run builds the tiny VLM, starts `distill serve`
    (SmolLM2 for text queries, the pixel-reading scene teacher for image queries) and stops it; one sample per example."""
    for name in ("data", "recipes"):  # relative recipe paths resolve; outputs stay in tmp_path
        (tmp_path / name).symlink_to(REPO / name)
    pipeline = yaml.safe_load((REPO / "recipes/demo/pipeline.yaml").read_text())
    pipeline["generate"].update(num_samples=1, max_tokens=64)
    held_out = "data/demo/eval/ShapesVQA.jsonl"  # 8 of the 40 held-out rows keep the closing stages quick
    pipeline["generate_eval"].update(max_tokens=64, input=held_out)
    pipeline["train"]["num_train_epochs"] = 1
    for stage in ("embed_base", "embed"):
        pipeline[stage]["num_train_epochs"] = 1
    for stage in ("reason_base", "reason"):
        pipeline[stage].update(max_new_tokens=24, input=held_out)
    pipeline["eval"]["eval_rows"] = [held_out]
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(pipeline))
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "distill", "run", "--config", "pipeline.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "demo"
    # the held-out rows, the two trained embedders and the eval table
    closing = ["generate_eval", "embed_base", "embed", "reason_base", "reason", "eval"]
    assert _statuses(run_dir) == dict.fromkeys(STAGES + closing, "ran")
    for path in ["generate/traces.jsonl", "score/scored.jsonl", "filter/kept.jsonl", "filter/report.md",
                 "filter/kept.summary.json", "export/dataset/README.md", "export/dataset/data",
                 "export/dataset/manifest.json", "train/model/README.md",
                 "report.md", "serve.log", "eval/report.md"]:  # fmt: skip
        assert (run_dir / path).exists(), path
    traces = read_jsonl(run_dir / "generate" / "traces.jsonl")
    assert len(traces) == 60
    by_model = (
        {r["teacher"]["model"] for r in traces if r["query"]["images"]},
        {r["teacher"]["model"] for r in traces if not r["query"]["images"]},
    )
    assert by_model == ({"scenes"}, {"smollm2"})
    kept = read_jsonl(run_dir / "filter" / "kept.jsonl")
    assert kept and all(r["status"] == "ok" for r in kept)
    assert "listening on http://127.0.0.1:" in (run_dir / "serve.log").read_text()
    # the untrained and the trained student on the held-out rows, side by side with the teacher in eval
    untrained, trained = (read_jsonl(run_dir / stage / "traces.jsonl") for stage in ("reason_base", "reason"))
    teacher = read_jsonl(run_dir / "generate_eval" / "traces.jsonl")
    assert len(teacher) == 8 and [r["id"] for r in untrained] == [r["id"] for r in trained] == [
        r["id"] for r in teacher
    ]
    assert trained[0]["teacher"]["checkpoint"] == str((run_dir / "train" / "model").resolve())
    assert trained[0]["teacher"]["fingerprint"] != untrained[0]["teacher"]["fingerprint"]
    result = json.loads((run_dir / "eval" / "eval.json").read_text())
    # the frozen MiniLM and the two embedders trained by embed_base / embed, ranked side by side, and TTE's headline
    by_embedder = result["retrieval_by_embedder"]
    assert list(by_embedder) == ["frozen", "base", "tte"]
    # the path as the run wired it, relative to the run's working directory
    assert tmp_path / by_embedder["tte"]["embedder"]["model"] == run_dir / "embed" / "model"
    assert result["tte"]["tte_s"] == by_embedder["tte"]["overall"]["scores"]["student_trained"]
    quality = result["quality"]
    assert list(quality) == ["teacher", "student_untrained", "student_trained"]
    assert quality["student_trained"]["writers"] != quality["student_untrained"]["writers"]


@pytest.mark.slow
def test_sigterm_stops_every_child_teacher_last_and_leaves_no_process(tmp_path, tiny_vlm):
    """`kill -TERM` of `distill run` mid-generate: the stage's process group and the local teacher are stopped."""
    import psutil

    pipeline = {"name": "t", "runs_root": str(tmp_path / "runs"), "stages": ["generate"],
                "serve": {"models": [f"tiny-vlm={tiny_vlm}"]},
                "generate": {"recipe": "recipes/demo/generate.yaml", "model": "tiny-vlm", "image_model": None,
                             "max_tokens": 4000, "progress": False}}  # fmt: skip
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(pipeline))
    proc = _run(config)
    run = psutil.Process(proc.pid)
    deadline, children = time.monotonic() + 180, []
    while time.monotonic() < deadline and proc.poll() is None:
        children = run.children(recursive=True)
        if any("generate" in " ".join(c.cmdline()) for c in children if c.is_running()):
            break
        time.sleep(0.2)
    time.sleep(2)  # generate is sending requests to the local teacher
    children = run.children(recursive=True)
    assert len(children) >= 2, proc.communicate(timeout=5)[0].decode()[-3000:]
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 143, log[-3000:]
    assert "stopped by SIGTERM" in log and "Traceback" not in log, log[-3000:]
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [c.cmdline() for c in alive]
    stage_log = (tmp_path / "runs" / "t" / "generate" / "stage.log").read_text()
    assert "Traceback" not in stage_log


def test_rows_failed_by_the_teacher_are_retried_by_the_next_run(tmp_path):
    """A generate stage with rows failed for a curable reason (HTTP 500) is not marked done: the next `distill run`
    runs it again, sends only the failed requests, and only then is the stage marked done."""
    fake = FakeOpenAI(fault_rate=0.3, faults=("500",), seed=1)
    url = fake.start()
    try:
        config = tmp_path / "pipeline.yaml"
        config.write_text(yaml.safe_dump({
            "name": "t", "runs_root": str(tmp_path / "runs"), "stages": ["generate"],
            "generate": {"recipe": "recipes/demo/generate.yaml", "base_url": [url], "model": "fake",
                         "image_model": None, "max_retries": 0, "max_concurrency": 4, "progress": False}}))  # fmt: skip
        run_dir = tmp_path / "runs" / "t"
        proc = _run(config)
        log = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, log
        failed = [r for r in read_jsonl(run_dir / "generate/traces.jsonl") if r["status"] == "failed"]
        assert failed and _statuses(run_dir) == {"generate": f"ran, {len(failed)} to retry"}
        assert not (run_dir / "generate/stage.done.json").exists() and "to retry them" in log
        fake.fault_rate = 0.0  # the teacher recovers
        sent = len(fake.seen_keys)
        journal = run_dir / "generate/traces.journal.jsonl"
        answered = {json.loads(line)["key"] for line in journal.read_text().splitlines() if line.strip()}
        proc = _run(config)
        log = proc.communicate(timeout=120)[0].decode()
        assert proc.returncode == 0, log
        again = fake.seen_keys[sent:]  # the failed rows' requests (same-content rows share one), once each
        assert 0 < len(again) <= len(failed) and len(set(again)) == len(again) and not set(again) & answered
        assert all(r["status"] == "ok" for r in read_jsonl(run_dir / "generate/traces.jsonl"))
        assert _statuses(run_dir) == {"generate": "ran"} and (run_dir / "generate/stage.done.json").exists()
    finally:
        fake.stop()
