"""`distill generate`: ECR traces from a teacher behind any OpenAI-compatible endpoint; journaled, resumable, sharded.

    distill generate --config recipes/demo/generate.yaml
    distill generate --config recipes/qwen2vl-2b/generate.yaml --input mmeb_train/OK-VQA.parquet \
        --output runs/okvqa/traces.shard3.jsonl --shard_index 3 --num_shards 16 --api_key_env VLLM_API_KEY

Reads examples (`distill.data.mmeb.load_examples`; bad rows reported by line, fatal only with --strict), keeps this
shard's ids (sha256 of the id mod num_shards), renders one prompt per example (the templates shipped in
teacher_prompts/ or --prompts_dir, mode blind|hinted, side query|target) and sends num_samples requests each. Answers go to `<output stem>.journal.jsonl` as they arrive;
a rerun of the same command sends only what the journal lacks. The output is written from the journal a chunk of
examples at a time (`PLAN_CHUNK`; memory stays at one chunk) into one atomic file: exactly one trace row per
(id, sample_index), in input order (schema: distill/records.py), failed rows included with their `error`. Next to it: `<stem>.summary.json` (counts, tokens, truncated, failed, the resolved config)
and `<stem>.config.yaml`. The API key is read from the env var named by `api_key_env` and is never written anywhere.
The flags: `distill.teacher.generate_config.GenerateConfig`; `--dry_run`: `distill.teacher.dry_run`.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
from collections import Counter
from contextlib import nullcontext
from functools import partial

from tqdm import tqdm

from distill.client.batch import run_batch
from distill.client.driver import drive
from distill.client.http import TeacherUnreachable
from distill.client.journal import Journal, JournalLocked, request_key
from distill.configs import config_dict
from distill.data.mmeb import Problem, load_examples
from distill.data.targets import distinct_targets
from distill.images import ImageError
from distill.io import write_jsonl_atomic
from distill.stage import DataError, Paths, Stage, StageError
from distill.stage import summary as stage_summary
from distill.teacher.dry_run import dry_run
from distill.teacher.generate_config import GenerateConfig
from distill.teacher.parse import parse_trace
from distill.teacher.prompts import ImageStore, TemplateSet, materialize, render

log = logging.getLogger(__name__)


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
        if isinstance(item, Problem):
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


def iter_shard(config: GenerateConfig, problems: list | None = None):
    """This shard's examples (`shard_rows` for the configured side, without line numbers)."""
    return (item for _, item in shard_rows(config, problems, config.side))


