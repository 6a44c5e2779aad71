import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from distill.cli import main as cli_main
from distill.configs import parse_configs
from distill.io import read_jsonl
from distill.teacher.generate import GenerateConfig
from distill.trace_rows import in_shard

REPO = Path(__file__).resolve().parents[1]
DEMO_ROWS = 60
SECRET = "sk-distill-test-3f9a1c"  # must never reach any output, log or config


def gen_args(url, out, *extra):
    return ["generate", "--config", str(REPO / "recipes/demo/generate.yaml"), "--input", str(REPO / "data/demo/train"),
            "--image_root", str(REPO / "data/demo"), "--base_url", url,
            "--output", str(out), "--timeout_s", "0.5", "--backoff_base_s", "0.01", "--progress", "false", *extra]  # fmt: skip


def keys_of(rows):
    return [(r["id"], r["sample_index"]) for r in rows]


def test_faults_every_row_complete_or_failed_and_key_never_written(fake_teacher, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("DISTILL_TEST_TEACHER_KEY", SECRET)
    fake, url = fake_teacher(fault_rate=0.3, stall_s=1.0, seed=1)
    out = tmp_path / "run" / "traces.jsonl"
    rc = cli_main(gen_args(url, out, "--num_samples", "2", "--api_key_env", "DISTILL_TEST_TEACHER_KEY",
                           "--max_retries", "6"))  # fmt: skip
    rows = read_jsonl(out)
    assert rc == 0 and len(rows) == 2 * DEMO_ROWS and len(set(keys_of(rows))) == len(rows)  # none lost or doubled
    assert set(fake.fault_counts) == {"429", "500", "503", "stall", "drop", "bad_json", "empty_choices", "length"}
    for r in rows:
        assert r["status"] in ("ok", "truncated", "failed")
        assert (r["error"] is None) == (r["status"] == "ok"), r
        assert r["status"] == "failed" or r["trace"]["raw"]
    assert any(r["status"] == "truncated" and "length" in r["error"] for r in rows)
    journal = [json.loads(line)["key"] for line in (tmp_path / "run" / "traces.journal.jsonl").open()]
    assert len(journal) == len(set(journal))
    summary = json.loads((tmp_path / "run" / "traces.summary.json").read_text())
    assert summary["rows_out"] == 2 * DEMO_ROWS and summary["ok"] + summary["truncated"] + summary["failed"] == 120
    assert summary["config"]["api_key_env"] == "DISTILL_TEST_TEACHER_KEY"
    image_paths = {p for r in rows for p in r["query"]["images"]}
    image_requests = sum(n for m, n in fake.models.items() if m == "scenes")
    assert 0 < summary["requests"]["images_encoded"] <= len(image_paths) < image_requests  # each image encoded once
    # text-only queries (ShapesT2I) went to `model`, image queries to `image_model`
    assert set(fake.models) == {"smollm2", "scenes"}
    # the key reached the server, and nowhere else
    assert fake.auth_headers == {f"Bearer {SECRET}"}
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    for f in (tmp_path / "run").iterdir():
        assert SECRET not in f.read_text(), f


def test_dry_run_sends_nothing(fake_teacher, tmp_path, capsys):
    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    rc = cli_main(gen_args(url, out, "--dry_run", "true", "--num_samples", "3", "--price_input_per_mtok", "2.0",
                           "--price_output_per_mtok", "6.0"))  # fmt: skip
    printed = capsys.readouterr().out
    assert rc == 0 and fake.seen_keys == [] and not out.exists()
    n = int(printed.split("dry run: ")[1].split()[0])
    tokens = int(printed.split("~")[1].split()[0])
    assert tokens > 100 * DEMO_ROWS and "cost: $" in printed
    assert cli_main(gen_args(url, out, "--num_samples", "3")) == 0
    assert len(fake.seen_keys) == n  # the dry run counted exactly what a real run sends
    assert cli_main(gen_args(url, out, "--dry_run", "true", "--num_samples", "3")) == 0
    assert "dry run: 0 requests" in capsys.readouterr().out


def test_dry_run_counts_a_corrupt_image_as_unreadable_like_the_real_run(fake_teacher, tmp_path, capsys):
    root = tmp_path / "demo"
    shutil.copytree(REPO / "data/demo", root)
    (root / "images" / "cls_00.png").write_bytes(b"not a png")
    fake, url = fake_teacher()
    args = gen_args(url, tmp_path / "t.jsonl", "--image_root", str(root))
    assert cli_main([*args, "--dry_run", "true"]) == 0
    printed = capsys.readouterr().out
    assert "1 with unreadable images" in printed
    assert cli_main(args) == 0
    assert len(fake.seen_keys) == int(printed.split("dry run: ")[1].split()[0])  # same count as the real run sent
    failed = [r["error"] for r in read_jsonl(tmp_path / "t.jsonl") if r["status"] == "failed"]
    assert len(failed) == 1 and "cls_00.png" in failed[0]


def test_sharding_is_a_partition_and_merge_joins_shards(fake_teacher, tmp_path):
    ids = [f"ex-{i}" for i in range(500)]
    shards = [{i for i in ids if in_shard(i, s, 3)} for s in range(3)]
    assert set().union(*shards) == set(ids) and sum(map(len, shards)) == len(ids) and all(len(s) > 100 for s in shards)
    fake, url = fake_teacher()
    outs = []
    for s in range(2):
        outs.append(tmp_path / f"traces.shard{s}.jsonl")
        assert cli_main(gen_args(url, outs[-1], "--shard_index", str(s), "--num_shards", "2")) == 0
    parts = [keys_of(read_jsonl(o)) for o in outs]
    assert not set(parts[0]) & set(parts[1]) and len(parts[0]) + len(parts[1]) == DEMO_ROWS
    merged = tmp_path / "all.jsonl"
    assert cli_main(["merge", "--inputs", str(outs[0]), str(outs[1]), str(outs[0]), "--output", str(merged)]) == 0
    rows = read_jsonl(merged)
    assert sorted(keys_of(rows)) == sorted(parts[0] + parts[1])
    assert json.loads((tmp_path / "all.summary.json").read_text())["duplicates"] == len(parts[0])


def test_more_rows_and_samples_reuse_every_prior_answer(fake_teacher, tmp_path):
    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    vqa = str(REPO / "data/demo/train/ShapesVQA.jsonl")
    assert cli_main([*gen_args(url, out), "--input", vqa]) == 0
    first = {r["teacher"]["request_sha"]: r["trace"] for r in read_jsonl(out)}
    sent_before = set(fake.seen_keys)
    assert cli_main([*gen_args(url, out), "--num_samples", "2"]) == 0  # all subsets, 2 samples each
    rows = read_jsonl(out)
    assert len(rows) == 2 * DEMO_ROWS and not sent_before & set(fake.seen_keys[len(sent_before) :])
    for r in rows:  # the VQA sample-0 traces are the very answers of the first run
        if r["dataset"] == "ShapesVQA" and r["sample_index"] == 0:
            assert r["trace"] == first[r["teacher"]["request_sha"]]
    assert cli_main(gen_args(url, out, "--num_samples", "2")) == 0
    assert len(fake.seen_keys) == len(set(fake.seen_keys))  # the third run sent nothing new


@pytest.fixture
def bad_input(tmp_path):
    good = (REPO / "data/demo/train/ShapesVQA.jsonl").read_text().splitlines()[:3]
    missing = good[0].replace("vqa_00.png", "nope.png").replace("How many", "How many missing")
    path = tmp_path / "ShapesVQA.jsonl"
    path.write_text("\n".join([good[0], "{not json", good[1], missing, good[2]]) + "\n")
    return path


def test_bad_rows_reported_with_line_and_run_goes_on(fake_teacher, tmp_path, bad_input, caplog):
    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    assert cli_main([*gen_args(url, out), "--input", str(bad_input)]) == 0
    rows = read_jsonl(out)
    assert Counter(r["status"] for r in rows) == {"ok": 3, "failed": 1}
    (failed,) = [r for r in rows if r["status"] == "failed"]
    assert "nope.png" in failed["error"] and "bad input" in failed["error"]
    assert len(fake.seen_keys) == 3  # nothing sent for the row whose image is missing
    assert f"{bad_input}:2: invalid JSON" in caplog.text
    summary = json.loads((tmp_path / "traces.summary.json").read_text())
    assert summary["bad_input_rows"] == 1 and summary["problems"][0]["line"] == 2


def test_strict_stops_on_bad_input(fake_teacher, tmp_path, bad_input):
    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    assert cli_main([*gen_args(url, out), "--input", str(bad_input), "--strict", "true"]) == 1
    assert not out.exists() and fake.seen_keys == []


@pytest.mark.parametrize(
    "flags, match",
    [(["--mode", "sneaky"], "mode"), (["--shard_index", "2", "--num_shards", "2"], "shard_index"),
     (["--base_url", "localhost:8000"], "http"), (["--num_samples", "0"], "num_samples")],
)  # fmt: skip
def test_config_validation(flags, match, capsys):
    assert cli_main(["generate", "--input", "x", "--output", "y", "--model", "m", *flags]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("recipe", sorted(REPO.glob("recipes/*/generate.yaml")))
def test_recipes_load(recipe):
    (config,) = parse_configs((GenerateConfig,), ["--config", str(recipe)])
    assert config.model and config.base_urls and config.client().max_concurrency == config.max_concurrency


def _journal_keys(path: Path) -> set[str]:
    if not path.exists():
        return set()
    keys = set()
    for line in path.read_bytes().split(b"\n"):
        try:
            keys.add(json.loads(line)["key"])
        except (ValueError, KeyError):
            pass  # the torn tail of a killed write
    return keys


@pytest.mark.slow
def test_kill_9_then_resume_sends_only_what_is_missing(fake_teacher, tmp_path):
    fake, url = fake_teacher(latency_s=0.05)
    out = tmp_path / "traces.jsonl"
    journal = tmp_path / "traces.journal.jsonl"
    cmd = [sys.executable, "-m", "distill", *gen_args(url, out, "--num_samples", "2", "--max_concurrency", "4")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for kill_at in (5, 40, 90, None):  # journal lines at which to kill; None = run to the end
        journaled = _journal_keys(journal)
        seen_before = len(fake.seen_keys)
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while kill_at is not None and time.monotonic() < deadline and proc.poll() is None:
            if journal.exists() and journal.read_bytes().count(b"\n") >= kill_at:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        log = proc.communicate(timeout=60)[0].decode()
        resent = journaled & set(fake.seen_keys[seen_before:])
        assert not resent, f"journaled keys were requested again after kill at {kill_at}"
        if kill_at is not None:
            assert proc.returncode == -signal.SIGKILL, log
            assert len(_journal_keys(journal)) >= kill_at
    assert proc.returncode == 0, log
    rows = read_jsonl(out)
    assert len(rows) == 2 * DEMO_ROWS and len(set(keys_of(rows))) == len(rows)
    assert all(r["status"] == "ok" for r in rows)
    lines = journal.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x) for x in lines[:-1])  # no partial line left behind


def test_journal_reopens_after_torn_tail_and_refuses_a_second_writer(tmp_path):
    from distill.client.journal import Journal

    path = tmp_path / "j.jsonl"
    with Journal(path) as j:
        j.put("a", {"content": "x"})
        with pytest.raises(RuntimeError, match="in use"):
            Journal(path)
    with open(path, "ab") as f:
        f.write(b'{"key": "b", "content": "torn')  # a write cut by kill -9
    with Journal(path) as j:
        assert "a" in j and "b" not in j and j.get("a")["content"] == "x"
        j.put("b", {"content": "y"})
        j.put("b", {"content": "z"})  # already journaled: ignored
    assert [json.loads(x)["key"] for x in path.read_text().splitlines()] == ["a", "b"]


def test_missing_key_env_stops_before_sending(fake_teacher, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISTILL_NO_SUCH_KEY", raising=False)
    fake, url = fake_teacher()
    assert cli_main(gen_args(url, tmp_path / "t.jsonl", "--api_key_env", "DISTILL_NO_SUCH_KEY")) == 2
    assert "DISTILL_NO_SUCH_KEY" in capsys.readouterr().err and fake.seen_keys == []


@pytest.mark.parametrize("strict, rc, rows_out", [("false", 0, 2), ("true", 1, None)])
def test_merge_reports_bad_lines(tmp_path, capsys, caplog, strict, rc, rows_out):
    a = tmp_path / "a.jsonl"
    a.write_text(
        '{"id": "x", "sample_index": 0, "status": "failed"}\n{torn\n{"id": "y", "sample_index": 0}\n{"id": "z"}\n'
    )
    b = tmp_path / "b.jsonl"
    b.write_text('{"id": "x", "sample_index": 0, "status": "ok"}\n')
    out = tmp_path / "m.jsonl"
    assert cli_main(["merge", "--inputs", str(a), str(b), "--output", str(out), "--strict", strict]) == rc
    assert f"{a}:2: invalid JSON" in caplog.text
    if rows_out is None:
        assert not out.exists()
    else:
        assert f"{a}:4: row without id/sample_index" in caplog.text
        rows = read_jsonl(out)
        assert len(rows) == rows_out and rows[0]["status"] == "ok"  # the better duplicate wins
        assert [r["id"] for r in rows] == ["x", "y"]  # ... in the place of the key's first row


@pytest.mark.parametrize("side", ["query", "target"])
def test_rows_record_side_and_one_template_sha(fake_teacher, tmp_path, side):
    from distill.teacher.prompts import TemplateSet, installed_prompts_dir

    fake, url = fake_teacher()
    out = tmp_path / "traces.jsonl"
    vqa = str(REPO / "data/demo/train/ShapesVQA.jsonl")
    # the shipped templates (the demo recipe's few-shot folder has no target-side template)
    args = [*gen_args(url, out), "--input", vqa, "--side", side, "--prompts_dir", str(installed_prompts_dir())]
    assert cli_main(args) == 0
    rows = read_jsonl(out)
    assert rows and {r["side"] for r in rows} == {side}
    tpl = TemplateSet().for_example("vqa", side)
    # the lineage hash is the template's (one per template); each request keeps its own hash under request_sha
    assert {(r["teacher"]["prompt_id"], r["teacher"]["prompt_sha"]) for r in rows} == {(tpl.prompt_id, tpl.sha)}
    # (target side: positives such as "3" repeat across examples, and so do their requests)
    assert len({r["teacher"]["request_sha"] for r in rows}) > len(rows) // 2


def test_chunked_send_writes_the_same_rows_as_one_chunk(fake_teacher, tmp_path, monkeypatch, bad_input):
    """Issue 11: rows are sent, journaled and written PLAN_CHUNK examples at a time; with chunks of 7 examples (and a
    bad row and an unreadable image among them) the output and the summary equal a one-chunk run's."""
    import distill.teacher.generate as gen

    _, url = fake_teacher()
    one, many = tmp_path / "one/traces.jsonl", tmp_path / "many/traces.jsonl"
    assert cli_main(gen_args(url, one, "--num_samples", "2")) == 0
    monkeypatch.setattr(gen, "PLAN_CHUNK", 7)
    assert cli_main(gen_args(url, many, "--num_samples", "2")) == 0
    assert many.read_bytes() == one.read_bytes() and len(read_jsonl(many)) == 2 * DEMO_ROWS
    counts = [json.loads(p.with_name("traces.summary.json").read_text()) for p in (one, many)]
    sent = [(c["ok"], c["requests"]["to_send"], c["requests"]["same_content"], c["requests"]["journaled_before"])
            for c in counts]  # fmt: skip
    # a same-content request answered in an earlier chunk is not sent twice, and counts as same-content, not as an
    # answer from an earlier run
    assert sent[0] == sent[1] and sent[0][1] < 2 * DEMO_ROWS and sent[0][2] > 0 and sent[0][3] == 0
    # a chunk with a bad image among good ones: the row fails with its reason, the others are written
    assert cli_main([*gen_args(url, tmp_path / "bad/traces.jsonl"), "--input", str(bad_input)]) == 0
    rows = read_jsonl(tmp_path / "bad/traces.jsonl")
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"] and "nope.png" in rows[2]["error"]
