"""`distill generate --batch`: OpenAI Batch API files through the real `openai` SDK against a local stand-in; and
against hostile or forgetful counterparts (issue 21): output lines of the wrong shape, vLLM's error lines, an output
file that is gone, a server that no longer knows a saved batch, and one model per input file."""

import json
from pathlib import Path

import orjson
import pytest

from distill.cli import main as cli_main
from distill.client import batch as batch_mod
from distill.client import batch_files
from distill.client.batch_files import BadOutputLine, parse_line
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
    # one model per file (12 text requests for `model`, 44 image requests for `image_model`), split by
    # --batch_max_requests; files go in the order of their model names
    assert sorted(len(s) for s in fake.submitted) == [12, 19, 25]
    journal = {json.loads(line)["key"] for line in (tmp_path / "traces.journal.jsonl").open()}
    assert {k for s in fake.submitted for k in s} == journal and len(journal) == KEYS
    assert all(b["_polls"] >= 2 for b in fake.batches.values())  # polled until final
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["ok"] == N and [b["status"] for b in summary["requests"]["batches"]] == ["completed"] * 3


def test_expired_and_partly_failed_batches_resubmit_only_what_failed(servers, tmp_path, online_rows):
    fake, url = servers(FakeBatchAPI, expire_after={0: 10}, fail_every={1: 4}, reject={2: "bad line"})
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true")) == 0
    first, sent = fake.submitted[:3], len(fake.submitted)
    expired, failed_500 = set(first[0][10:]), {k for i, k in enumerate(first[1]) if i % 4 == 3}
    # round 2 (one file per model again): the expired and the failed requests, not the rejected batch's
    assert set().union(*map(set, fake.submitted[3:])) == expired | failed_500
    rows = read_jsonl(out)
    by_key = dict(zip((r["id"] for r in online_rows), online_rows, strict=True))
    bad = [r for r in rows if r["status"] == "failed"]
    assert len(bad) >= len(first[2]) and all(r["error"].startswith("batch failed (validation): invalid: bad line")
                                             for r in bad)  # fmt: skip
    assert all(r == by_key[r["id"]] for r in rows if r["status"] == "ok")
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["failed_reasons"] == {"batch failed": len(bad)}
    assert summary["requests"]["retries"] == len(expired) + len(failed_500)
    assert summary["requests"]["failed"] == len(first[2])
    # a rerun sends only the rejected batch's requests, and then the output is the online run's
    assert cli_main(args(url, out, "--batch", "true")) == 0
    assert len(fake.submitted) == sent + 1 and set(fake.submitted[-1]) == set(first[2])
    assert read_jsonl(out) == online_rows


def test_one_round_reports_expired_rows_failed_by_reason(servers, tmp_path):
    fake, url = servers(FakeBatchAPI, expire_after={0: 7})
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true", "--batch_rounds", "1")) == 0
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    expired = len(fake.submitted[0]) - 7
    assert summary["requests"]["failed"] == expired and set(summary["failed_reasons"]) == {"batch_expired"}
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
    size = len(batch_files.request_line("k0", {"model": "m", "messages": [{"role": "user", "content": "x" * 20}]}))
    max_bytes = lines_by_bytes * size + size - 1  # room for lines_by_bytes lines, not one more
    paths, bad = batch_files.write_files(items, tmp_path, max_requests, max_bytes)
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
    key, result = batch_files.parse_line(line)
    assert key == "a" and result["status"] == status and result["error"] == error


OK = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1,
                                                                                      "completion_tokens": 1}}  # fmt: skip


@pytest.mark.parametrize(
    "line, error",
    [  # OpenAI's and vLLM's error shapes: the provider's message is kept
        ({"custom_id": "a", "response": {"status_code": 500, "body": {"error": "overloaded"}}},
         "HTTP 500 (batch): overloaded"),
        ({"custom_id": "a", "response": {"status_code": 400, "request_id": "r", "body": None},
          "error": "Model 'x' does not exist"}, "HTTP 400 (batch): Model 'x' does not exist"),  # vllm run-batch
        ({"custom_id": "a", "response": {"status_code": 404, "body": None},
          "error": {"error": {"message": "The model `m` does not exist.", "code": 404}}},
         "HTTP 404 (batch): The model `m` does not exist."),  # vLLM's ErrorResponse
        ({"custom_id": "a", "response": {"status_code": 400, "body": None},
          "error": {"object": "error", "message": "too long"}}, "HTTP 400 (batch): too long"),  # older vLLM
        ({"custom_id": "a", "error": {"message": "top-level"}}, "error (batch): top-level"),
        ({"custom_id": "a", "error": "a bare string"}, "error (batch): a bare string"),
        ({"custom_id": "a", "response": {"status_code": 503, "body": {}}}, "HTTP 503 (batch): no message"),
        ({"custom_id": "a", "response": {"status_code": 200, "body": "oops"}}, "response has no choices (batch)"),
    ],
)  # fmt: skip
def test_error_lines_of_every_shape_keep_their_message(line, error):
    key, result = parse_line(line)
    assert key == "a" and result["status"] == "failed" and result["error"] == error


