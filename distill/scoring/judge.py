"""`llm_judge`: a rubric prompt (a file, or one shipped under teacher_prompts/judge/) sent through the teacher client; score 1-5.

The rubric is plain text with `{task}`, `{instruction}`, `{query}`, `{answer}`, `{positive}`, `{side}` and `{trace}`
slots (other braces are left alone). The request carries the images the trace is about (the query's for a query-side
trace, the positive's for a target-side one), before the rubric text, resized and encoded exactly as `generate` sends
them (`distill.teacher.prompts.ImageStore`, the same `min_pixels` / `max_pixels` defaults): the rubric asks the judge
to check faithfulness to the image, so it must see it. A row whose image cannot be read gets {"score": None, "error"}. Requests go through `distill.client.driver.complete_many(requests, config, journal_path)`
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

from distill.images import DEFAULT_MAX_PIXELS, DEFAULT_MIN_PIXELS
from distill.records import side_subject, trace_side
from distill.scoring.registry import register, trace_text

SLOTS = ("task", "instruction", "query", "answer", "positive", "side", "trace")
# The teacher's defaults (GenerateConfig): the judge sees the images at the budget the teacher saw them.
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
        "side": trace_side(row),
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
    images: bool = True,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    image_root: str = ".",
):
    """Judge each trace with the rubric file `rubric` through the teacher client configured by `client` (the
    ClientConfig fields: base_urls, model, api_key_env, max_concurrency, timeout_s, max_retries). `journal` defaults
    to <output dir>/llm_judge.journal.jsonl. `images` (default true) sends the trace's images at the
    stage's pixel budget (`min_pixels` / `max_pixels`: score's, set once per pipeline, so the judge sees what the
    teacher saw). `client` may still spell `base_url` (read as `base_urls`)."""
    from distill.images import ImageError
    from distill.teacher.prompts import (
        IMAGE_REF,
        ImageStore,
        materialize,
        resolve_prompt_file,  # `judge/ecr_quality.md` = the shipped rubric
    )

    text = resolve_prompt_file(rubric).read_text(encoding="utf-8")
    if "{trace}" not in text:
        raise ValueError(f"llm_judge: rubric {rubric} has no {{trace}} slot")
    sampling = {"temperature": 0.0, "max_tokens": 256, **(sampling or {})}
    journal_path = str(journal or Path(work_dir) / "llm_judge.journal.jsonl")
    if complete is None:
        from distill.client.config import ClientConfig
        from distill.config_types import renamed_keys

        config = ClientConfig(**renamed_keys((ClientConfig,), client, "llm_judge: client"))
        complete = _default_complete()
    else:
        config = dict(client)

    if not 0 < min_pixels <= max_pixels:
        raise ValueError(f"llm_judge: need 0 < min_pixels <= max_pixels, got {min_pixels}, {max_pixels}")
    store = ImageStore(image_root, min_pixels, max_pixels)

    def keyed(row: dict) -> tuple[dict, list[str]]:
        """The request with image refs (digests; raises ImageError), and its image paths in part order."""
        paths = list(side_subject(row, trace_side(row)).get("images") or []) if images else []
        prompt = fill(text, row, part)
        content = (
            prompt
            if not paths
            else [  # images first, then the text: the order generate sends
                *({"type": "image_url", "image_url": {"url": IMAGE_REF + store.digest(p)}} for p in paths),
                {"type": "text", "text": prompt},
            ]
        )
        return {"messages": [{"role": "user", "content": content}], "sampling": sampling}, paths

    def score(rows: list[dict]) -> list:
        requests, slot_of, index, bad = [], [], {}, {}
        for i, row in enumerate(rows):
            if trace_text(row, part) is None:
                slot_of.append(None)
                continue
            try:
                request, paths = keyed(row)
                key = orjson.dumps(request, option=orjson.OPT_SORT_KEYS)
                if key not in index:
                    # base64 only for requests actually sent; identical requests share one encoding
                    request["messages"] = materialize(request["messages"], paths, store)
                    index[key] = len(requests)
                    requests.append(request)
            except (ImageError, OSError, ValueError) as e:
                bad[i] = {"score": None, "error": f"judge image: {e}"}
                slot_of.append(None)
                continue
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
        return [bad.get(i) if s is None else values[s] for i, s in enumerate(slot_of)]

    return score
