"""Batch files on disk: the input files batch mode writes (one model per file, under the API's limits) and the output
lines it reads back (OpenAI's Batch API and `vllm run-batch` write the same shape), whatever shape they arrive in.

Input: `input-<model>-NNN.jsonl`, each line `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`.
The Batch API and `vllm run-batch` serve one model per file (vLLM answers a line for another model with a 404), so
requests for `--image_model` and `--model` go to separate files; the model is in the file name and in `models.json`.
Output: `{"custom_id", "response": {"status_code", "body"}, "error"}`. A line of any other shape (a string response,
a status code in quotes, an error that is a bare string, a body of null) is parsed into a failed result with its
reason (and the provider's message kept), never a traceback; a line without a custom_id is logged and skipped.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import orjson

from distill.client.http import RETRY_STATUSES, failed_result, parse_response
from distill.client.journal import Journal
from distill.io import BOM, write_json_atomic

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
Body = dict | Callable[[], dict]


class BadOutputLine(ValueError):
    """An output line that is not in the batch output shape; `key` is its custom_id when it has one."""

    def __init__(self, key: str | None, reason: str):
        super().__init__(reason)
        self.key = key


def request_line(key: str, body: dict) -> bytes:
    """One Batch API input line; `body` is exactly what the online mode POSTs."""
    return orjson.dumps({"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}) + b"\n"


def model_slug(model: str) -> str:
    """`model` as a file name part (`Qwen/Qwen2-VL-72B` -> `Qwen_Qwen2-VL-72B`)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_.") or "model"


def write_files(items: Iterable[tuple[str, Body]], directory: Path, max_requests: int,
                max_bytes: int) -> tuple[list[Path], dict[str, dict]]:  # fmt: skip
    """Write `input-<model>-NNN.jsonl` files, one model per file, under both limits, and `models.json` ({file name:
    model}); returns (paths, failures of requests that cannot be sent)."""
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("input-*.jsonl"):
        old.unlink()
    paths: list[Path] = []
    failures: dict[str, dict] = {}
    open_files: dict[str, list] = {}  # model -> [file, requests, bytes, files written for it]
    models: dict[str, str] = {}
    for key, body in items:
        try:
            body = body() if callable(body) else body
            line = request_line(key, body)
        except Exception as e:  # an unreadable image: the row fails as in the online mode, nothing is sent
            failures[key] = failed_result(f"bad input: {e}", 0)
            continue
        if len(line) > max_bytes:
            failures[key] = failed_result(f"bad input: request is {len(line)} bytes, over the batch file limit", 0)
            continue
        model = str(body.get("model"))
        state = open_files.get(model)
        if state is None or state[1] >= max_requests or state[2] + len(line) > max_bytes:
            if state is not None:
                state[0].close()
            count = state[3] if state else 0
            paths.append(directory / f"input-{model_slug(model)}-{count:03d}.jsonl")
            models[paths[-1].name] = model
            state = open_files[model] = [open(paths[-1], "wb"), 0, 0, count + 1]
        state[0].write(line)
        state[1], state[2] = state[1] + 1, state[2] + len(line)
    for state in open_files.values():
        state[0].close()
    if paths:
        write_json_atomic(directory / "models.json", models)
    return sorted(paths), failures


def _message(value) -> str | None:
    """The human message inside an error value of any shape providers write: a string, `{"message"}`, `{"error":
    {"message"}}` (vLLM's ErrorResponse), or None."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, dict):
        return _message(value.get("message")) or _message(value.get("error"))
    return None


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def parse_line(obj) -> tuple[str, dict]:
    """(custom_id, result in the online client's shape) for one output/error-file line of OpenAI or vLLM;
    BadOutputLine (with the custom_id when there is one) for a line of another shape."""
    if not isinstance(obj, dict):
        raise BadOutputLine(None, f"expected a JSON object, got {_kind(obj)}")
    key = obj.get("custom_id")
    if not isinstance(key, str) or not key:
        raise BadOutputLine(None, f"custom_id is {_kind(key)}, expected a string")
    resp, err = obj.get("response"), obj.get("error")
    if resp is not None and not isinstance(resp, dict):
        raise BadOutputLine(key, f"response is {_kind(resp)} {str(resp)[:40]!r}, expected an object or null")
    code = (resp or {}).get("status_code")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise BadOutputLine(key, f"response.status_code is {code!r}, expected an integer")
    body = (resp or {}).get("body")
    if code == 200 and not err:
        result, reason = parse_response(orjson.dumps(body))
        if result is not None:
            return key, {**result, "error": None, "attempts": 1}
        return key, {**failed_result(f"{reason} (batch)", 1), "retryable": True}
    if code is not None:  # vLLM puts the message in `error` and leaves `body` null; OpenAI puts it in `body`
        detail = _message(body) or _message(err) or (orjson.dumps(body).decode()[:200] if body else "no message")
        retry = code in RETRY_STATUSES or code >= 500
        return key, {**failed_result(f"HTTP {code} (batch): {detail}", 1), "retryable": retry}
    if err is None:
        raise BadOutputLine(key, "neither a response nor an error")
    name = err.get("code") if isinstance(err, dict) and isinstance(err.get("code"), str) else "error"
    retry = name in ("batch_expired", "batch_cancelled", "rate_limit_exceeded", "server_error")
    return key, {**failed_result(f"{name} (batch): {_message(err) or ''}".rstrip(": "), 1), "retryable": retry}


def ingest(lines: Iterable[bytes], journal: Journal, wanted: set[str], results: dict[str, dict], source: str) -> None:
    """Journal each answer for a wanted key; put failures into `results` (a later answer for a key wins). A line of
    the wrong shape is logged with its file and line; its request fails with that reason (retryable: the answer was
    lost, not refused)."""
    for i, raw in enumerate(lines, 1):
        if i == 1 and raw.startswith(BOM):
            raw = raw[len(BOM) :]
        if not raw.strip():
            continue
        try:
            key, result = parse_line(orjson.loads(raw))
        except orjson.JSONDecodeError:
            log.warning("%s:%d: not a JSON line, skipped", source, i)
            continue
        except BadOutputLine as e:
            log.warning("%s:%d: not a batch output line: %s%s", source, i, e, "" if e.key else ", skipped")
            if e.key is None:
                continue
            key, result = e.key, {**failed_result(f"bad batch output line ({source}:{i}): {e}", 1), "retryable": True}
        if key not in wanted or key in journal:
            continue
        if result["status"] == "failed":
            results.setdefault(key, result)
        else:  # the answer itself lives in the journal; only what the run's stats need stays in memory
            results[key] = {"status": result["status"], "usage": result["usage"]}
            journal.put(key, {k: result[k] for k in ("status", "model", "content", "reasoning_content",
                                                     "finish_reason", "usage")})  # fmt: skip


def keys_of(path: Path) -> Iterable[str]:
    """The custom_ids of one of our input files."""
    with open(path, "rb") as f:
        for line in f:
            yield orjson.loads(line)["custom_id"]
