"""`distill generate --batch`: OpenAI Batch API files through the real `openai` SDK against a local stand-in."""

import json
from pathlib import Path

import orjson
import pytest

from distill.cli import main as cli_main
from distill.client import batch as batch_mod
from distill.io import read_jsonl
from distill.testing.fake_batch import FakeBatchAPI
from distill.testing.fake_openai import FakeOpenAI

REPO = Path(__file__).resolve().parents[1]
N = 60  # demo rows, one sample each
KEYS = 56  # distinct requests among them (4 rows repeat another row's request)


def args(url, out, *extra):
    return ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
            "--image_root", str(REPO / "data/demo"), "--base_url", url,
            "--output", str(out), "--progress", "false", "--batch_poll_s", "0", "--batch_max_requests", "25",
            *extra]  # fmt: skip


@pytest.fixture
def servers():
    started = []

    def start(cls, **kw):
        s = cls(**kw)
        started.append(s)
        return s, s.start()

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="module")
def online_rows(tmp_path_factory):
    """The online run every batch run must reproduce row for row."""
    fake = FakeOpenAI()
    out = tmp_path_factory.mktemp("online") / "traces.jsonl"
    try:
        assert cli_main(args(fake.start(), out)) == 0
    finally:
        fake.stop()
    return read_jsonl(out)


def test_batch_run_gives_the_online_rows_and_custom_ids_are_journal_keys(servers, tmp_path, online_rows):
    fake, url = servers(FakeBatchAPI)
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true")) == 0
    assert read_jsonl(out) == online_rows
    assert [len(s) for s in fake.submitted] == [25, 25, 6]  # split by --batch_max_requests
    journal = {json.loads(line)["key"] for line in (tmp_path / "traces.journal.jsonl").open()}
    assert {k for s in fake.submitted for k in s} == journal and len(journal) == KEYS
    assert all(b["_polls"] >= 2 for b in fake.batches.values())  # polled until final
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["ok"] == N and [b["status"] for b in summary["requests"]["batches"]] == ["completed"] * 3


def test_expired_and_partly_failed_batches_resubmit_only_what_failed(servers, tmp_path, online_rows):
    fake, url = servers(FakeBatchAPI, expire_after={0: 10}, fail_every={1: 4}, reject={2: "bad line"})
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true")) == 0
    first = fake.submitted[:3]
    expired, failed_500 = set(first[0][10:]), {k for i, k in enumerate(first[1]) if i % 4 == 3}
    assert len(fake.submitted) == 4 and set(fake.submitted[3]) == expired | failed_500  # not the rejected batch
    rows = read_jsonl(out)
    by_key = dict(zip((r["id"] for r in online_rows), online_rows, strict=True))
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(bad) >= 6 and all(r["error"].startswith("batch failed (validation): invalid: bad line") for r in bad)
    assert all(r == by_key[r["id"]] for r in rows if r["status"] == "ok")
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["failed_reasons"] == {"batch failed": len(bad)} and summary["requests"]["retries"] == 21
    assert summary["requests"]["failed"] == 6
    # a rerun sends only the 6 still missing, and then the output is the online run's
    assert cli_main(args(url, out, "--batch", "true")) == 0
    assert len(fake.submitted) == 5 and set(fake.submitted[4]) == set(first[2])
    assert read_jsonl(out) == online_rows


def test_one_round_reports_expired_rows_failed_by_reason(servers, tmp_path):
    fake, url = servers(FakeBatchAPI, expire_after={0: 20})
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true", "--batch_rounds", "1")) == 0
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["requests"]["failed"] == 5 and set(summary["failed_reasons"]) == {"batch_expired"}
    assert summary["ok"] == N - summary["failed_reasons"]["batch_expired"]


def test_killed_while_polling_resumes_the_same_batch(servers, tmp_path, monkeypatch, online_rows):
    fake, url = servers(FakeBatchAPI)
    out = tmp_path / "traces.jsonl"

    def killed(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_mod.time, "sleep", killed)
    assert cli_main(args(url, out, "--batch", "true")) == 130  # interrupted while polling (the stage boundary)
    assert len(fake.batches) == 1
    monkeypatch.undo()
    assert cli_main(args(url, out, "--batch", "true")) == 0
    assert len(fake.batches) == 3 and read_jsonl(out) == online_rows  # batch_0 polled again, not created twice


