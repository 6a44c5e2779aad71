"""The trace-writing core `generate` and `reason` share: read this shard's examples (`shard_rows`), turn each
journaled answer into a trace row (`parse_trace`, `trace_row`), count while rows stream out (`Tally`) and judge the run
(`all_rows_failed`); `open_journal` takes the journal's lock for the stage runner.

    python -c "from distill.trace_rows import parse_trace; print(parse_trace('<think>a red circle</think> red'))"

`parse_trace` normalises an answer into an ECR trace `{raw, think, final}`. Reasoning arrives in three shapes, all
accepted: a separate `reasoning_content` field (vLLM/SGLang reasoning parsers, DeepSeek-style APIs) beside `content`;
`<think> ... </think> final` inside `content`; `... </think> final` with the opening tag missing (chat templates that
put `<think>` in the prompt). Anything else is all `final` with an empty `think`. An unclosed `<think>` (a truncated
answer) is all `think`. `raw` is always kept exactly as received, so a better parser can be re-run over the journal
without new requests.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from functools import partial

from distill.client.driver import raw_text
from distill.client.journal import Journal, JournalLocked
from distill.data.mmeb import load_examples
from distill.data.targets import distinct_targets
from distill.io import BadRow
from distill.stage import StageError
from distill.stage import summary as stage_summary

_OPEN = re.compile(r"<think>", re.IGNORECASE)
_CLOSE = re.compile(r"</think>", re.IGNORECASE)


def parse_trace(content: str | None, reasoning_content: str | None = None) -> dict:
    """{"raw", "think", "final"} from a chat completion message's `content` and optional `reasoning_content`."""
    content = content or ""
    if reasoning_content:
        inner = (
            parse_trace(content) if _CLOSE.search(content) else {"think": "", "final": _OPEN.sub("", content).strip()}
        )
        think = "\n".join(t for t in (reasoning_content.strip(), inner["think"]) if t)
        return {"raw": raw_text(content, reasoning_content), "think": think, "final": inner["final"]}
    close = _CLOSE.search(content)
    if close is None:
        opened = _OPEN.search(content)
        if opened is None:
            return {"raw": content, "think": "", "final": content.strip()}
        return {"raw": content, "think": content[opened.end() :].strip(), "final": ""}
    before, after = content[: close.start()], content[close.end() :]
    opened = _OPEN.search(before)
    think = before[opened.end() :] if opened else before
    return {"raw": content, "think": think.strip(), "final": _CLOSE.sub("", _OPEN.sub("", after)).strip()}


def in_shard(example_id: str, shard_index: int, num_shards: int) -> bool:
    """Deterministic split by id: the same id lands in the same shard on every machine and run."""
    return int(hashlib.sha256(example_id.encode()).hexdigest()[:16], 16) % num_shards == shard_index


def shard_rows(config, problems: list | None = None, side: str | None = None):
    """(line, example) of this shard, streamed in input order, for any stage config with `input`, `subset`,
    `shard_index`, `num_shards`, `max_examples` and `strict` (generate, reason). Bad rows and duplicate ids (first one
    kept) go to `problems` (when given). Holds only the ids seen, so the input is never in memory at once. For
    `side` "target", each distinct target (positive or negative) once, read in two passes (`distinct_targets`)."""
    seen: dict[str, int] = {}
    n = 0
    read = partial(load_examples, config.input, config.subset, side, config.image_root)
    # the target side: each distinct target once, negatives included (distill.data.targets); the query side as read
    for line, item in distinct_targets(read) if side == "target" else read():
        if isinstance(item, BadRow):
            if problems is not None:
                problems.append(item.as_dict())
        elif in_shard(item["id"], config.shard_index, config.num_shards):
            if item["id"] in seen:
                if problems is not None:
                    problems.append(
                        {"line": line, "id": item["id"], "reason": f"duplicate id (first on line {seen[item['id']]})"}
                    )
                continue
            seen[item["id"]] = line
            if config.max_examples is None or n < config.max_examples:
                n += 1
                yield line, item
        if config.strict and problems:
            return


