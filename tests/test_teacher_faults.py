"""Teacher faults end runs cleanly (issue 12, item 4): bad response shapes are retried faults and never journaled, old
poisoned journal lines heal, an absent teacher fails the run in seconds with one line, and a second `generate` on the
same output is refused before it touches the first run's files.
"""

import asyncio
import json
import socket
from pathlib import Path

import orjson
import pytest

from distill.cli import main as cli_main
from distill.client.driver import complete_many, journal_key
from distill.client.http import ClientConfig, TeacherClient, TeacherUnreachable, parse_response
from distill.client.journal import Journal
from distill.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def gen_args(url, out, *extra):
    return ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
            "--image_root", str(REPO / "data/demo"), "--base_url", url,
            "--output", str(out), "--timeout_s", "2", "--backoff_base_s", "0.01", "--progress", "false", *extra]  # fmt: skip


def completion(message) -> bytes:
    return orjson.dumps({"model": "m", "choices": [{"message": message, "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 2}})  # fmt: skip


@pytest.mark.parametrize(
    "raw, reason",
    [
        (completion({"content": 42}), "content is a int"),
        (completion({"content": {"answer": 42}}), "content is a dict"),
        (completion({"content": ["a"]}), "content is a list"),
        (completion({"content": None, "reasoning_content": 7}), "reasoning_content is a int"),
        (completion("just a string"), "message is a str"),
        (orjson.dumps({"choices": {"0": {}}}), "choices is a dict"),
        (orjson.dumps({"choices": [{"message": {"content": "x"}}], "usage": {"prompt_tokens": "3"}}), "usage"),
        (orjson.dumps({"choices": [{"message": {"content": "x"}, "finish_reason": 1}]}), "finish_reason is a int"),
        (orjson.dumps([1, 2]), "no choices"),
    ],
)
def test_bad_response_shapes_are_retryable_faults(raw, reason):
    result, error = parse_response(raw)
    assert result is None and reason in error


def test_good_response_shape_still_parses():
    result, error = parse_response(completion({"content": "hi", "reasoning_content": "why"}))
    assert (
        error is None and result["content"] == "hi" and result["usage"] == {"prompt_tokens": 3, "completion_tokens": 2}
    )


def test_shape_faults_are_retried_and_never_journaled(fake_teacher, tmp_path):
    fake, url = fake_teacher(fault_rate=0.5, faults=("number_content", "object_content"), seed=3)
    out = tmp_path / "traces.jsonl"
    assert cli_main(gen_args(url, out, "--max_retries", "8")) == 0  # before: the final write crashed
    rows = read_jsonl(out)
    assert set(fake.fault_counts) == {"number_content", "object_content"}
    assert all(r["status"] == "ok" or "not a string" in r["error"] for r in rows)
    assert sum(r["status"] == "ok" for r in rows) > len(rows) // 2
    journal = [json.loads(x) for x in (tmp_path / "traces.journal.jsonl").read_text().splitlines()]
    assert journal and all(isinstance(r["content"], str) for r in journal)


def test_an_old_poisoned_journal_line_is_asked_again(fake_teacher, tmp_path):
    fake, url = fake_teacher()
    config = ClientConfig(base_urls=[url], model="m", progress=False, backoff_base_s=0.01)
    request = {"messages": [{"role": "user", "content": "q"}], "sampling": {"max_tokens": 4}}
    key = journal_key("m", request["messages"], request["sampling"])
    path = tmp_path / "j.jsonl"
    path.write_bytes(orjson.dumps({"key": key, "status": "ok", "content": 42, "reasoning_content": None}) + b"\n")
    [result] = complete_many([request], config, path)  # before: TypeError while reading the record back
    assert result["status"] == "ok" and isinstance(result["text"], str) and fake.seen_keys == [key]
    with Journal(path) as journal:
        assert journal.skipped == 1 and isinstance(journal.get(key)["content"], str)


def _refused_url() -> str:
    with socket.socket() as s:  # bound, then closed: nothing listens there
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def _silent_server():
    """Accepts TCP connections (the kernel's backlog) and never answers a byte."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s, f"http://127.0.0.1:{s.getsockname()[1]}/v1"


def test_refused_teacher_fails_generate_fast_with_one_line(tmp_path, capfd):
    out = tmp_path / "traces.jsonl"
    rc = cli_main(gen_args(_refused_url(), out))  # before: ~45 s per row, then exit 0 with every row failed
    err = capfd.readouterr().err
    assert rc == 2  # stopped by the probe before any request (no timing asserted: the stop is structural)
    assert "no teacher answers" in err and "Traceback" not in err and not out.exists()


@pytest.mark.parametrize("where", ["silent host, probe", "refused port, breaker"])
def test_absent_teacher_fails_fast(where):
    sock, url = _silent_server() if "silent" in where else (None, _refused_url())
    config = ClientConfig(base_urls=[url], model="m", progress=False, timeout_s=0.3, probe_timeout_s=0.3,
                          backoff_base_s=0.01, max_retries=6, breaker_failures=3, max_concurrency=2)  # fmt: skip
    seen = []

    async def main():
        async with TeacherClient(config) as client:
            if sock is not None:
                await client.probe()
            else:  # no probe: the circuit breaker stops the run after 3 refused connections in a row
                items = [(f"k{i}", {"model": "m", "messages": [{"role": "user", "content": "x"}]}) for i in range(20)]
                await client.run(items, lambda k, r: seen.append(k))

    try:
        with pytest.raises(TeacherUnreachable, match="timeout after 0.3 s" if sock else "could not connect"):
            asyncio.run(main())
    finally:
        if sock is not None:
            sock.close()
    assert (
        seen == []
    )  # stopped before any request got a result; before: 7 attempts x timeout per request, every request


def test_read_timeouts_of_a_busy_teacher_do_not_trip_the_breaker(fake_teacher):
    fake, url = fake_teacher(fault_rate=1.0, faults=("stall",), stall_s=1.0)
    config = ClientConfig(base_urls=[url], model="m", progress=False, timeout_s=0.2, backoff_base_s=0.01,
                          max_retries=1, breaker_failures=2, max_concurrency=4)  # fmt: skip
    results = {}

    async def main():
        async with TeacherClient(config) as client:
            items = [(f"k{i}", {"model": "m", "messages": [{"role": "user", "content": f"x{i}"}]}) for i in range(4)]
            await client.run(items, results.__setitem__)

    asyncio.run(main())  # slow is not gone: every row fails on its own, the run is not stopped
    assert len(results) == 4 and all("timeout" in r["error"] for r in results.values())


def test_a_teacher_that_hangs_after_the_probe_stops_the_run():
    """Read timeouts in a row make the client ask `/models` again; a teacher that does not answer that either (hung
    after the start-of-run probe) stops the run instead of costing timeout x retries for every row."""
    sock, url = _silent_server()
    config = ClientConfig(base_urls=[url], model="m", progress=False, timeout_s=0.2, probe_timeout_s=0.2,
                          backoff_base_s=0.01, max_retries=6, breaker_failures=3, max_concurrency=2)  # fmt: skip
    results = {}

    async def main():
        async with TeacherClient(config) as client:  # no probe here: the teacher "was up" when the run started
            items = [(f"k{i}", {"model": "m", "messages": [{"role": "user", "content": "x"}]}) for i in range(50)]
            await client.run(items, results.__setitem__)

    try:
        with pytest.raises(TeacherUnreachable, match="teacher hangs: 3 consecutive requests got no answer"):
            asyncio.run(main())
    finally:
        sock.close()
    assert results == {}  # stopped inside the first rows' retries; before: 7 attempts x 0.2 s for each of 50 rows


def test_breaker_resets_on_any_http_answer(fake_teacher):
    fake, url = fake_teacher(fault_rate=0.4, faults=("drop", "500"), seed=0)
    config = ClientConfig(
        base_urls=[url], model="m", progress=False, backoff_base_s=0.01, breaker_failures=3, max_concurrency=1
    )  # one at a time: drops alternate with 500s and answers
    results = {}

    async def main():
        async with TeacherClient(config) as client:
            await client.probe()
            items = [(f"k{i}", {"model": "m", "messages": [{"role": "user", "content": f"x{i}"}]}) for i in range(40)]
            await client.run(items, results.__setitem__)

    asyncio.run(main())
    assert len(results) == 40 and fake.fault_counts["drop"] >= 3  # drops interleaved with answers never trip it


def test_second_generate_on_the_same_output_is_refused_without_touching_files(fake_teacher, tmp_path, capfd):
    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    assert cli_main(gen_args(url, out, "--max_examples", "3")) == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    capfd.readouterr()
    with Journal(tmp_path / "traces.journal.jsonl"):  # the first run, still running, holds the lock
        rc = cli_main(gen_args(url, out, "--max_examples", "3", "--model", "other-model"))
    err = capfd.readouterr().err
    assert rc == 2 and "in use by another process" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    after = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert after == before  # before the fix: traces.config.yaml named other-model
