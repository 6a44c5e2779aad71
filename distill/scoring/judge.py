"""`llm_judge`: a rubric prompt (a file, or one shipped under distill/teacher_prompts/judge/) sent through the teacher client; score 1-5.

The rubric is plain text with `{task}`, `{instruction}`, `{query}`, `{answer}`, `{positive}` and `{trace}` slots (other
braces are left alone). Requests go through `distill.client.driver.complete_many(requests, config, journal_path)`
(the same client, journal and resume as `generate`): a killed run re-sends only what the journal lacks. Identical
requests are sent once. Value per row: {"score": 1.0..5.0} or {"score": None, "error": why} (failed request,
truncated or unparseable reply); None for rows without a trace.

Injection point for tests and other clients: `make_llm_judge(..., complete=fn)` with
`fn(requests: list[dict], config, journal_path) -> list[dict]` ({"status", "text", "error", "usage"} per request).
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from distill.scoring.registry import register, trace_text

SLOTS = ("task", "instruction", "query", "answer", "positive", "trace")
_SCORE = re.compile(r"score\s*[:=]\s*\**\s*([1-5])\b", re.I)
_ALONE = re.compile(r"^\s*([1-5])(?:\s*/\s*5)?\s*\.?\s*$")


def fill(rubric: str, row: dict, part: str = "raw") -> str:
    """The rubric with its slots filled from the row (str.replace, so JSON or code braces in rubrics are safe)."""
    values = {
        "task": row.get("task") or "",
        "instruction": row.get("instruction") or "",
        "query": (row.get("query") or {}).get("text") or "(image only)",
        "answer": row.get("answer") or "",
        "positive": (row.get("positive") or {}).get("text") or "",
        "trace": trace_text(row, part) or "",
    }
    for key in SLOTS:
        rubric = rubric.replace("{" + key + "}", str(values[key]))
    return rubric


def parse_score(text: str | None) -> tuple[float | None, str | None]:
    """(score, None) from a judge reply ('... Score: 4', or a bare '4' / '4/5'; the last 'Score: N' after any
    `</think>`), else (None, reason)."""
    if text and "</think>" in text:  # a reasoning judge: only its answer counts, not scores it mulled over
        text = text.rsplit("</think>", 1)[1]
    if not text or not text.strip():
        return None, "empty judge reply"
    matches = _SCORE.findall(text)
    if matches:
        return float(matches[-1]), None
    if m := _ALONE.match(text):
        return float(m.group(1)), None
    return None, f"no 'Score: N' (1-5) in judge reply ending {text.strip()[-80:]!r}"


def _default_complete():
    from distill.client.driver import complete_many  # lazy: the scorer module must import without the client

    return complete_many


@register("llm_judge")
def make_llm_judge(
    rubric: str,
    client: dict,
    sampling: dict | None = None,
    part: str = "raw",
    journal: str | None = None,
    work_dir: str = ".",
    complete=None,
):
    """Judge each trace with the rubric file `rubric` through the teacher client configured by `client` (the
    ClientConfig fields: base_urls, model, api_key_env, max_concurrency, timeout_s, max_retries). `journal` defaults
    to <output dir>/llm_judge.journal.jsonl."""
    from distill.teacher.prompts import resolve_prompt_file  # `judge/ecr_quality.md` = the shipped rubric

    text = resolve_prompt_file(rubric).read_text(encoding="utf-8")
    if "{trace}" not in text:
        raise ValueError(f"llm_judge: rubric {rubric} has no {{trace}} slot")
    sampling = {"temperature": 0.0, "max_tokens": 256, **(sampling or {})}
    journal_path = str(journal or Path(work_dir) / "llm_judge.journal.jsonl")
    if complete is None:
        from distill.client.http import ClientConfig

        config = ClientConfig(**client)
        complete = _default_complete()
    else:
        config = dict(client)

    def score(rows: list[dict]) -> list:
        requests, slot_of, index = [], [], {}
        for row in rows:
            if trace_text(row, part) is None:
                slot_of.append(None)
                continue
            request = {"messages": [{"role": "user", "content": fill(text, row, part)}], "sampling": sampling}
            key = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
            if key not in index:
                index[key] = len(requests)
                requests.append(request)
            slot_of.append(index[key])
        results = complete(requests, config, journal_path) if requests else []
        if len(results) != len(requests):
            raise RuntimeError(f"llm_judge: client returned {len(results)} results for {len(requests)} requests")
        values = []
        for result in results:
            if result.get("status") != "ok":
                values.append({"score": None, "error": f"judge request {result.get('status')}: {result.get('error')}"})
                continue
            value, error = parse_score(result.get("text"))
            values.append({"score": value} if error is None else {"score": None, "error": error})
        return [None if s is None else values[s] for s in slot_of]

    return score