def chunked(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Tally:
    """What generate and reason count while their rows stream out: statuses and tokens (`totals`), failure reasons,
    and the request stats of each chunk (`requests`); `summary` turns them into the stage summary both write."""

    def __init__(self):
        self.totals, self.failed_reasons, self.requests = Counter(), Counter(), Counter()

    def add_requests(self, stats: dict) -> None:
        self.requests.update({k: v for k, v in stats.items() if isinstance(v, int | float)})

    def count(self, row: dict) -> None:
        self.totals.update({row["status"]: 1, **row["usage"]})
        if row["status"] == "failed":
            self.failed_reasons[failure_class(row["error"])] += 1

    def summary(self, stage: str, n_examples: int, n_rows: int, seconds: float, problems: list, **extra) -> dict:
        dropped = Counter(f"bad input: {p['reason'].split(':')[0]}" for p in problems)
        dropped.update({f"failed: {r}": n for r, n in self.failed_reasons.items()})
        t = self.totals
        return stage_summary(
            stage, n_examples + len(problems), n_rows, seconds, dropped=dropped, problems=problems,
            tokens={"prompt": t["prompt_tokens"], "completion": t["completion_tokens"]}, examples=n_examples,
            bad_input_rows=len(problems), ok=t["ok"], truncated=t["truncated"], failed=t["failed"],
            failed_reasons=dict(self.failed_reasons), **extra,
        )  # fmt: skip


def answered_rows(entries: list[dict], journal: Journal, failures: dict, tally: Tally, make_row):
    """`make_row(entry, journaled record or None, error)` per entry, counted into `tally`: how generate and reason
    turn a chunk's answers into rows."""
    for e in entries:
        err = e.get("error") or failures.get(e.get("key"), {}).get("error")
        row = make_row(e, journal.get(e["key"]) if "key" in e else None, err)
        tally.count(row)
        yield row


def trace_row(entry: dict, side: str, teacher: dict, record: dict | None, error: str | None, cap: str) -> dict:
    """The output row for one (example, sample) of generate or reason: the example + the trace schema's fields
    (distill/records.py): `trace` parsed from the journaled answer (empty when none), `teacher` (who wrote it),
    `usage`, `status` and `error` (`cap`: the completion-length flag a truncated answer hit)."""
    row = {**entry["example"], "sample_index": entry["sample_index"], "side": side}
    row["trace"] = (parse_trace(record.get("content"), record.get("reasoning_content")) if record is not None
                    else {"raw": "", "think": "", "final": ""})  # fmt: skip
    row["teacher"] = teacher
    row["usage"] = (record or {}).get("usage") or {"prompt_tokens": 0, "completion_tokens": 0}
    row["status"] = record["status"] if record is not None else "failed"
    row["error"] = None if record is not None else (error or "no answer")
    if row["status"] == "truncated":
        row["error"] = f"finish_reason=length (hit {cap})"
    return row


def failure_class(error: str) -> str:
    """'failed after 7 attempt(s): HTTP 503: {...}' -> 'HTTP 503' (for the summary's failed_reasons)."""
    error = re.sub(r"^failed after \d+ attempt\(s\): ", "", error or "no answer")
    return re.sub(r"\s*\(.*", "", error.split(":")[0]).strip()


def open_journal(path) -> Journal:
    """The journal at `path`, locked for this process; StageError when another run holds it (its files are left as
    they are: a second run must not touch a running job's output, config or summary)."""
    try:
        return Journal(path)
    except JournalLocked as e:
        raise StageError(f"{e}; refusing to run, its files are left as they are") from None


def all_rows_failed(s: dict) -> str | None:
    """A `verdict` for generate and reason: failed rows are data (with their reason), not a failed run, unless *every*
    row failed for one reason: a configuration problem (wrong image_root, model name, URL or key)."""
    n_rows, reasons = s["rows_out"], s["failed_reasons"]
    if n_rows and s["failed"] == n_rows and len(reasons) == 1:
        return (f"every row ({n_rows}) failed with the same reason: {next(iter(reasons))}; "
                "check the configuration (paths, model, base_url, key)")  # fmt: skip
    return None