@pytest.mark.parametrize(
    "line, key, reason",
    [
        ({"custom_id": "a", "response": "oops"}, "a", "response is str 'oops', expected an object or null"),
        ({"custom_id": "a", "response": {"status_code": "200", "body": OK}}, "a", "status_code is '200'"),
        ({"custom_id": "a", "response": {"status_code": True}}, "a", "status_code is True"),
        ({"custom_id": "a"}, "a", "neither a response nor an error"),
        ({"custom_id": 7, "response": {"status_code": 200, "body": OK}}, None, "custom_id is int"),
        (["not", "an", "object"], None, "expected a JSON object, got list"),
    ],
)
def test_lines_of_the_wrong_shape_are_bad_lines_not_tracebacks(line, key, reason):
    with pytest.raises(BadOutputLine) as e:
        parse_line(line)
    assert e.value.key == key and reason in str(e.value)


def _mangle(lines: list[dict]) -> list[dict]:
    """Every 5th line of each kind: the shapes that crashed the ingest before."""
    out = []
    for i, x in enumerate(lines):
        kind = i % 5
        if kind == 0:
            x = {**x, "response": "oops"}
        elif kind == 1:
            x = {**x, "response": {**x["response"], "status_code": "200"}}
        elif kind == 2:
            x = {**x, "response": None, "error": "str"}
        elif kind == 3:
            x = {**x, "response": {"status_code": 500, "body": {"error": "str"}}}
        out.append(x)
    return out


def test_wrong_shaped_results_fail_their_rows_with_file_and_line(tmp_path, online_rows, caplog):
    """--batch_results: the good lines are journaled, each bad one fails its row with the reason, nothing crashes."""
    out = tmp_path / "traces.jsonl"
    assert cli_main(args("http://127.0.0.1:9/v1", out, "--batch", "true", "--batch_submit", "false")) == 0
    answer = FakeOpenAI()._completion
    for path in sorted((tmp_path / "traces.batch" / "round-0").glob("input-*.jsonl")):
        lines = []
        for x in (orjson.loads(raw) for raw in path.read_bytes().splitlines()):
            body = orjson.loads(answer(x["body"]["model"], x["custom_id"], "stop", 10))
            lines.append({"custom_id": x["custom_id"], "response": {"status_code": 200, "body": body}, "error": None})
        data = b"\xef\xbb\xbf" + b"".join(orjson.dumps(x) + b"\n" for x in _mangle(lines)) + b"[1, 2]\n"
        path.with_name(path.name.replace("input-", "output-")).write_bytes(data)
    pattern = str(tmp_path / "traces.batch" / "round-0" / "output-*.jsonl")
    assert cli_main(args("http://127.0.0.1:9/v1", out, "--batch", "true", "--batch_results", pattern)) == 0
    rows = read_jsonl(out)
    failed = [r for r in rows if r["status"] == "failed"]
    assert 0 < len(failed) < len(rows) and any(r["status"] == "ok" for r in rows)
    errors = {r["error"].split(".jsonl:")[0].split("(")[0] for r in failed}
    assert errors <= {"bad batch output line ", "error ", "HTTP 500 "}, errors
    assert any(r["error"] == "HTTP 500 (batch): str" for r in failed)
    assert any(r["error"] == "error (batch): str" for r in failed)
    assert "output-" in caplog.text and "not a batch output line: response is str 'oops'" in caplog.text


class MangledBatchAPI(FakeBatchAPI):
    """Batch 0's output file comes back with lines of the wrong shape."""

    def _run(self, bid, index):
        super()._run(bid, index)
        out = self.batches[bid]["output_file_id"]
        if index == 0 and out:
            lines = [orjson.loads(x) for x in self.files[out]["data"].splitlines()]
            self.files[out]["data"] = b"".join(orjson.dumps(x) + b"\n" for x in _mangle(lines))


