"""`distill reason`: the student writes traces for examples; rows in the trace schema, so `score`/`filter`/`eval` read
them unchanged. Journaled, resumable after kill -9, shardable like `generate`.

    distill reason --backend hf --model runs/demo/train/model --input runs/demo/heldout.jsonl \
        --image_root data/demo --output runs/demo/reason_trained/traces.jsonl
    distill reason --backend openai --model student --base_urls http://127.0.0.1:8000/v1 \
        --input /data/MMEB-eval/OK-VQA.parquet --output runs/eval/student.jsonl --shard_index 0 --num_shards 8

The student is asked with `distill.chat_format.student_prompt(row)`: the messages it was trained on, without the
assistant turn. Backends: `hf` (the checkpoint or LoRA adapter in-process: `distill.reason_hf`, batched, left-padded,
length-sorted) and `openai` (any endpoint serving the student, `vllm serve` / SGLang / `distill serve`, through the
shared client and journal). Every answer is journaled (`<output stem>.journal.jsonl`) keyed by the model, the row id,
its prompt (image file digests included), the sampling and the sample index; a rerun generates only what is missing,
and the output is written from the journal a chunk of examples at a time (`CHUNK_EXAMPLES`) into one atomic file:
one row per (id, sample_index), in input order. Each row
records who wrote it in `teacher` (role `student`, model name, checkpoint and its fingerprint, backend, sampling).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

import orjson

from distill.chat_format import StudentPrompt, multimodal_messages, student_prompt
from distill.checkpoint import Checkpoint, resolve_checkpoint
from distill.client.journal import Journal
from distill.configs import config_dict
from distill.image_store import ImageStore
from distill.images import ImageError, check_ref
from distill.io import write_jsonl_atomic
from distill.reason_config import ReasonConfig
from distill.stage import DataError, Paths, Stage, StageError
from distill.trace_rows import Tally, all_rows_failed, answered_rows, chunked, open_journal, shard_rows, trace_row
from distill.urls import redact_url

log = logging.getLogger(__name__)


def iter_rows(config: ReasonConfig, problems: list | None = None):
    """This shard's (line, example) pairs, streamed in input order (`generate`'s sharding, duplicate and bad-row
    rules); bad rows go to `problems` (when given)."""
    return shard_rows(config, problems)


def writer_block(config: ReasonConfig, checkpoint: Checkpoint | None) -> dict:
    """Who wrote the traces: the `teacher` block of the trace schema, for a student (`checkpoint`: the hf one)."""
    block = {"model": config.name or config.model, "prompt_id": f"student_chat_format:{config.side}",
             "prompt_sha": hashlib.sha256((config.system_prompt or "").encode()).hexdigest()[:12], "mode": "blind",
             "role": "student", "backend": config.backend}  # fmt: skip
    if checkpoint is not None:
        block.update(checkpoint=os.path.abspath(config.model), base_model=checkpoint.base,
                     fingerprint=checkpoint.fingerprint)  # fmt: skip
    else:
        block["base_url"] = [redact_url(u) for u in config.base_urls]  # rows are shared: never with credentials
    return block


def row_key(writer: str, example_id: str, prompt: StudentPrompt, digests: list[str], sampling: dict, i: int) -> str:
    payload = {"writer": writer, "id": example_id, "messages": prompt.messages, "images": digests,
               "sampling": sampling, "sample_index": i}  # fmt: skip
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def plan(config: ReasonConfig, rows: list[tuple[int, dict]], store: ImageStore, writer: str) -> list[dict]:
    """One entry per (example, sample): key, prompt, sampling; or an input error (unreadable image, bad row)."""
    entries = []
    for line, ex in rows:
        try:
            prompt = student_prompt(ex, side=config.side, system_prompt=config.system_prompt)
            for rel in prompt.images:  # unreadable images fail their row here, with the reason, before any work
                check_ref(config.image_root, rel)
            digests = [store.digest(rel) for rel in prompt.images]
            for video in prompt.videos:  # the sampled frames key the row like images do (unreadable: fails here)
                digests += [store.digest(ref) for ref in store.video_frames({"images": [], "video": video})]
        except (ImageError, OSError, KeyError, TypeError, AttributeError, ValueError) as e:
            reason = str(e) if isinstance(e, (ImageError, OSError, ValueError)) else f"malformed row: {e!r}"
            log.warning("%s:%d: %s", config.input, line, reason)
            entries += [{"example": ex, "line": line, "sample_index": i, "error": f"bad input: {reason}"}
                        for i in range(config.num_samples)]  # fmt: skip
            continue
        for i in range(config.num_samples):
            sampling = config.sampling(i)
            entries.append({"example": ex, "line": line, "sample_index": i, "prompt": prompt, "sampling": sampling,
                            "key": row_key(writer, ex["id"], prompt, digests, sampling, i)})  # fmt: skip
    return entries


def wire_messages(prompt: StudentPrompt, image_urls: list[str], video_urls: list[str] | None = None) -> list[dict]:
    """The student's prompt on the OpenAI wire: the same structured messages, image parts as `image_url` and each
    video as one `video_url` part (its sampled frames as `data:video/jpeg`, read by vLLM as the video the student was
    trained on, not as separate images)."""
    wire = {"image": lambda p: {"type": "image_url", "image_url": {"url": p["image"]}},
            "video": lambda p: {"type": "video_url", "video_url": {"url": p["video"]}}}  # fmt: skip
    out = []
    for m in multimodal_messages(prompt.messages, image_urls, video_urls):
        parts = [wire[p["type"]](p) if p["type"] in wire else p for p in m["content"]]
        only_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": m["role"], "content": parts[0]["text"] if only_text else parts})
    return out


def run_openai(config: ReasonConfig, entries: list[dict], journal: Journal, store: ImageStore) -> tuple[dict, dict]:
    from distill.client.driver import drive

    def body(e):
        urls = [store.data_url(rel) for rel in e["prompt"].images]
        videos = [store.video_url(store.video_frames({"images": [], "video": v})) for v in e["prompt"].videos]
        return {"model": config.model, "messages": wire_messages(e["prompt"], urls, videos), **e["sampling"]}

    items = [(e["key"], (lambda e=e: body(e))) for e in entries if "key" in e]
    return drive(config.client(), journal, items, desc="reason (openai)")


def run_hf(config: ReasonConfig, entries: list[dict], journal: Journal, loaded: dict) -> tuple[dict, dict]:
    """Generate what the journal lacks with the checkpoint in-process. `loaded` keeps the student across chunks; it is
    loaded only when some row needs it, so a rerun with every answer journaled loads nothing."""
    import torch

    from distill.chat_format import load_images, load_videos
    from distill.reason_hf import Student, run_batches
    from distill.video import FRAME_MAX_PIXELS, FRAME_MIN_PIXELS, NUM_FRAMES

    todo = list({e["key"]: e for e in entries if "key" in e and e["key"] not in journal}.values())
    stats = {"to_send": len(todo), "journaled_before": sum("key" in e and e["key"] in journal for e in entries)}
    failures: dict[str, dict] = {}
    if not todo:
        return failures, stats
    if "student" not in loaded:
        try:
            loaded["student"] = Student(config.model, config.base_model, config.device, config.dtype,
                                        config.min_pixels, config.max_pixels)  # fmt: skip
        except (
            OSError,
            ValueError,
            RuntimeError,
            KeyError,
            TypeError,
        ) as e:  # passed resolve_checkpoint, still refused
            first = (str(e).strip().splitlines() or [""])[0]
            raise StageError(f"--model {config.model}: cannot load it: {type(e).__name__}: {first}") from None
        if config.seed is not None:  # once per run: a chunked run samples the same stream as one call would
            torch.manual_seed(config.seed)
    student = loaded["student"]

    def encode(e):
        images = load_images(e["prompt"].images, config.image_root, config.min_pixels, config.max_pixels)
        videos = load_videos(e["prompt"].videos, config.image_root, NUM_FRAMES, FRAME_MIN_PIXELS, FRAME_MAX_PIXELS)
        return student.encode(e["prompt"].messages, images, videos, config.max_new_tokens)

    def on_result(key, record):
        if record["status"] == "failed":
            failures[key] = record
        else:
            journal.put(key, record)

    sampling = config.sampling(0)  # rows of one run share it (only the openai seed differs per sample)
    stats.update(run_batches(student, [(e["key"], e) for e in todo], encode, sampling, config.batch_size, on_result,
                             config.progress))  # fmt: skip
    return failures, stats


def student_row(entry: dict, writer: dict, record: dict | None, error: str | None) -> dict:
    """The trace row of one (example, sample), written by the student `writer` (`distill.trace_rows.trace_row`)."""
    teacher = {**writer, "sampling": entry.get("sampling") or {}}
    return trace_row(entry, writer["prompt_id"].split(":")[-1], teacher, record, error, "max_new_tokens")


CHUNK_EXAMPLES = 16384  # examples planned, generated, journaled and written at a time: bounds what is in memory


def streamed_rows(config: ReasonConfig, writer: dict, store: ImageStore, journal: Journal, tally: Tally):
    """Plan, generate and journal a chunk of examples at a time, then yield its rows: memory stays at one chunk
    whatever the input size (hf batches are length-sorted within a chunk, which keeps padding as low)."""
    loaded: dict = {}
    for chunk in chunked(iter_rows(config), CHUNK_EXAMPLES):
        entries = plan(config, chunk, store, f"{config.backend}:{writer.get('fingerprint') or config.model}")
        if config.backend == "hf":
            failures, stats = run_hf(config, entries, journal, loaded)
        else:
            failures, stats = run_openai(config, entries, journal, store)
        tally.add_requests(stats)
        yield from answered_rows(
            entries, journal, failures, tally, lambda e, rec, err: student_row(e, writer, rec, err)
        )


def run(config: ReasonConfig, held: Journal) -> dict:
    """The student's traces for this shard into `config.output`, through the journal `held`; returns the summary."""
    start = time.monotonic()
    problems: list[dict] = []
    try:  # pass 1: ids and bad rows only (the examples are read again, a chunk at a time)
        n_examples = sum(1 for _ in iter_rows(config, problems))
    except (OSError, ValueError) as e:  # an input that exists but does not read as examples
        raise StageError(f"--input {config.input}: {e}") from None
    for p in problems:
        log.warning("%s:%s: %s", config.input, p["line"], p["reason"])
    if config.strict and problems:
        raise DataError(f"stopping on bad input (--strict): {config.input}:{problems[0]['line']}: "
                        f"{problems[0]['reason']}")  # fmt: skip
    checkpoint = resolve_checkpoint(config.model, config.base_model) if config.backend == "hf" else None
    writer = writer_block(config, checkpoint)
    store = ImageStore(config.image_root, config.min_pixels, config.max_pixels)
    tally = Tally()
    try:
        n_rows = write_jsonl_atomic(config.output, streamed_rows(config, writer, store, held, tally))
    except (OSError, ValueError, RuntimeError) as e:  # a checkpoint that does not load
        raise StageError(str(e)) from None
    totals, failed_reasons, stats = tally.totals, tally.failed_reasons, dict(tally.requests)
    print(f"reason ({config.backend}, {writer['model']}): {n_examples} examples -> {n_rows} rows: {totals['ok']} ok, "
          f"{totals['truncated']} truncated, {totals['failed']} failed"
          f"{f' {dict(failed_reasons)}' if failed_reasons else ''}; generated {stats.get('to_send', 0)} "
          f"({stats.get('journaled_before', 0)} from the journal); {len(problems)} bad input rows -> {config.output}")  # fmt: skip
    return tally.summary("reason", n_examples, n_rows, time.monotonic() - start, problems, input=config.input,
                         output=config.output, writer=writer, run=stats, config=config_dict(config))  # fmt: skip


def _check(config: ReasonConfig) -> None:
    """Before any file is written: the named API-key variable is set (openai), the checkpoint can load (hf)."""
    try:
        if config.backend == "openai":
            config.client().api_key()
        else:
            resolve_checkpoint(config.model, config.base_model)  # resolved once: run and the model load reuse it
    except (OSError, ValueError) as e:  # a damaged or missing checkpoint, a missing key: nothing was written
        raise StageError(str(e)) from None


STAGE = Stage(
    "reason",
    (ReasonConfig,),
    run,
    output="output",
    writes="<stem>.journal.jsonl (every answer, what a rerun resumes from) beside --output",
    paths=lambda c: Paths(
        reads=[c.input, c.image_root, c.model if c.backend == "hf" else None], writes=[c.output, c.paths()["journal"]]
    ),  # fmt: skip
    check=_check,
    hold=lambda c: open_journal(c.paths()["journal"]),
    verdict=all_rows_failed,
)
main = STAGE.main


if __name__ == "__main__":
    from distill.cli import main as cli_main

    sys.exit(cli_main(["reason", *sys.argv[1:]]))