def chunked(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


PLAN_CHUNK = 16384  # examples rendered, sent, journaled and written at a time: bounds what is held in memory


def streamed_rows(config: GenerateConfig, store: ImageStore, templates: TemplateSet, journal: Journal, tally: Tally):
    """Render, send and journal the shard a chunk of examples at a time, then yield that chunk's rows: only one
    chunk's prompts and rows are ever in memory (the atomic writer streams them to disk), whatever the shard size or
    num_samples. Request stats are summed into `tally.requests`."""
    for chunk in chunked(iter_shard(config), PLAN_CHUNK):
        entries = plan(config, chunk, store, templates)
        fails, stats = drive(config.client(), journal, [(e["key"], e["body"]) for e in entries if "key" in e],
                             desc="generate")  # fmt: skip
        tally.add_requests(stats)
        yield from entry_rows(config, entries, journal, fails, tally)


def entry_rows(config: GenerateConfig, entries: list[dict], journal: Journal, failures: dict, tally: Tally):
    """The output rows of planned entries once their answers are journaled (or failed); counts into `tally`."""
    return answered_rows(entries, journal, failures, tally, lambda e, record, err: trace_row(e, config, record, err))


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
            self.failed_reasons[reason_class(row["error"])] += 1

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


def _body(model: str, messages: list[dict], images: list[str], sampling: dict, store: ImageStore) -> dict:
    return {"model": model, "messages": materialize(messages, images, store), **sampling}


def plan(config: GenerateConfig, examples: list[dict], store: ImageStore, templates: TemplateSet) -> list[dict]:
    """One entry per (example, sample): key, model, prompt ids, sampling, a body factory, or an input error."""
    out = []
    # Rendering hashes every image file once (keys need the bytes' digest): a visible phase on large inputs.
    for ex in tqdm(examples, desc="render", unit="ex", disable=not config.progress, mininterval=1.0):
        try:
            r = render(ex, templates, store, config.mode, config.side)
        except (ImageError, OSError) as e:  # a missing/corrupt image, frame folder or video file: the row fails
            log.warning("%s: row %s: %s", config.input, ex["id"], e)
            out += [{"example": ex, "sample_index": i, "error": f"bad input: {e}"} for i in range(config.num_samples)]
            continue
        model = config.image_model if (r.images and config.image_model) else config.model
        for i in range(config.num_samples):
            sampling = config.sampling(i)
            out.append({"example": ex, "sample_index": i, "key": request_key(model, r.messages, sampling, i),
                        "model": model, "rendered": r, "sampling": sampling,
                        # a factory when images must be encoded (run in a thread by the client), else the body itself
                        "body": partial(_body, model, r.messages, r.images, sampling, store) if r.images or r.videos
                        else {"model": model, "messages": r.messages, **sampling}})  # fmt: skip
    return out


def trace_row(entry: dict, config: GenerateConfig, record: dict | None, error: str | None) -> dict:
    """The output row for one (example, sample): the example + trace fields (distill/records.py)."""
    r = entry.get("rendered")
    row = {**entry["example"], "sample_index": entry["sample_index"], "side": config.side}
    if record is not None:
        row["trace"] = parse_trace(record.get("content"), record.get("reasoning_content"))
    else:
        row["trace"] = {"raw": "", "think": "", "final": ""}
    # prompt_sha: the template's hash (one per template, what lineage lists); request_sha: this rendered request's.
    row["teacher"] = {"model": entry.get("model", config.image_model or config.model),
                      "prompt_id": r.prompt_id if r else None, "prompt_version": r.prompt_version if r else None,
                      "prompt_sha": r.template_sha if r else None, "request_sha": r.request_sha if r else None,
                      "mode": config.mode, "sampling": entry.get("sampling") or config.sampling(entry["sample_index"])}  # fmt: skip
    row["usage"] = (record or {}).get("usage") or {"prompt_tokens": 0, "completion_tokens": 0}
    row["status"] = record["status"] if record is not None else "failed"
    row["error"] = None if record is not None else (error or "no answer")
    if row["status"] == "truncated":
        row["error"] = "finish_reason=length (hit max_tokens)"
    return row


def reason_class(error: str) -> str:
    """'failed after 7 attempt(s): HTTP 503: {...}' -> 'HTTP 503' (for the summary's failed_reasons)."""
    error = re.sub(r"^failed after \d+ attempt\(s\): ", "", error or "no answer")
    return re.sub(r"\s*\(.*", "", error.split(":")[0]).strip()


def run(config: GenerateConfig, held: Journal | None) -> dict | None:
    """Generate this shard's traces into `config.output` through the journal `held` (None: a dry run, which prints
    the plan and writes nothing); returns the summary."""
    paths, start = config.paths(), time.monotonic()
    problems: list[dict] = []
    tasks, n_examples = set(), 0
    for ex in iter_shard(config, problems):  # pass 1: ids, tasks and bad rows only (examples are not kept)
        tasks.add(ex["task"])
        n_examples += 1
    for p in problems:
        log.warning("%s:%s: %s", config.input, p["line"], p["reason"])
    if config.strict and problems:
        raise DataError(f"stopping on bad input (--strict): {config.input}:{problems[0]['line']}: "
                        f"{problems[0]['reason']}")  # fmt: skip
    store = ImageStore(config.image_root, config.min_pixels, config.max_pixels, num_frames=config.num_frames,
                       frame_min_pixels=config.frame_min_pixels, frame_max_pixels=config.frame_max_pixels,
                       video_parts=config.video_parts)  # fmt: skip
    templates = TemplateSet(config.prompts_dir)
    try:  # every template this shard needs, before any request: a broken directory is a config error
        templates.check(tasks, config.side)
    except ValueError as e:
        raise StageError(str(e)) from None
    if config.dry_run:
        _dry_run(config, store, templates)
        return None
    journal, tally = held, Tally()
    if config.batch:
        import openai

        def planned():  # rendered again on each pass (keys, batch files, rows) rather than held: bounded memory
            for chunk in chunked(iter_shard(config), PLAN_CHUNK):
                yield plan(config, chunk, store, templates)

        try:
            failures, stats = run_batch(config.client(), config.batch_settings(), journal,
                                        lambda: ((e["key"], e["body"]) for es in planned() for e in es if "key" in e))  # fmt: skip
        except (FileNotFoundError, openai.OpenAIError, ValueError) as e:  # ValueError: a template that renders badly
            raise StageError(f"--batch: {e}") from None
        if stats.get("written_only"):  # files for `vllm run-batch`; their answers come back with --batch_results
            return None
        tally.requests = stats  # one run_batch call: its stats as they are (they hold a list of batches)
        rows = (row for es in planned() for row in entry_rows(config, es, journal, failures, tally))
    else:
        rows = streamed_rows(config, store, templates, journal, tally)
    try:  # online, requests are sent while the rows stream out; a stop leaves no output (answers are journaled)
        n_rows = write_jsonl_atomic(config.output, rows)
    except (ValueError, TeacherUnreachable) as e:  # a template that renders badly; answers so far are journaled
        raise StageError(str(e)) from None
    totals, failed_reasons, stats = tally.totals, tally.failed_reasons, dict(tally.requests)
    print(f"generate: {n_examples} examples -> {n_rows} rows: {totals['ok']} ok, {totals['truncated']} truncated, "
          f"{totals['failed']} failed{f' {dict(failed_reasons)}' if failed_reasons else ''}; "
          f"sent {stats.get('to_send', 0)} requests "
          f"({stats.get('journaled_before', 0)} answers from the journal, {stats.get('same_content', 0)} same-content); "
          f"{totals['prompt_tokens']} prompt + {totals['completion_tokens']} completion tokens; "
          f"{len(problems)} bad input rows -> {config.output} (summary {paths['summary']})")  # fmt: skip
    return tally.summary(
        "generate", n_examples, n_rows, time.monotonic() - start, problems, input=config.input, output=config.output,
        prompt_tokens=totals["prompt_tokens"], completion_tokens=totals["completion_tokens"],
        requests={**stats, "images_encoded": store.encoded}, config=config_dict(config),
    )  # fmt: skip


def _dry_run(config: GenerateConfig, store: ImageStore, templates: TemplateSet) -> None:
    """Print what a run would send (requests, tokens, cost) and what the journal already holds; writes nothing."""
    journaled: set[str] = set()
    if config.paths()["journal"].exists():
        with open_journal(config.paths()["journal"]) as journal:
            journaled = journal.keys()
    chunks = (plan(config, chunk, store, templates) for chunk in chunked(iter_shard(config), PLAN_CHUNK))
    try:
        dry_run(config, chunks, store, journaled)
    except ValueError as e:  # a template that renders badly for some example: a config error
        raise StageError(str(e)) from None


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


def _check(config: GenerateConfig) -> None:
    if not config.dry_run:
        try:
            config.client().api_key()  # fail before any file is written when the named env var is missing
        except ValueError as e:
            raise StageError(str(e)) from None


STAGE = Stage(
    "generate",
    (GenerateConfig,),
    run,
    output="output",
    writes="<stem>.journal.jsonl (every answer, what a rerun resumes from) beside --output",
    paths=lambda c: Paths(reads=[c.input, c.prompts_dir, c.image_root], writes=[c.output, c.paths()["journal"]]),
    check=_check,
    hold=lambda c: nullcontext() if c.dry_run else open_journal(c.paths()["journal"]),
    dry=lambda c: c.dry_run,
    verdict=all_rows_failed,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["generate", *sys.argv[1:]]))