def test_submit_mode_resubmits_what_came_back_malformed(servers, tmp_path, online_rows):
    fake, url = servers(MangledBatchAPI)
    out = tmp_path / "traces.jsonl"
    assert cli_main(args(url, out, "--batch", "true")) == 0
    # round 2 asked again for every answer round 1 lost; a bare error string is no known retryable code: it stays
    rows, by_id = read_jsonl(out), {r["id"]: r for r in online_rows}
    failed = [r for r in rows if r["status"] != "ok"]
    assert failed and all(r["error"] == "error (batch): str" for r in failed)
    assert all(r == by_id[r["id"]] for r in rows if r["status"] == "ok") and len(rows) == len(online_rows)
    lost = {k for i, k in enumerate(fake.submitted[0]) if i % 5 in (0, 1, 3)}  # the retryable shapes of batch 0
    assert len(fake.submitted) == 4 and set(fake.submitted[3]) == lost


class LosingBatchAPI(FakeBatchAPI):
    """The output file of every finished batch is gone (expired, deleted) when the client asks for it."""

    def _run(self, bid, index):
        super()._run(bid, index)
        self.files.pop(self.batches[bid]["output_file_id"], None)


def _one_error_line(capfd) -> str:
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill generate: error: "), err
    return err[0]


def test_an_expired_output_file_says_how_to_start_over(servers, tmp_path, online_rows, capfd):
    _, url = servers(LosingBatchAPI)
    out = tmp_path / "traces.jsonl"
    capfd.readouterr()
    assert cli_main(args(url, out, "--batch", "true")) == 2
    state = tmp_path / "traces.batch" / "state.json"
    line = _one_error_line(capfd)
    assert "batch batch_0 (input file input-" in line and "its output file file-" in line and "(HTTP 404)" in line
    assert f"remove {state} and rerun" in line and state.exists()
    assert cli_main(args(url, out, "--batch", "true")) == 2  # until the state goes, the same (now explained) line
    state.unlink()  # as the line says
    _, good = servers(FakeBatchAPI)
    assert cli_main(args(good, out, "--batch", "true")) == 0 and read_jsonl(out) == online_rows


def test_a_server_that_forgot_the_batch_says_how_to_start_over(servers, tmp_path, monkeypatch, online_rows, capfd):
    _, url = servers(FakeBatchAPI)
    out = tmp_path / "traces.jsonl"

    def killed(_):
        raise KeyboardInterrupt

    monkeypatch.setattr(batch_mod.time, "sleep", killed)
    assert cli_main(args(url, out, "--batch", "true")) == 130  # killed while polling batch_0
    monkeypatch.undo()
    _, other = servers(FakeBatchAPI)  # a fresh server (a restarted vLLM batch front end): batch_0 is unknown there
    capfd.readouterr()
    assert cli_main(args(other, out, "--batch", "true")) == 2
    line = _one_error_line(capfd)
    assert "batch batch_0" in line and "the batch is unknown to" in line and "state.json and rerun" in line
    (tmp_path / "traces.batch" / "state.json").unlink()
    assert cli_main(args(other, out, "--batch", "true")) == 0 and read_jsonl(out) == online_rows


def test_a_damaged_state_file_says_how_to_start_over(servers, tmp_path, capfd):
    _, url = servers(FakeBatchAPI)
    state = tmp_path / "traces.batch" / "state.json"
    state.parent.mkdir()
    state.write_text('{"abc": {"batch_id": ')
    capfd.readouterr()
    assert cli_main(args(url, tmp_path / "traces.jsonl", "--batch", "true")) == 2
    line = _one_error_line(capfd)
    assert f"{state}: not valid JSON" in line and "remove" in line


def test_one_model_per_file_when_image_requests_go_to_another_model(tmp_path, capsys):
    """The Batch API and `vllm run-batch` serve one model per file; the demo sends image rows to --image_model."""
    out = tmp_path / "traces.jsonl"
    assert cli_main(args("http://127.0.0.1:9/v1", out, "--batch", "true", "--batch_submit", "false",
                         "--model", "text-teacher", "--image_model", "Org/vision-teacher")) == 0  # fmt: skip
    folder = tmp_path / "traces.batch" / "round-0"
    models = json.loads((folder / "models.json").read_text())
    seen = {}
    for path in sorted(folder.glob("input-*.jsonl")):
        in_file = {orjson.loads(x)["body"]["model"] for x in path.read_bytes().splitlines()}
        assert in_file == {models[path.name]}, path.name
        seen[models[path.name]] = seen.get(models[path.name], 0) + 1
    assert set(seen) == {"text-teacher", "Org/vision-teacher"}
    assert any(p.name.startswith("input-Org_vision-teacher-") for p in folder.glob("input-*.jsonl"))
    printed = capsys.readouterr().out
    assert "--served-model-name Org/vision-teacher: input-Org_vision-teacher-000.jsonl" in printed
