"""llm_judge with a fake `complete` (the real teacher client is wired and tested over HTTP by the integrator)."""

from pathlib import Path

import pytest

from distill.scoring import build_scorer
from distill.scoring.judge import parse_score
from distill.testing.traces import trace_row

RUBRIC = Path(__file__).resolve().parents[1] / "teacher_prompts" / "judge" / "ecr_quality.md"
EX = {"id": "e", "task": "vqa", "dataset": "D", "query": {"text": "What color?", "images": []}, "instruction": "Q:",
      "positive": {"text": "red", "images": []}, "negatives": [], "answer": "red"}  # fmt: skip


@pytest.mark.parametrize(
    "reply, expected",
    [
        ("Accurate and specific.\nScore: 5", 5.0),
        ("score = 3", 3.0),
        ("**Score:** 2", 2.0),
        ("Score: 2 ... on reflection Score: 4", 4.0),  # the last one counts
        ("4", 4.0),
        ("<think>maybe Score: 2?</think>Fine. Score: 4", 4.0),  # only the answer after the reasoning counts
        ("<think>Score: 2</think>4", 4.0),
        ("<think>Score: 2</think>", None),  # nothing after the reasoning
        ("4/5", 4.0),
        ("Score: 7", None),  # out of range
        ("great trace", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_score(reply, expected):
    value, error = parse_score(reply)
    assert value == expected and (error is None) == (expected is not None)


def test_llm_judge_builds_requests_and_keeps_failure_reasons(tmp_path):
    calls = []

    def fake_complete(requests, config, journal_path):
        calls.append((requests, config, journal_path))
        replies = {"Looks right. Score: 4": "ok", None: "failed", "I like it": "ok"}
        out = []
        for req in requests:
            trace = req["messages"][0]["content"]
            text = "Looks right. Score: 4" if "GOODTRACE" in trace else ("I like it" if "VAGUETRACE" in trace else None)
            out.append({"status": replies[text], "text": text, "error": None if text else "HTTP 500", "usage": {}})
        return out

    rows = [trace_row(EX, 0, "<think>GOODTRACE</think>red"), trace_row(EX, 1, "<think>VAGUETRACE</think>hmm"),
            trace_row(EX, 2, "<think>broken</think>x"), trace_row(EX, 3, None, "failed"),
            trace_row(EX, 4, "<think>GOODTRACE</think>red")]  # fmt: skip
    client = {"base_urls": ["http://127.0.0.1:1/v1"], "model": "judge"}
    scorer = build_scorer("llm_judge", context={"work_dir": str(tmp_path)}, rubric=str(RUBRIC), client=client,
                          complete=fake_complete)  # fmt: skip
    values = scorer(rows)
    assert values[0] == {"score": 4.0} and values[4] == {"score": 4.0}
    assert values[1]["score"] is None and "no 'Score: N'" in values[1]["error"]
    assert values[2] == {"score": None, "error": "judge request failed: HTTP 500"}
    assert values[3] is None  # no trace: nothing sent
    ((requests, config, journal),) = calls
    assert len(requests) == 3  # rows 0 and 4 are the same request, sent once
    content = requests[0]["messages"][0]["content"]
    assert "<think>GOODTRACE</think>red" in content and "What color?" in content and "{trace}" not in content
    assert requests[0]["sampling"]["temperature"] == 0.0
    assert config == client and journal == str(tmp_path / "llm_judge.journal.jsonl")


def test_llm_judge_rejects_a_rubric_without_trace_slot(tmp_path):
    bad = tmp_path / "r.md"
    bad.write_text("Rate it 1-5.")
    with pytest.raises(ValueError, match="no \\{trace\\} slot"):
        build_scorer("llm_judge", rubric=str(bad), client={}, complete=lambda *a: [])


def test_llm_judge_over_http_with_the_teacher_client(tmp_path):
    """Through the real client (branch `generate`) against its fault-injecting fake server: faults are retried, every
    row gets a value with the reason kept (the fake answers without a score), and a rerun re-sends nothing."""
    from distill.testing.fake_openai import FakeOpenAI

    server = FakeOpenAI(fault_rate=0.3, faults=("429", "500"), seed=1)
    url = server.start()
    try:
        client = {"base_urls": [url], "model": "judge", "max_concurrency": 4, "timeout_s": 5, "max_retries": 4}
        scorer = build_scorer("llm_judge", context={"work_dir": str(tmp_path)}, rubric=str(RUBRIC), client=client)
        rows = [trace_row(EX, i, f"<think>t{i}</think>red") for i in range(6)] + [trace_row(EX, 9, None, "failed")]
        values = scorer(rows)
        assert values[-1] is None and all(v["score"] is None and "Score: N" in v["error"] for v in values[:-1])
        sent = len(server.seen_keys)
        assert sent >= 6 and (tmp_path / "llm_judge.journal.jsonl").exists()
        assert scorer(rows) == values and len(server.seen_keys) == sent  # journaled: nothing re-sent
    finally:
        server.stop()


@pytest.mark.parametrize(
    "side, image",
    [("query", "images/vqa_00.png"), ("target", "images/t2i_00.png")],  # the images of the side the trace is about
)
def test_judge_request_carries_the_side_image_as_generate_encodes_it(demo_dir, tmp_path, side, image):
    import base64
    import io

    from PIL import Image

    from distill.teacher.prompts import ImageStore

    sent = []

    def fake_complete(requests, config, journal_path):
        sent.extend(requests)
        return [{"status": "ok", "text": "Score: 3", "error": None, "usage": {}} for _ in requests]

    ex = {**EX, "query": {"text": "What color?", "images": ["images/vqa_00.png"]},
          "positive": {"text": "red", "images": ["images/t2i_00.png"]}}  # fmt: skip
    rows = [{**trace_row(ex, 0, "<think>x</think>red"), "side": side}]
    budget = {"min_pixels": 3136, "max_pixels": 12544}
    scorer = build_scorer("llm_judge", context={"work_dir": str(tmp_path), "image_root": str(demo_dir), **budget},
                          rubric=str(RUBRIC), client={"model": "judge"}, complete=fake_complete)  # fmt: skip
    assert scorer(rows) == [{"score": 3.0}]
    (content,) = [m["content"] for m in sent[0]["messages"]]
    assert [p["type"] for p in content] == ["image_url", "text"]  # image first, as generate sends it
    assert f"about the {side} side" in content[1]["text"]
    url = content[0]["image_url"]["url"]
    assert url == ImageStore(demo_dir, **budget).data_url(image)  # same resize and PNG encoding as generate
    img = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert img.width * img.height <= budget["max_pixels"]


def test_judge_row_with_unreadable_image_gets_a_reason(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    ex = {**EX, "query": {"text": "What color?", "images": ["bad.png"]}}
    scorer = build_scorer("llm_judge", context={"work_dir": str(tmp_path), "image_root": str(tmp_path)},
                          rubric=str(RUBRIC), client={"model": "judge"}, complete=lambda r, c, j: [])  # fmt: skip
    (value,) = scorer([trace_row(ex, 0, "<think>x</think>red")])
    assert value["score"] is None and "judge image" in value["error"]


def test_llm_judge_client_reads_the_old_base_url_key_and_refuses_both(tmp_path, caplog):
    """The judge's `client:` renames old keys by the one rule every config follows (`config_types.renamed_keys`)."""
    old = {"base_url": ["http://127.0.0.1:1/v1"], "model": "judge"}
    build_scorer("llm_judge", context={"work_dir": str(tmp_path)}, rubric=str(RUBRIC), client=old)
    assert "'base_url' is now spelled 'base_urls'" in caplog.text
    with pytest.raises(ValueError, match="both 'base_url' and 'base_urls'"):
        build_scorer("llm_judge", context={"work_dir": str(tmp_path)}, rubric=str(RUBRIC),
                     client={**old, "base_urls": ["http://127.0.0.1:2/v1"]})  # fmt: skip