def test_vllm_run_batch_files_round_trip(tmp_path, online_rows):
    """--batch_submit false writes the files `vllm run-batch` reads; its output files are ingested."""
    out = tmp_path / "traces.jsonl"
    assert cli_main(args("http://127.0.0.1:9/v1", out, "--batch", "true", "--batch_submit", "false")) == 0
    assert not out.exists()
    inputs = sorted((tmp_path / "traces.batch" / "round-0").glob("input-*.jsonl"))
    assert len(inputs) == 3
    answer = FakeOpenAI()._completion
    for i, path in enumerate(inputs):  # what `vllm run-batch -i input -o output` writes
        lines = [orjson.loads(x) for x in path.read_bytes().splitlines()]
        assert all(x["method"] == "POST" and x["url"] == "/v1/chat/completions" for x in lines)
        with open(path.with_name(f"output-{i:03d}.jsonl"), "wb") as f:
            for x in lines:
                body = orjson.loads(
                    answer(x["body"]["model"], x["custom_id"], "stop", len(orjson.dumps(x["body"])) // 4)
                )
                f.write(orjson.dumps({"id": f"vllm-{x['custom_id'][:8]}", "custom_id": x["custom_id"], "error": None,
                                      "response": {"status_code": 200, "request_id": "r", "body": body}}) + b"\n")  # fmt: skip
    pattern = str(tmp_path / "traces.batch" / "round-0" / "output-*.jsonl")
    assert cli_main(args("http://127.0.0.1:9/v1", out, "--batch", "true", "--batch_results", pattern)) == 0
    assert read_jsonl(out) == online_rows


def test_dry_run_shows_the_batch_price(tmp_path, capsys):
    out = tmp_path / "traces.jsonl"
    price = ["--dry_run", "true", "--price_input_per_mtok", "2.0"]
    assert cli_main(args("http://127.0.0.1:9/v1", out, *price)) == 0
    online = float(capsys.readouterr().out.split("cost: $")[1].split()[0])
    assert cli_main(args("http://127.0.0.1:9/v1", out, *price, "--batch", "true")) == 0
    printed = capsys.readouterr().out
    assert float(printed.split("cost: $")[1].split()[0]) == pytest.approx(online / 2, abs=1e-4)
    assert "batch price" in printed


@pytest.mark.parametrize(
    "lines, max_requests, lines_by_bytes, sizes",
    [(10, 4, 1000, [4, 4, 2]), (10, 100, 3, [3, 3, 3, 1]), (10, 2, 3, [2, 2, 2, 2, 2]), (0, 5, 10, [])],
)  # fmt: skip
def test_files_split_under_both_limits(tmp_path, lines, max_requests, lines_by_bytes, sizes):
    items = [(f"k{i}", {"model": "m", "messages": [{"role": "user", "content": "x" * 20}]}) for i in range(lines)]
    size = len(batch_mod.request_line("k0", {"model": "m", "messages": [{"role": "user", "content": "x" * 20}]}))
    max_bytes = lines_by_bytes * size + size - 1  # room for lines_by_bytes lines, not one more
    paths, bad = batch_mod.write_files(items, tmp_path, max_requests, max_bytes)
    assert [len(p.read_bytes().splitlines()) for p in paths] == sizes and not bad
    assert all(p.stat().st_size <= max_bytes for p in paths)


@pytest.mark.parametrize(
    "line, status, error",
    [({"custom_id": "a", "response": {"status_code": 429, "body": {"error": {"message": "slow"}}}}, "failed",
      "HTTP 429 (batch): slow"),
     ({"custom_id": "a", "error": {"code": "batch_expired", "message": "late"}}, "failed", "batch_expired (batch): late"),
     ({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": []}}}, "failed",
      "response has no choices (batch)"),
     ({"custom_id": "a", "response": {"status_code": 200, "body": {"choices": [
         {"message": {"content": "hi"}, "finish_reason": "length"}]}}}, "truncated", None)],
)  # fmt: skip
def test_output_lines_parse_like_online_answers(line, status, error):
    key, result = batch_mod.parse_line(line)
    assert key == "a" and result["status"] == status and result["error"] == error
