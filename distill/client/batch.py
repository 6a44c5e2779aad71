"""Batch mode for `generate`: OpenAI Batch API files (or `vllm run-batch`), answered into the online mode's journal.

    distill generate --config recipes/qwen2vl-2b/generate.yaml --batch true \
        --base_urls https://api.openai.com/v1 --model gpt-4o --api_key_env OPENAI_API_KEY   # submit, poll, download
    distill generate ... --batch true --batch_submit false      # only write <stem>.batch/round-0/input-<model>-*.jsonl
    vllm run-batch -i input-M-000.jsonl -o output-M-000.jsonl --model /models/Qwen2.5-VL-72B --served-model-name M
    distill generate ... --batch true --batch_results 'runs/x/traces.batch/round-0/output-*.jsonl'   # ingest them

Each request becomes one line `{"custom_id": <journal content key>, "method": "POST", "url": "/v1/chat/completions",
"body": <the online mode's exact request body>}`; files hold one model each (`--image_model` rows apart: the API and
vLLM serve one model per file) and are split under the API's limits (50,000 requests, 200 MB): `distill.client.batch_files`.
Upload, create, poll and download go through the official `openai` SDK. Every answer line (OpenAI's and vLLM's
output files share one shape: `{"custom_id", "response": {"status_code", "body"}, "error"}`) is parsed with the
online client's `parse_response` and put into the same journal, so the trace rows, resume and failure accounting are
the online mode's. Requests that fail retryably (expired batch, 408/409/429/5xx, missing from the output) are
resubmitted in a new batch, up to `rounds` batches in all; what is still missing is reported failed and a rerun of
the same command sends only that. A killed run resumes: `<stem>.batch/state.json` maps each input file's sha256 to
its batch id, so the rerun polls the batch it already paid for instead of submitting it again; a saved batch the
server no longer knows (or whose output file expired) stops the run with one line naming the state file to remove.
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

from distill.client.batch_files import ENDPOINT, Body, ingest, keys_of, write_files
from distill.client.http import ClientConfig, failed_result
from distill.client.journal import Journal
from distill.io import write_json_atomic
from distill.stage import StageError
from distill.urls import redact_url

log = logging.getLogger(__name__)

# OpenAI's Batch API limits (platform.openai.com/docs/guides/batch): 50,000 requests and 200 MB per input file.
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000
FINAL_STATES = ("completed", "failed", "expired", "cancelled")
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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Submitter:
    """Upload, create, poll and download through the `openai` SDK, remembering batch ids in `state.json`."""

    def __init__(self, client_config: ClientConfig, settings: BatchSettings, sleep=None):
        import openai

        self.settings, self.sleep = settings, sleep or time.sleep
        self.sdk = openai.OpenAI(base_url=client_config.base_urls[0], api_key=client_config.api_key() or "none",
                                 max_retries=client_config.max_retries, timeout=client_config.timeout_s)  # fmt: skip
        self.base_url = client_config.base_urls[0]
        self.state_path = settings.directory / "state.json"
        self.state = self._load_state()

    def _load_state(self) -> dict:
        if not self.state_path.exists():
            return {}
        try:
            state = orjson.loads(self.state_path.read_bytes())
        except orjson.JSONDecodeError as e:
            raise StageError(f"{self.state_path}: not valid JSON ({e}); {self._start_over()}") from None
        if not isinstance(state, dict) or not all(isinstance(v, dict) and "batch_id" in v for v in state.values()):
            raise StageError(f"{self.state_path}: not a batch state file ({{sha256: {{batch_id, ...}}}}); "
                             f"{self._start_over()}")  # fmt: skip
        return state

    def _start_over(self) -> str:
        return (f"to start the batches over, remove {self.state_path} and rerun (answers already journaled are kept "
                "and not sent again)")  # fmt: skip

    def _lost(self, batch_id: str, what: str, e: Exception) -> StageError:
        """The saved batch can never be resumed (the server forgot it, or its files expired): say how to start over,
        instead of failing the same way on every rerun."""
        name = next((v.get("file") for v in self.state.values() if v["batch_id"] == batch_id), "?")
        status = getattr(e, "status_code", None) or type(e).__name__
        return StageError(f"batch {batch_id} (input file {name}, saved in {self.state_path}): {what} is unknown to "
                          f"{redact_url(self.base_url)} (HTTP {status}); {self._start_over()}")  # fmt: skip

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
        import openai

        while True:
            try:
                batch = self.sdk.batches.retrieve(batch_id)
            except openai.NotFoundError as e:
                raise self._lost(batch_id, "the batch", e) from None
            if batch.status in FINAL_STATES:
                return batch
            self.sleep(self.settings.poll_s)

    def download(self, batch_id: str, file_id: str | None, what: str) -> list[bytes]:
        import openai

        try:
            return self.sdk.files.content(file_id).content.splitlines() if file_id else []
        except openai.NotFoundError as e:  # output files expire (30 days at OpenAI) or were deleted
            raise self._lost(batch_id, f"its {what} file {file_id}", e) from None

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
                folder = settings.directory / "round-0"
                models = orjson.loads((folder / "models.json").read_bytes()) if paths else {}
                print(f"batch: wrote {len(paths)} file(s) with {len(pending) - len(bad)} requests to {folder}, one model "
                      "per file; run each with `vllm run-batch -i FILE -o OUTPUT --model CHECKPOINT "
                      "--served-model-name MODEL` and ingest the outputs with --batch_results")  # fmt: skip
                for name in sorted(set(models.values())):
                    print(f"  --served-model-name {name}: {', '.join(f for f, m in models.items() if m == name)}")
                stats["written_only"] = True
                return {}, stats
            for path in paths:
                batch_id = submitter.start(path)
                batch = submitter.wait(batch_id)
                lines = (submitter.download(batch_id, batch.output_file_id, "output")
                         + submitter.download(batch_id, batch.error_file_id, "error"))  # fmt: skip
                ingest(lines, journal, set(pending), results, f"batch {batch_id}")
                submitter.finish(batch_id)
                counts = batch.request_counts
                stats["batches"].append({"id": batch_id, "round": round_, "file": path.name, "status": batch.status,
                                         "completed": counts.completed if counts else None,
                                         "failed": counts.failed if counts else None})  # fmt: skip
                log.info("batch %s (%s): %s", batch_id, path.name, batch.status)
                if batch.status == "failed" and batch.errors and batch.errors.data:
                    why = "; ".join(f"{e.code}: {e.message}" for e in batch.errors.data[:3])
                    for key in keys_of(path):
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
