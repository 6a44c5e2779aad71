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

import logging
import sys
import time
from contextlib import nullcontext
from functools import partial

from tqdm import tqdm

from distill.client.batch import run_batch
from distill.client.driver import drive
from distill.client.http import TeacherUnreachable
from distill.client.journal import Journal, request_key
from distill.configs import config_dict
from distill.image_store import ImageStore
from distill.images import ImageError
from distill.io import write_jsonl_atomic
from distill.stage import DataError, Paths, Stage, StageError
from distill.teacher.dry_run import dry_run
from distill.teacher.generate_config import GenerateConfig
from distill.teacher.prompts import TemplateSet, materialize, render
from distill.trace_rows import Tally, all_rows_failed, answered_rows, chunked, open_journal, shard_rows, trace_row

log = logging.getLogger(__name__)


def iter_shard(config: GenerateConfig, problems: list | None = None):
    """This shard's examples (`shard_rows` for the configured side, without line numbers)."""
    return (item for _, item in shard_rows(config, problems, config.side))


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
    return answered_rows(entries, journal, failures, tally,
                         lambda e, rec, err: trace_row(e, config.side, teacher_block(e, config), rec, err, "max_tokens"))  # fmt: skip


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


def teacher_block(entry: dict, config: GenerateConfig) -> dict:
    """Who wrote a row: the teacher model, the prompt (prompt_sha: the template's hash, one per template, what lineage
    lists; request_sha: this rendered request's), the mode and the sampling."""
    r = entry.get("rendered")
    return {"model": entry.get("model", config.image_model or config.model),
            "prompt_id": r.prompt_id if r else None, "prompt_version": r.prompt_version if r else None,
            "prompt_sha": r.template_sha if r else None, "request_sha": r.request_sha if r else None,
            "mode": config.mode, "sampling": entry.get("sampling") or config.sampling(entry["sample_index"])}  # fmt: skip


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
