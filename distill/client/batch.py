"""Batch mode for `generate`: OpenAI Batch API files (or `vllm run-batch`), answered into the online mode's journal.

    distill generate --config recipes/qwen2vl-2b/generate.yaml --batch true \
        --base_url https://api.openai.com/v1 --model gpt-4o --api_key_env OPENAI_API_KEY   # submit, poll, download
    distill generate ... --batch true --batch_submit false      # only write <stem>.batch/round-0/input-*.jsonl
    python -m vllm.entrypoints.openai.run_batch -i input-000.jsonl -o output-000.jsonl --model /models/Qwen2.5-VL-72B
    distill generate ... --batch true --batch_results 'runs/x/traces.batch/round-0/output-*.jsonl'   # ingest them

Each request becomes one line `{"custom_id": <journal content key>, "method": "POST", "url": "/v1/chat/completions",
"body": <the online mode's exact request body>}`; files are split under the API's limits (50,000 requests, 200 MB).
Upload, create, poll and download go through the official `openai` SDK. Every answer line (OpenAI's and vLLM's
output files share one shape: `{"custom_id", "response": {"status_code", "body"}, "error"}`) is parsed with the
online client's `parse_response` and put into the same journal, so the trace rows, resume and failure accounting are
the online mode's. Requests that fail retryably (expired batch, 408/409/429/5xx, missing from the output) are
resubmitted in a new batch, up to `rounds` batches in all; what is still missing is reported failed and a rerun of
the same command sends only that. A killed run resumes: `<stem>.batch/state.json` maps each input file's sha256 to
its batch id, so the rerun polls the batch it already paid for instead of submitting it again.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson

from distill.client.http import RETRY_STATUSES, ClientConfig, failed_result, parse_response
from distill.client.journal import Journal
from distill.io import write_json_atomic

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
# OpenAI's Batch API limits (platform.openai.com/docs/guides/batch): 50,000 requests and 200 MB per input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000
FINAL_STATES = ("completed", "failed", "expired", "cancelled")
Body = dict | Callable[[], dict]
Items = list[tuple[str, Body]] | Callable[[], Iterable[tuple[str, Body]]]


@dataclass
class BatchSettings:
    """What batch mode needs beyond the client config (filled from GenerateConfig's batch_* fields)."""

    directory: Path  # <output stem>.batch/: input files, downloaded outputs, state.json
    submit: bool = True  # False: write the input files and stop (run them with `vllm run-batch`)
    results: tuple[str, ...] = ()  # output files (globs) to ingest instead of submitting
    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    poll_s: float = 30.0
    rounds: int = 2  # batches per run: the first plus resubmissions of retryable failures
    completion_window: str = "24h"


def request_line(key: str, body: dict) -> bytes:
    """One Batch API input line; `body` is exactly what the online mode POSTs."""
    return orjson.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"


def write_files(items: Iterable[tuple[str, dict | Callable[[], dict]]], directory: Path, max_requests: int,
                max_bytes: int) -> tuple[list[Path], dict[str, dict]]:  # fmt: skip
    """Write `input-NNN.jsonl` files under both limits; returns (paths, failures of requests that cannot be sent)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("input-*.jsonl"):
        old.unlink()
    paths: list[Path] = []
    failures: dict[str, dict] = {}
    f, n, size = None, 0, 0
    for key, body in items:
        try:
            line = request_line(key, body() if callable(body) else body)
        except Exception as e:  # an unreadable image: the row fails as in the online mode, nothing is sent
            failures[key] = failed_result(f"bad input: {e}", 0)
            continue
        if len(line) > max_bytes:
            failures[key] = failed_result(f"bad input: request is {len(line)} bytes, over the batch file limit", 0)
            continue
        if f is None or n >= max_requests or size + len(line) > max_bytes:
            if f is not None:
                f.close()
            paths.append(directory / f"input-{len(paths):03d}.jsonl")
            f, n, size = open(paths[-1], "wb"), 0, 0
        f.write(line)
        n, size = n + 1, size + len(line)
    if f is not None:
        f.close()
    return paths, failures


def parse_line(obj: dict) -> tuple[str | None, dict]:
    """(custom_id, result in the online client's shape) for one output/error-file line of OpenAI or vLLM."""
    key = obj.get("custom_id") if isinstance(obj, dict) else None
    resp = (obj.get("response") or {}) if isinstance(obj, dict) else {}
    err = (obj.get("error") or {}) if isinstance(obj, dict) else {}
    code = resp.get("status_code")
    if code == 200:
        result, reason = parse_response(orjson.dumps(resp.get("body")))
        if result is not None:
            return key, {**result, "error": None, "attempts": 1}
        return key, {**failed_result(f"{reason} (batch)", 1), "retryable": True}
    if code is not None:
        body = resp.get("body") or {}
        detail = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        retry = code in RETRY_STATUSES or code >= 500
        return key, {**failed_result(f"HTTP {code} (batch): {detail or body}", 1), "retryable": retry}
    code = err.get("code") or "error"
    retry = code in ("batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error")
    return key, {**failed_result(f"{code} (batch): {err.get('message') or ''}".rstrip(": "), 1), "retryable": retry}


def ingest(lines: Iterable[bytes], journal: Journal, wanted: set[str], results: dict[str, dict], source: str) -> None:
    """Journal each answer for a wanted key; put failures into `results` (a later answer for a key wins)."""
    for i, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            key, result = parse_line(orjson.loads(raw))
        except orjson.JSONDecodeError:
            log.warning("%s:%d: not a JSON line, skipped", source, i)
            continue
        if key not in wanted or key in journal:
            continue
        if result["status"] == "failed":
            results.setdefault(key, result)
        else:  # the answer itself lives in the journal; only what the run's stats need stays in memory
            results[key] = {"status": result["status"], "usage": result["usage"]}
            journal.put(key, {k: result[k] for k in ("status", "model", "content", "reasoning_content",
                                                     "finish_reason", "usage")})  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Submitter:
    """Upload, create, poll and download through the `openai` SDK, remembering batch ids in `state.json`."""

    def __init__(self, client_config: ClientConfig, settings: BatchSettings, sleep=None):
        import openai

        self.settings, self.sleep = settings, sleep or time.sleep
        self.sdk = openai.OpenAI(base_url=client_config.base_urls[0], api_key=client_config.api_key() or "none",
                                 max_retries=client_config.max_retries, timeout=client_config.timeout_s)  # fmt: skip
        self.state_path = settings.directory / "state.json"
        self.state = orjson.loads(self.state_path.read_bytes()) if self.state_path.exists() else {}

    def _save(self) -> None:
        write_json_atomic(self.state_path, self.state)

    def start(self, path: Path) -> str:
        """Batch id for this input file: the one already created for the same bytes, else a new one."""
        sha = _sha256(path)
        if sha in self.state and self.state[sha].get("status") not in ("downloaded",):
            log.info("%s: resuming batch %s", path.name, self.state[sha]["batch_id"])
            return self.state[sha]["batch_id"]
        with open(path, "rb") as f:
            file = self.sdk.files.create(file=(path.name, f), purpose="batch")
        batch = self.sdk.batches.create(input_file_id=file.id, endpoint=ENDPOINT,
                                        completion_window=self.settings.completion_window)  # fmt: skip
        self.state[sha] = {"file": path.name, "input_file_id": file.id, "batch_id": batch.id, "status": batch.status}
        self._save()
        return batch.id

    def wait(self, batch_id: str):
        while True:
            batch = self.sdk.batches.retrieve(batch_id)
            if batch.status in FINAL_STATES:
                return batch
            self.sleep(self.settings.poll_s)

    def download(self, file_id: str | None) -> list[bytes]:
        return self.sdk.files.content(file_id).content.splitlines() if file_id else []

    def finish(self, batch_id: str) -> None:
        for entry in self.state.values():
            if entry["batch_id"] == batch_id:
                entry["status"] = "downloaded"
        self._save()


def run_batch(client_config: ClientConfig, settings: BatchSettings, journal: Journal,
              items: Items, sleep=None) -> tuple[dict, dict]:  # fmt: skip
    """The batch counterpart of `drive`: same arguments and the same (failures {key: result}, stats) return.

    `items` may be a zero-argument callable returning a fresh iterator of (key, body) pairs: it is then read once for
    the keys and once per batch round for the bodies, and only the keys are held (a million requests stay ~100 MB
    instead of every rendered prompt)."""
    source = items if callable(items) else (lambda: iter(items))
    todo: set[str] = set()
    journaled = total = 0
    for key, _ in source():
        total += 1
        if key in journal:
            journaled += 1
        else:
            todo.add(key)
    stats = {"to_send": len(todo), "journaled_before": journaled, "same_content": total - len(todo) - journaled,
             "ok": 0, "truncated": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "retries": 0,
             "concurrency_decreases": 0, "batches": []}  # fmt: skip
    results: dict[str, dict] = {}
    start = time.monotonic()
    if settings.results:  # answers from `vllm run-batch` (or downloaded by hand): nothing is submitted
        files = sorted({p for pattern in settings.results for p in glob.glob(pattern)})
        if not files:
            raise FileNotFoundError(f"--batch_results {list(settings.results)}: no such files")
        for p in files:
            with open(p, "rb") as f:
                ingest(f, journal, set(todo), results, p)
        for key in todo:
            results.setdefault(key, failed_result(f"no answer in the batch results ({len(files)} file(s))", 0))
    elif todo:
        submitter = Submitter(client_config, settings, sleep) if settings.submit else None
        pending = set(todo)
        for round_ in range(settings.rounds):
            paths, bad = write_files(_bodies(source, pending), settings.directory / f"round-{round_}",
                                     settings.max_requests, settings.max_bytes)  # fmt: skip
            results.update(bad)
            if submitter is None:
                print(f"batch: wrote {len(paths)} file(s) with {len(pending) - len(bad)} requests to "
                      f"{settings.directory / 'round-0'}; run them (vllm run-batch) and ingest with --batch_results")  # fmt: skip
                stats["written_only"] = True
                return {}, stats
            for path in paths:
                batch_id = submitter.start(path)
                batch = submitter.wait(batch_id)
                lines = submitter.download(batch.output_file_id) + submitter.download(batch.error_file_id)
                ingest(lines, journal, set(pending), results, f"batch {batch_id}")
                submitter.finish(batch_id)
                counts = batch.request_counts
                stats["batches"].append({"id": batch_id, "round": round_, "file": path.name, "status": batch.status,
                                         "completed": counts.completed if counts else None,
                                         "failed": counts.failed if counts else None})  # fmt: skip
                log.info("batch %s (%s): %s", batch_id, path.name, batch.status)
                if batch.status == "failed" and batch.errors and batch.errors.data:
                    why = "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data[:3])
                    for key, _ in _keys_of(path):
                        results.setdefault(
                            key, {**failed_result(f"batch failed (validation): {why}", 1), "retryable": False}
                        )
            for key in pending:  # a request the batch never answered (expired or cancelled before it ran)
                if key not in journal:
                    results.setdefault(key, {**failed_result("no answer in the batch output", 1), "retryable": True})
            pending = {k for k in pending if k not in journal and results.get(k, {}).get("retryable")}
            if not pending or round_ + 1 == settings.rounds:
                break
            stats["retries"] += len(pending)
            for key in pending:
                results.pop(key, None)
    failures = {}
    for key in todo:
        result = results.get(key) or failed_result("no answer", 0)
        stats[result["status"]] += 1
        stats["prompt_tokens"] += result["usage"]["prompt_tokens"]
        stats["completion_tokens"] += result["usage"]["completion_tokens"]
        if result["status"] == "failed":
            failures[key] = result
    stats["elapsed_s"] = round(time.monotonic() - start, 3)
    return failures, stats


def _bodies(source: Callable[[], Iterable], keys: set[str]) -> Iterable[tuple[str, dict | Callable[[], dict]]]:
    """(key, body) for each key of `keys` once, in the source's order."""
    seen: set[str] = set()
    for key, body in source():
        if key in keys and key not in seen:
            seen.add(key)
            yield key, body


def _keys_of(path: Path) -> Iterable[tuple[str, None]]:
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)["custom_id"], None
